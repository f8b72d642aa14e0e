#![cfg(feature = "http")]
//! The HTTP layer's encodings: the `Idempotency-Key` header parser, the scope, the store key
//! and the request fingerprint. Property tests feed them arbitrary bytes (never a panic,
//! never two inputs sharing an encoding); golden tests pin the persisted forms.
//!
//! The golden digests were computed independently with Python's `hashlib` from the encoding
//! tables in `idempotent_core::key` and `idempotent_core::http::scope`. If one fails, records
//! written before the change are no longer found: a change needs a new domain tag instead.

use http::{HeaderMap, HeaderValue, Method};
use idempotent_core::http::fingerprint::fingerprint;
use idempotent_core::http::key_header::{self, KeyHeaderError, MAX_KEY_LEN};
use idempotent_core::http::scope::{scope, store_key};
use idempotent_core::http::{AuthorizationHeader, ExtractPrincipal, Principal};
use proptest::prelude::*;

fn valid_key() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[!-~]{1,255}").unwrap()
}

fn method() -> impl Strategy<Value = Method> {
    proptest::string::string_regex("[A-Z]{1,10}")
        .unwrap()
        .prop_map(|name| Method::from_bytes(name.as_bytes()).unwrap())
}

fn quote(key: &str) -> String {
    let mut quoted = String::from("\"");
    for c in key.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

proptest! {
    // No regression files: a failure prints its minimal input, which becomes a unit test.
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_and_accepts_only_valid_keys(value in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(key) = key_header::parse(&value) {
            prop_assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
            prop_assert!(key.bytes().all(|byte| byte.is_ascii_graphic()));
        }
    }

    #[test]
    fn parser_never_panics_on_near_miss_strings(value in "[ \t]?\"?[ -~\\\\\"]{0,300}\"?[ \t]?") {
        if let Ok(key) = key_header::parse(value.as_bytes()) {
            prop_assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
        }
    }

    #[test]
    fn quoted_and_bare_forms_name_the_same_key(key in valid_key()) {
        prop_assert_eq!(key_header::parse(quote(&key).as_bytes()), Ok(key.clone()));
        if !key.contains(['"', ',']) {
            prop_assert_eq!(key_header::parse(key.as_bytes()), Ok(key.clone()));
            prop_assert_eq!(key_header::parse(format!(" \t{key} ").as_bytes()), Ok(key));
        }
    }

    #[test]
    fn keys_with_invisible_characters_are_refused(prefix in "[!-~]{1,20}", bad in prop_oneof![Just(' '), Just('\t'), Just('\u{7f}'), Just('\0'), Just('é')], suffix in "[!-~]{1,20}") {
        let key = format!("{prefix}{bad}{suffix}");
        prop_assert!(key_header::parse(key.as_bytes()).is_err());
        prop_assert!(key_header::parse(quote(&key).as_bytes()).is_err());
    }

    #[test]
    fn scope_never_panics_and_is_fixed_ascii(layer_scope in ".{0,40}", identity in proptest::collection::vec(any::<u8>(), 0..64), method in method(), path in ".{0,200}") {
        let scope = scope(&layer_scope, &Principal::from_identity(&identity), &method, &path);
        prop_assert!(scope.starts_with("http:"));
        prop_assert_eq!(scope.len(), 69);
        prop_assert!(scope[5..].bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
    }

    #[test]
    fn scope_parts_never_run_into_each_other(text in ".{0,60}", split_a in 0usize..61, split_b in 0usize..61) {
        let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let a = boundaries[split_a % boundaries.len()];
        let b = boundaries[split_b % boundaries.len()];
        prop_assume!(a != b);
        let principal = Principal::ANONYMOUS;
        // The same characters split differently between the layer's scope name and the path.
        let first = scope(&text[..a], &principal, &Method::POST, &text[a..]);
        let second = scope(&text[..b], &principal, &Method::POST, &text[b..]);
        prop_assert_ne!(first, second);
    }

    #[test]
    fn different_principals_never_share_a_scope(a in proptest::collection::vec(any::<u8>(), 0..40), b in proptest::collection::vec(any::<u8>(), 0..40)) {
        prop_assume!(a != b);
        let scope_a = scope("", &Principal::from_identity(&a), &Method::POST, "/orders");
        let scope_b = scope("", &Principal::from_identity(&b), &Method::POST, "/orders");
        prop_assert_ne!(&scope_a, &scope_b);
        let anonymous = scope("", &Principal::ANONYMOUS, &Method::POST, "/orders");
        prop_assert_ne!(scope_a, anonymous);
    }

    #[test]
    fn store_key_is_a_fixed_digest(key in valid_key()) {
        let stored = store_key(&key);
        prop_assert_eq!(stored.as_str().len(), 64);
        prop_assert!(!stored.as_str().contains(key.as_str()) || key.len() < 4);
    }

    #[test]
    fn fingerprint_never_panics_and_separates_its_parts(path in ".{0,50}", query in proptest::option::of(".{0,50}"), body in proptest::collection::vec(any::<u8>(), 0..2_000), moved in 1usize..8) {
        let base = fingerprint(&Method::POST, &path, query.as_deref(), &body);
        prop_assert_eq!(base, fingerprint(&Method::POST, &path, query.as_deref(), &body));
        prop_assert_ne!(base, fingerprint(&Method::PATCH, &path, query.as_deref(), &body));
        // Bytes moved from the body into the query (or the query's end) change it.
        if body.len() >= moved && body[..moved].is_ascii() {
            let head = std::str::from_utf8(&body[..moved]).unwrap();
            let longer_query = format!("{}{head}", query.as_deref().unwrap_or(""));
            prop_assert_ne!(base, fingerprint(&Method::POST, &path, Some(&longer_query), &body[moved..]));
        }
        let mut other_body = body.clone();
        other_body.push(0);
        prop_assert_ne!(base, fingerprint(&Method::POST, &path, query.as_deref(), &other_body));
    }
}

#[test]
fn repeated_header_is_refused() {
    let mut headers = HeaderMap::new();
    headers.append("idempotency-key", HeaderValue::from_static("a"));
    assert_eq!(key_header::from_headers(&headers), Ok(Some("a".to_owned())));
    headers.append("idempotency-key", HeaderValue::from_static("a"));
    assert_eq!(
        key_header::from_headers(&headers),
        Err(KeyHeaderError::Repeated)
    );
}

#[test]
fn scope_of_an_anonymous_request_is_pinned() {
    assert_eq!(
        scope("", &Principal::ANONYMOUS, &Method::POST, "/orders"),
        "http:d24d96c1cb11b254ca357cc3eb10412b6438ab5f0c411485ffb2e0da0e12052f"
    );
}

#[test]
fn scope_of_an_authorized_request_is_pinned() {
    let request = http::Request::patch("/orders/7")
        .header("authorization", "Bearer alice")
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    let principal = AuthorizationHeader.principal(&parts);
    assert_eq!(principal, Principal::from_identity("Bearer alice"));
    assert_eq!(
        hex(principal.as_bytes()),
        "3e00794f1eb16e33ddf3fb790474a86d03b693a66e88f94d955ca54d5cc2163c"
    );
    assert_eq!(
        scope("shop", &principal, &Method::PATCH, "/orders/7"),
        "http:2362acc8cc57047a3974174135b235dcd35a51a011f8cf1896de8739441737b7"
    );
    // The digest is all a log or a store ever sees of it.
    assert_eq!(format!("{principal:?}"), "Principal(..)");
}

#[test]
fn store_key_is_pinned() {
    assert_eq!(
        store_key("8e03978e-40d5-43e8-bc93-6894a57f9324").as_str(),
        "e36d5de94783709af15d909452ab32b2ccbe5b68f73878d55aa186bfaf033b5f"
    );
}

#[test]
fn fingerprints_are_pinned() {
    let body = br#"{"item":"book","quantity":1}"#;
    assert_eq!(
        fingerprint(&Method::POST, "/orders", None, body).to_hex(),
        "b5777ccf2dc97ebbef9d87a8308ecd9a858b83db113a321bc7e1eb1e6a3e173c"
    );
    assert_eq!(
        fingerprint(&Method::POST, "/orders", Some(""), b"").to_hex(),
        "5bb6b5f4e6ee5f111e434cb9d8d40fe2d3b2b5154f1a78d883352d05281b8b28"
    );
    assert_eq!(
        fingerprint(
            &Method::PATCH,
            "/orders/7",
            Some("dry_run=1"),
            &[0, 255, 10]
        )
        .to_hex(),
        "543632229a74c35c811043d20e803efd41637a477622684323ebccbaa01b6a2d"
    );
}

#[test]
fn an_empty_query_differs_from_none() {
    let uri: http::Uri = "/orders?".parse().unwrap();
    let with_mark = fingerprint(&Method::POST, uri.path(), uri.query(), b"");
    let without = fingerprint(&Method::POST, "/orders", None, b"");
    assert_eq!(uri.query(), Some(""));
    assert_ne!(with_mark, without);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
