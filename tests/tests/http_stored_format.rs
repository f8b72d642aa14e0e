#![cfg(feature = "http")]
//! Golden tests for the stored response format (`idempotent_core::http::stored`): the exact
//! bytes of a record, and what a reader refuses. If one of these fails, responses stored before
//! the change would no longer replay: add a format version instead of editing this one.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use idempotent_core::http::fingerprint::fingerprint;
use idempotent_core::http::scope::{scope, store_key};
use idempotent_core::http::{IdempotencyLayer, Principal, StoredFormatError, StoredResponse};
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::{IdempotencyStore, MemoryStore};
use tower::ServiceExt;

/// A 201 with two headers and a JSON body, byte by byte.
const CREATED: &[u8] = b"\x01\x00\x00\xc9\x00\x02\
\x00\x0ccontent-type\x00\x00\x00\x10application/json\
\x00\x08location\x00\x00\x00\x09/orders/1\
\x00\x00\x00\x00\x00\x00\x00\x08{\"id\":1}";

/// The record of a 200 whose body was too large: flag set, no headers, no body.
const NOT_REPLAYABLE: &[u8] = b"\x01\x01\x00\xc8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

fn created() -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::LOCATION, HeaderValue::from_static("/orders/1"));
    StoredResponse::new(
        StatusCode::CREATED,
        headers,
        Bytes::from_static(br#"{"id":1}"#),
    )
}

#[test]
fn a_stored_response_is_pinned() {
    assert_eq!(created().encode(), CREATED);
    assert_eq!(StoredResponse::decode(CREATED).unwrap(), created());
}

#[test]
fn a_not_replayable_record_is_pinned() {
    let record = StoredResponse::not_replayable(StatusCode::OK, HeaderMap::new());
    assert_eq!(record.encode(), NOT_REPLAYABLE);
    let read = StoredResponse::decode(NOT_REPLAYABLE).unwrap();
    assert!(!read.is_replayable());
    assert_eq!(read.status(), StatusCode::OK);
}

#[test]
fn repeated_headers_and_binary_bodies_round_trip() {
    let mut headers = HeaderMap::new();
    headers.append(header::LINK, HeaderValue::from_static("</a>; rel=next"));
    headers.append(header::LINK, HeaderValue::from_static("</b>; rel=prev"));
    headers.append(header::ETAG, HeaderValue::from_bytes(b"\"\xff\"").unwrap());
    let body = Bytes::from((0..=255u8).collect::<Vec<_>>());
    let stored = StoredResponse::new(StatusCode::ACCEPTED, headers, body);
    assert_eq!(StoredResponse::decode(&stored.encode()).unwrap(), stored);
    let empty = StoredResponse::new(StatusCode::NO_CONTENT, HeaderMap::new(), Bytes::new());
    assert_eq!(
        empty.encode(),
        b"\x01\x00\x00\xcc\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    );
}

#[test]
fn every_truncation_of_a_record_is_refused() {
    for len in 0..CREATED.len() {
        assert!(
            StoredResponse::decode(&CREATED[..len]).is_err(),
            "a record cut to {len} bytes was read"
        );
    }
}

#[test]
fn malformed_records_are_refused() {
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = CREATED.to_vec();
        edit(&mut bytes);
        StoredResponse::decode(&bytes)
    };
    let refused = |result: Result<StoredResponse, StoredFormatError>, what: &str| {
        let error = result.expect_err(what);
        assert!(error.to_string().starts_with("unreadable stored response"));
    };
    refused(with(&|b| b[0] = 0x02), "an unknown version");
    refused(with(&|b| b[1] = 0x02), "an unknown flag");
    refused(
        with(&|b| b[1] = 0x01),
        "a not-replayable record with a body",
    );
    refused(
        with(&|b| b[2..4].copy_from_slice(&1000u16.to_be_bytes())),
        "status 1000",
    );
    refused(
        with(&|b| b[2..4].copy_from_slice(&99u16.to_be_bytes())),
        "status 99",
    );
    refused(with(&|b| b[8] = b' '), "a header name with a space");
    refused(with(&|b| b[24] = b'\n'), "a header value with a newline");
    refused(with(&|b| b.push(0)), "a byte after the body");
    refused(
        with(&|b| b[4..6].copy_from_slice(&3u16.to_be_bytes())),
        "one header too many",
    );
}

/// The whole record as the layer writes it: the raw payload tag, then the format above, with
/// only the allow-listed headers.
#[tokio::test]
async fn the_layer_stores_exactly_this_record() {
    let store = Arc::new(MemoryStore::new());
    let app = Router::new()
        .route(
            "/orders",
            post(|| async {
                (
                    StatusCode::CREATED,
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::LOCATION, "/orders/1"),
                        (header::SET_COOKIE, "session=1"),
                        (header::HeaderName::from_static("x-request-id"), "r1"),
                    ],
                    r#"{"id":1}"#,
                )
            }),
        )
        .layer(IdempotencyLayer::from_shared(store.clone()));
    let request = Request::post("/orders?source=app")
        .header("idempotency-key", "order-1")
        .header(header::AUTHORIZATION, "Bearer alice")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let principal = Principal::from_identity("Bearer alice");
    let scope = scope("", &principal, &Method::POST, "/orders");
    let key = store_key("order-1");
    let claim = store
        .claim(&ClaimRequest {
            scope: &scope,
            key: key.as_str(),
            fingerprint: fingerprint(&Method::POST, "/orders", Some("source=app"), b"{}"),
            owner: OwnerId::new(),
            lease: Duration::from_secs(30),
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();
    let Claim::Completed(record) = claim else {
        panic!("no completed record under the documented scope and key: {claim:?}");
    };
    let mut expected = vec![0x03];
    expected.extend_from_slice(CREATED);
    assert_eq!(&record.payload[..], &expected[..]);
}
