#![cfg(feature = "http")]
//! The HTTP layer on the in-memory store, through a real server on 127.0.0.1 and a real
//! client: every status path (replay, 400, 409, 410, 413, 422, 503, pass-through), what is
//! stored and what releases the key (4xx, 5xx, panics, timeouts, broken bodies), concurrent
//! duplicates, principals, and clients that go away mid-request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use bytes::Bytes;
use idempotent_core::http::fingerprint::fingerprint;
use idempotent_core::http::scope::{scope, store_key};
use idempotent_core::http::{IdempotencyLayer, Principal};
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, OwnerId, RecordState};
use idempotent_core::{Error, IdempotencyStore, MemoryStore};
use serde_json::json;
use support::http::{App, abandon_order, assert_problem, client, order, raw_exchange, read};

fn memory() -> Arc<dyn IdempotencyStore> {
    Arc::new(MemoryStore::new())
}

fn same(
    builder: idempotent_core::http::IdempotencyLayerBuilder,
) -> idempotent_core::http::IdempotencyLayerBuilder {
    builder
}

#[tokio::test]
async fn a_retry_replays_the_first_response() {
    let app = App::start(memory(), same).await;
    let client = client();
    let body = json!({"item": "book", "quantity": 2});
    let first = read(
        order(&client, &app, "key-1", body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert!(first.1.get("idempotent-replayed").is_none());
    let created: serde_json::Value = serde_json::from_str(&first.2).unwrap();
    assert_eq!(created["item"], "book");
    assert_eq!(first.1["location"], format!("/orders/{}", created["id"]));

    let retry = read(order(&client, &app, "key-1", body).send().await.unwrap()).await;
    assert_eq!(retry.0, StatusCode::CREATED);
    assert_eq!(retry.1["idempotent-replayed"], "true");
    assert_eq!(retry.1["location"], first.1["location"]);
    assert_eq!(retry.1["content-type"], "application/json");
    assert_eq!(retry.2, first.2);
    assert_eq!(app.orders.count(), 1);
}

#[tokio::test]
async fn quoted_and_bare_keys_are_one_key() {
    let app = App::start(memory(), same).await;
    let client = client();
    let body = json!({"item": "pen", "quantity": 1});
    let bare = read(
        order(&client, &app, "abc-123", body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let quoted = read(
        order(&client, &app, "\"abc-123\"", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(quoted.1["idempotent-replayed"], "true");
    assert_eq!(bare.2, quoted.2);
    assert_eq!(app.orders.count(), 1);
}

#[tokio::test]
async fn invalid_keys_are_refused_with_400_and_run_nothing() {
    let app = App::start(memory(), same).await;
    let client = client();
    let body = json!({"item": "pen", "quantity": 1});
    let too_long = "k".repeat(256);
    for key in [
        "",
        "\"\"",
        too_long.as_str(),
        "two words",
        "\"unterminated",
        "a,b",
    ] {
        let answer = read(
            order(&client, &app, key, body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_problem(&answer, StatusCode::BAD_REQUEST, "invalid-key");
    }
    let non_ascii = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let answer = client
        .post(app.url("/orders"))
        .header("idempotency-key", non_ascii)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(&read(answer).await, StatusCode::BAD_REQUEST, "invalid-key");
    let repeated = client
        .post(app.url("/orders"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(
        &read(repeated).await,
        StatusCode::BAD_REQUEST,
        "invalid-key",
    );
    // 255 characters is the longest key accepted.
    let longest = read(
        order(&client, &app, &"k".repeat(255), body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(longest.0, StatusCode::CREATED);
    assert_eq!(app.orders.count(), 1);
}

#[tokio::test]
async fn a_missing_key_passes_through_unless_required() {
    let app = App::start(memory(), same).await;
    let client = client();
    for n in 1..=2 {
        let answer = read(
            client
                .post(app.url("/echo"))
                .body("x")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.0, StatusCode::CREATED);
        assert!(answer.2.starts_with(&format!("#{n} ")));
        assert!(answer.1.get("idempotent-replayed").is_none());
    }
    // The orders route requires a key.
    let refused = client
        .post(app.url("/orders"))
        .json(&json!({"item": "pen", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(&read(refused).await, StatusCode::BAD_REQUEST, "missing-key");
    assert_eq!(app.orders.count(), 0);

    let required = App::start(memory(), |b| b.require_key(true)).await;
    let refused = client.post(required.url("/echo")).send().await.unwrap();
    assert_problem(&read(refused).await, StatusCode::BAD_REQUEST, "missing-key");
    assert_eq!(required.calls.get(), 0);
    // Other methods are not asked for a key.
    let get = read(client.get(required.url("/echo")).send().await.unwrap()).await;
    assert_eq!(get.0, StatusCode::CREATED);
}

#[tokio::test]
async fn only_the_configured_methods_are_handled() {
    let app = App::start(memory(), same).await;
    let client = client();
    let send = |method: reqwest::Method, url: String| {
        client
            .request(method, url)
            .header("idempotency-key", "m-1")
            .body("same")
            .send()
    };
    // POST and PATCH by default.
    for method in [reqwest::Method::POST, reqwest::Method::PATCH] {
        let first = read(send(method.clone(), app.url("/echo")).await.unwrap()).await;
        let again = read(send(method, app.url("/echo")).await.unwrap()).await;
        assert_eq!(first.2, again.2);
        assert_eq!(again.1["idempotent-replayed"], "true");
    }
    // PUT, DELETE and GET pass through.
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::GET,
    ] {
        let first = read(send(method.clone(), app.url("/echo")).await.unwrap()).await;
        let again = read(send(method, app.url("/echo")).await.unwrap()).await;
        assert_ne!(first.2, again.2);
        assert!(again.1.get("idempotent-replayed").is_none());
    }
    assert_eq!(app.calls.get(), 2 + 6);

    let put = App::start(memory(), |b| {
        b.methods([axum::http::Method::PUT, axum::http::Method::DELETE])
    })
    .await;
    let first = read(send(reqwest::Method::PUT, put.url("/echo")).await.unwrap()).await;
    let again = read(send(reqwest::Method::PUT, put.url("/echo")).await.unwrap()).await;
    assert_eq!(first.2, again.2);
    let post = read(send(reqwest::Method::POST, put.url("/echo")).await.unwrap()).await;
    let post_again = read(send(reqwest::Method::POST, put.url("/echo")).await.unwrap()).await;
    assert_ne!(post.2, post_again.2);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_422() {
    let app = App::start(memory(), same).await;
    let client = client();
    let first = order(&client, &app, "k", json!({"item": "pen", "quantity": 1}));
    assert_eq!(first.send().await.unwrap().status(), 201);
    let other_body = order(&client, &app, "k", json!({"item": "pen", "quantity": 5}));
    let answer = read(other_body.send().await.unwrap()).await;
    assert_problem(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "payload-mismatch",
    );

    let echo = |query: &str, body: &'static str| {
        client
            .post(app.url(&format!("/echo{query}")))
            .header("idempotency-key", "e")
            .body(body)
            .send()
    };
    assert_eq!(echo("?a=1", "x").await.unwrap().status(), 201);
    let other_query = read(echo("?a=2", "x").await.unwrap()).await;
    assert_problem(
        &other_query,
        StatusCode::UNPROCESSABLE_ENTITY,
        "payload-mismatch",
    );
    let no_query = read(echo("", "x").await.unwrap()).await;
    assert_problem(
        &no_query,
        StatusCode::UNPROCESSABLE_ENTITY,
        "payload-mismatch",
    );
    // Another path is another scope: the key is free there.
    let other_path = client
        .post(app.url("/status/201"))
        .header("idempotency-key", "e")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(other_path.status(), 201);
    assert_eq!(app.orders.count(), 1);
}

#[tokio::test]
async fn a_duplicate_in_flight_gets_409_then_the_replay() {
    let app = App::start(memory(), same).await;
    let client = client();
    let body = json!({"item": "slow", "quantity": 1, "delay_ms": 800});
    let first = tokio::spawn(order(&client, &app, "busy", body.clone()).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let conflict = read(
        order(&client, &app, "busy", body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&conflict, StatusCode::CONFLICT, "in-flight");
    assert_eq!(conflict.1["retry-after"], "1");
    let first = read(first.await.unwrap().unwrap()).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let replay = read(order(&client, &app, "busy", body).send().await.unwrap()).await;
    assert_eq!(replay.2, first.2);
    assert_eq!(app.orders.count(), 1);
}

async fn hundred_duplicates(app: &App) -> Vec<(StatusCode, reqwest::header::HeaderMap, String)> {
    let client = client();
    let body = json!({"item": "rush", "quantity": 1, "delay_ms": 1500});
    let requests: Vec<_> = (0..100)
        .map(|_| tokio::spawn(order(&client, app, "rush", body.clone()).send()))
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(read(request.await.unwrap().unwrap()).await);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_duplicates_create_one_order_and_get_409() {
    let app = App::start(memory(), same).await;
    let answers = hundred_duplicates(&app).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::CREATED)
        .collect();
    let conflicts = answers
        .iter()
        .filter(|a| a.0 == StatusCode::CONFLICT)
        .count();
    assert_eq!((created.len(), conflicts), (1, 99));
    assert!(created[0].1.get("idempotent-replayed").is_none());
    assert_eq!(app.orders.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_duplicates_in_wait_mode_get_one_response() {
    // The orders route's own layer rejects; a waiting one is put in front of it.
    let waiting = waiting_orders(memory(), Duration::from_secs(10)).await;
    let answers = hundred_duplicates(&waiting).await;
    assert!(answers.iter().all(|a| a.0 == StatusCode::CREATED));
    let first = &answers[0].2;
    assert!(answers.iter().all(|a| &a.2 == first));
    let replayed = answers
        .iter()
        .filter(|a| a.1.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replayed, 99);
    assert_eq!(waiting.orders.count(), 1);
}

/// The orders service behind a layer that waits for in-flight duplicates; its own layer on
/// `POST /orders` then passes the request through (one layer handles a request).
async fn waiting_orders(store: Arc<dyn IdempotencyStore>, wait: Duration) -> App {
    let orders = idempotent_examples::orders::Orders::new();
    let waiting = IdempotencyLayer::builder_shared(store.clone())
        .principal(idempotent_examples::orders::principal_of)
        .wait_for_in_flight(wait)
        .build()
        .unwrap();
    let router = idempotent_examples::orders::app(orders.clone(), store)
        .unwrap()
        .layer(waiting);
    App {
        server: support::http::TestServer::start(router).await,
        orders,
        calls: Arc::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_that_waits_past_the_bound_gets_409_and_the_first_request_still_completes() {
    let waiting = waiting_orders(memory(), Duration::from_millis(300)).await;
    let client = client();
    let body = json!({"item": "long", "quantity": 1, "delay_ms": 1500});
    let first = tokio::spawn(order(&client, &waiting, "long", body.clone()).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let duplicate = read(
        order(&client, &waiting, "long", body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let waited = started.elapsed();
    assert_problem(&duplicate, StatusCode::CONFLICT, "in-flight");
    assert!(
        waited >= Duration::from_millis(250),
        "the duplicate waited ({waited:?}) before giving up"
    );
    let first = read(first.await.unwrap().unwrap()).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let replay = read(order(&client, &waiting, "long", body).send().await.unwrap()).await;
    assert_eq!(replay.2, first.2);
    assert_eq!(waiting.orders.count(), 1, "the duplicate never ran");
}

#[tokio::test]
async fn two_principals_with_one_key_get_their_own_orders() {
    let app = App::start(memory(), same).await;
    let client = client();
    let body = json!({"item": "shared", "quantity": 1});
    let as_user = |token: &str| {
        order(&client, &app, "same-key", body.clone())
            .header("authorization", format!("Bearer {token}"))
    };
    let alice = read(as_user("alice").send().await.unwrap()).await;
    let bob = read(as_user("bob").send().await.unwrap()).await;
    assert_eq!((alice.0, bob.0), (StatusCode::CREATED, StatusCode::CREATED));
    assert!(bob.1.get("idempotent-replayed").is_none());
    assert_ne!(alice.2, bob.2);
    let alice_again = read(as_user("alice").send().await.unwrap()).await;
    let bob_again = read(as_user("bob").send().await.unwrap()).await;
    assert_eq!(alice_again.2, alice.2);
    assert_eq!(bob_again.2, bob.2);
    assert_eq!(app.orders.count(), 2);
    for (token, created) in [("alice", &alice.2), ("bob", &bob.2)] {
        let listed: Vec<serde_json::Value> = client
            .get(app.url("/orders"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let created: serde_json::Value = serde_json::from_str(created).unwrap();
        assert_eq!(listed, vec![created]);
    }
}

#[tokio::test]
async fn only_2xx_is_stored_by_default() {
    let app = App::start(memory(), same).await;
    let client = client();
    let post = |path: &str| {
        client
            .post(app.url(path))
            .header("idempotency-key", "s")
            .send()
    };
    for (code, calls) in [(500u16, 2usize), (503, 4), (404, 6), (409, 8)] {
        let first = read(post(&format!("/status/{code}")).await.unwrap()).await;
        let again = read(post(&format!("/status/{code}")).await.unwrap()).await;
        assert_eq!((first.0.as_u16(), again.0.as_u16()), (code, code));
        // The handler's own response, untouched, and it ran again.
        assert_ne!(first.2, again.2);
        assert!(again.1.get("idempotent-replayed").is_none());
        assert_eq!(app.calls.get(), calls);
    }
    let ok = read(post("/status/200").await.unwrap()).await;
    let ok_again = read(post("/status/200").await.unwrap()).await;
    assert_eq!(ok.2, ok_again.2);
    assert_eq!(app.calls.get(), 9);
}

#[tokio::test]
async fn a_policy_can_store_final_4xx_but_never_5xx() {
    let app = App::start(memory(), |b| {
        b.store_policy(|parts: &axum::http::response::Parts| {
            parts.status.is_success() || parts.status.is_client_error()
        })
    })
    .await;
    let client = client();
    let post = |path: &str| {
        client
            .post(app.url(path))
            .header("idempotency-key", "p")
            .send()
    };
    let first = read(post("/status/402").await.unwrap()).await;
    let again = read(post("/status/402").await.unwrap()).await;
    assert_eq!(again.0, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(again.2, first.2);
    assert_eq!(again.1["idempotent-replayed"], "true");
    let server_error = read(post("/status/500").await.unwrap()).await;
    let server_error_again = read(post("/status/500").await.unwrap()).await;
    assert_ne!(server_error.2, server_error_again.2);
    assert_eq!(app.calls.get(), 3);
}

#[tokio::test]
async fn a_panicking_handler_releases_the_key() {
    let app = App::start(memory(), same).await;
    let client = client();
    for calls in 1..=2 {
        let answer = client
            .post(app.url("/panic"))
            .header("idempotency-key", "boom")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 500);
        // Released in the background as the panic unwound.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(app.calls.get(), calls);
    }
}

#[tokio::test]
async fn a_timed_out_handler_releases_the_key() {
    let store = memory();
    let calls = Arc::new(support::http::Calls::default());
    let router = support::http::test_routes(calls.clone())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(100),
        ))
        .layer(IdempotencyLayer::from_shared(store));
    let server = support::http::TestServer::start(router).await;
    let client = client();
    for n in 1..=2 {
        let answer = client
            .post(server.url("/slow/2000"))
            .header("idempotency-key", "late")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 408);
        assert_eq!(calls.get(), n);
    }
}

#[tokio::test]
async fn a_body_that_fails_while_read_is_not_stored() {
    let app = App::start(memory(), same).await;
    let client = client();
    for calls in 1..=2 {
        let answer = client
            .post(app.url("/broken"))
            .header("idempotency-key", "broken")
            .send()
            .await;
        // The server cuts the connection when the body fails, before or after the head.
        let failed = match answer {
            Err(_) => true,
            Ok(answer) => answer.bytes().await.is_err(),
        };
        assert!(failed, "the body's error reaches the client");
        assert_eq!(app.calls.get(), calls);
    }
}

#[tokio::test]
async fn only_allow_listed_headers_are_replayed() {
    let app = App::start(memory(), same).await;
    let client = client();
    let post = || {
        client
            .post(app.url("/headers"))
            .header("idempotency-key", "h")
            .send()
    };
    let first = read(post().await.unwrap()).await;
    assert_eq!(first.1["set-cookie"], "session=secret");
    assert_eq!(first.1["x-request-id"], "req-1");
    let replay = read(post().await.unwrap()).await;
    assert_eq!(replay.2, first.2);
    for kept in ["content-type", "etag", "location"] {
        assert_eq!(replay.1[kept], first.1[kept], "{kept}");
    }
    for dropped in [
        "set-cookie",
        "x-ratelimit-remaining",
        "ratelimit-policy",
        "x-request-id",
    ] {
        assert!(replay.1.get(dropped).is_none(), "{dropped} was replayed");
    }
    // The server's own date, not the stored one.
    assert_ne!(replay.1["date"], "Tue, 01 Dec 2026 00:00:00 GMT");

    let more = App::start(memory(), |b| {
        b.replay_header(axum::http::HeaderName::from_static("x-request-id"))
    })
    .await;
    let post = || {
        client
            .post(more.url("/headers"))
            .header("idempotency-key", "h")
            .send()
    };
    post().await.unwrap();
    let replay = read(post().await.unwrap()).await;
    assert_eq!(replay.1["x-request-id"], "req-1");
    let refused = IdempotencyLayer::builder(MemoryStore::new())
        .replay_header(axum::http::header::SET_COOKIE)
        .build();
    assert!(matches!(refused, Err(Error::InvalidInput { .. })));
}

#[tokio::test]
async fn an_oversized_request_body_is_413_and_claims_nothing() {
    let app = App::start(memory(), |b| b.max_request_body(1024)).await;
    let client = client();
    let post = |body: Vec<u8>| {
        client
            .post(app.url("/echo"))
            .header("idempotency-key", "big")
            .body(body)
            .send()
    };
    let refused = read(post(vec![b'a'; 1025]).await.unwrap()).await;
    assert_problem(&refused, StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");
    // Without a Content-Length (chunked), the limit holds while the body is read.
    let mut chunked = b"POST /echo HTTP/1.1\r\nhost: t\r\nidempotency-key: big\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'a'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(app.server.addr, &chunked, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(app.calls.get(), 0);
    // Nothing was claimed: the same key with an acceptable body runs.
    let fits = read(post(vec![b'a'; 1024]).await.unwrap()).await;
    assert_eq!(fits.0, StatusCode::CREATED);
    assert_eq!(app.calls.get(), 1);
}

#[tokio::test]
async fn a_truncated_request_body_claims_nothing() {
    let app = App::start(memory(), same).await;
    let body = br#"{"item":"cut","quantity":1}"#;
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: t\r\nidempotency-key: cut\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut truncated = head.into_bytes();
    truncated.extend_from_slice(&body[..10]);
    // The client sends half the body and hangs up.
    let mut stream = tokio::net::TcpStream::connect(app.server.addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &truncated)
        .await
        .unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.orders.count(), 0);
    let client = client();
    let retry = client
        .post(app.url("/orders"))
        .header("idempotency-key", "cut")
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.orders.count(), 1);
}

#[tokio::test]
async fn a_response_too_large_to_store_is_delivered_once_then_410() {
    let app = App::start(memory(), |b| b.max_stored_body(1024)).await;
    let client = client();
    let post = || {
        client
            .post(app.url("/large/4096"))
            .header("idempotency-key", "huge")
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(first.bytes().await.unwrap().len(), 4096);
    let again = read(post().await.unwrap()).await;
    assert_problem(&again, StatusCode::GONE, "not-replayable");
    assert_eq!(app.calls.get(), 1);
    // A body that fits is stored.
    let small = || {
        client
            .post(app.url("/large/1024"))
            .header("idempotency-key", "fits")
            .send()
    };
    small().await.unwrap();
    let replay = small().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.bytes().await.unwrap().len(), 1024);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_then_retries_gets_one_order() {
    let app = App::start(memory(), same).await;
    let body = br#"{"item":"gone","quantity":1,"delay_ms":1000}"#;
    // The request is running (its claim held) when the client goes away.
    abandon_order(&app, "gone", std::str::from_utf8(body).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = client();
    let retry = client
        .post(app.url("/orders"))
        .header("idempotency-key", "gone")
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    // The claim was given up, not left for its lease: the retry runs at once.
    assert_eq!(retry.status(), 201);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.orders.count(), 1);
}

/// A store whose every operation fails, as during an outage.
struct DownStore;

#[async_trait]
impl IdempotencyStore for DownStore {
    async fn claim(&self, _: &ClaimRequest<'_>) -> Result<Claim, Error> {
        Err(Error::store("down", "connection refused"))
    }
    async fn complete(&self, _: &Lease, _: Bytes, _: Duration) -> Result<(), Error> {
        Err(Error::store("down", "connection refused"))
    }
    async fn release(&self, _: &Lease) -> Result<(), Error> {
        Err(Error::store("down", "connection refused"))
    }
    async fn extend(&self, _: &Lease, _: Duration) -> Result<(), Error> {
        Err(Error::store("down", "connection refused"))
    }
    fn release_in_background(&self, _: Lease) {}
    fn abandon_claim_in_background(&self, _: &ClaimRequest<'_>) {}
    async fn purge_expired(&self) -> Result<u64, Error> {
        Err(Error::store("down", "connection refused"))
    }

    async fn inspect(&self, _: &str, _: &str) -> Result<RecordState, Error> {
        Err(Error::store("down", "connection refused"))
    }

    async fn forget(&self, _: &str, _: &str, _: Forget) -> Result<RecordState, Error> {
        Err(Error::store("down", "connection refused"))
    }
}

#[tokio::test]
async fn a_store_outage_is_503_or_runs_unprotected_when_failing_open() {
    let client = client();
    let closed = App::start(Arc::new(DownStore), same).await;
    let answer = read(
        client
            .post(closed.url("/echo"))
            .header("idempotency-key", "o")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let problem = assert_problem(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
    );
    assert_eq!(answer.1["retry-after"], "1");
    assert!(
        !problem.to_string().contains("connection refused"),
        "no backend detail leaks"
    );
    assert_eq!(closed.calls.get(), 0);

    let open = App::start(Arc::new(DownStore), |b| b.fail_open(true)).await;
    let answer = read(
        client
            .post(open.url("/echo"))
            .header("idempotency-key", "o")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.0, StatusCode::CREATED);
    assert_eq!(open.calls.get(), 1);
}

#[tokio::test]
async fn an_unreadable_record_is_500_and_never_runs_again() {
    let store = Arc::new(MemoryStore::new());
    let app = App::start(store.clone(), same).await;
    // A completed record for (anonymous, POST /echo, key "bad", empty body) whose payload
    // is not a stored response.
    let scope = scope(
        "",
        &Principal::ANONYMOUS,
        &axum::http::Method::POST,
        "/echo",
    );
    let key = store_key("bad");
    let request = ClaimRequest {
        scope: &scope,
        key: key.as_str(),
        fingerprint: fingerprint(&axum::http::Method::POST, "/echo", None, b""),
        owner: OwnerId::new(),
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(60),
    };
    let Claim::Acquired(lease) = store.claim(&request).await.unwrap() else {
        panic!("not acquired");
    };
    store
        .complete(
            &lease,
            Bytes::from_static(b"\x03\x09garbage"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        let answer = client()
            .post(app.url("/echo"))
            .header("idempotency-key", "bad")
            .send();
        let answer = read(answer.await.unwrap()).await;
        assert_problem(
            &answer,
            StatusCode::INTERNAL_SERVER_ERROR,
            "unreadable-record",
        );
    }
    assert_eq!(app.calls.get(), 0);
}

#[tokio::test]
async fn nested_layers_handle_a_request_once() {
    let store = memory();
    let calls = Arc::new(support::http::Calls::default());
    let router = support::http::test_routes(calls.clone())
        .route_layer(
            IdempotencyLayer::builder_shared(store.clone())
                .require_key(true)
                .build()
                .unwrap(),
        )
        .layer(IdempotencyLayer::from_shared(store));
    let server = support::http::TestServer::start(router).await;
    let client = client();
    let post = || {
        client
            .post(server.url("/echo"))
            .header("idempotency-key", "n")
            .body("b")
            .send()
    };
    let first = read(post().await.unwrap()).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let again = read(post().await.unwrap()).await;
    assert_eq!(again.2, first.2);
    assert_eq!(calls.get(), 1);
    // The inner layer still requires the key when the outer one passes a request through.
    let missing = read(client.post(server.url("/echo")).send().await.unwrap()).await;
    assert_problem(&missing, StatusCode::BAD_REQUEST, "missing-key");
}

/// The example service's own answers: its 400s (not stored, so nothing is created), the
/// 1 MiB request limit, `/healthz`, and a `Location` that names the order for its principal
/// only.
#[tokio::test]
async fn the_example_service_validates_orders_and_its_locations_resolve() {
    let app = App::start(memory(), same).await;
    let client = client();
    let as_alice =
        |request: reqwest::RequestBuilder| request.header("authorization", "Bearer alice");
    for (key, body, why) in [
        ("bad-json", "{not json".to_owned(), "invalid order"),
        (
            "bad-quantity",
            json!({"item": "x", "quantity": 0}).to_string(),
            "quantity",
        ),
        (
            "bad-delay",
            json!({"item": "x", "quantity": 1, "delay_ms": 5001}).to_string(),
            "delay_ms",
        ),
    ] {
        let answer = read(
            as_alice(client.post(app.url("/orders")))
                .header("idempotency-key", key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{key}: {}", answer.2);
        assert!(answer.2.contains(why), "{key}: {}", answer.2);
    }
    assert_eq!(app.orders.count(), 0);

    let too_big = read(
        client
            .post(app.url("/orders"))
            .header("idempotency-key", "big")
            .header("content-type", "application/json")
            .body(vec![b' '; idempotent_examples::orders::MAX_BODY + 1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&too_big, StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");

    let health = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let created = read(
        as_alice(order(
            &client,
            &app,
            "located",
            json!({"item": "map", "quantity": 2}),
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(created.0, StatusCode::CREATED);
    let location = created.1["location"].to_str().unwrap().to_owned();
    let fetched = read(
        as_alice(client.get(app.url(&location)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((fetched.0, fetched.2), (StatusCode::OK, created.2));
    let other = client
        .get(app.url(&location))
        .header("authorization", "Bearer bob")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "another principal's order is not found"
    );
}

#[tokio::test]
async fn the_example_server_opens_the_stores_its_flag_names() {
    use idempotent_examples::orders::open_store;
    assert!(open_store("memory").await.is_ok());
    let db = support::unique_name("idempotent-example-store");
    let path = std::env::temp_dir().join(format!("{db}.db"));
    let sqlite = open_store(&format!("sqlite:{}", path.display())).await;
    let opened = sqlite.is_ok();
    drop(sqlite);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    assert!(opened, "sqlite:PATH opens a file store");
    for spec in ["bogus", "mysql://localhost/db", ""] {
        match open_store(spec).await {
            Err(Error::InvalidInput { reason }) => {
                assert!(reason.contains("unknown store"), "{reason}")
            }
            Err(other) => panic!("{spec:?}: expected InvalidInput, got {other:?}"),
            Ok(_) => panic!("{spec:?} opened a store"),
        }
    }
}
