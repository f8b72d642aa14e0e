#![cfg(feature = "http")]
//! The HTTP layer on every store, through the example orders service on a real server on
//! 127.0.0.1: create and replay, a mismatch, a duplicate in flight, 100 concurrent duplicates,
//! two principals with one key; the paths that release the key (a 5xx, a panic, a client that
//! disconnects) and a response too large to store; and on the durable stores (SQLite, Redis, PostgreSQL), a replay
//! after the server restarts with a store opened anew.
//!
//! Redis and PostgreSQL tests use their own key prefix or table and remove it; they skip with
//! one line when the server is unreachable, unless `IDEMPOTENT_REQUIRE_SERVICES=1`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use idempotent_core::http::IdempotencyLayer;
use idempotent_core::{IdempotencyStore, MemoryStore};
use idempotent_examples::orders::{self, Orders};
use serde_json::json;
use support::http::{App, TestServer, abandon_order, assert_problem, client, read};

/// The orders routes behind a layer on `store` like the example's, with a short ttl so that a
/// test that fails before its clean-up leaves records that expire soon.
async fn serve(store: Arc<dyn IdempotencyStore>, orders: Arc<Orders>) -> TestServer {
    let layer = IdempotencyLayer::builder_shared(store)
        .require_key(true)
        .principal(orders::principal_of)
        .ttl(Duration::from_secs(300))
        .build()
        .unwrap();
    TestServer::start(orders::routes(orders).layer(layer)).await
}

fn post(
    client: &reqwest::Client,
    server: &TestServer,
    key: &str,
    token: &str,
    body: &serde_json::Value,
) -> reqwest::RequestBuilder {
    client
        .post(server.url("/orders"))
        .header("idempotency-key", key)
        .header("authorization", format!("Bearer {token}"))
        .json(body)
}

/// Everything but the restart, on `store`.
async fn scenario(store: Arc<dyn IdempotencyStore>) {
    let orders = Orders::new();
    let server = serve(store, orders.clone()).await;
    let client = client();
    let body = json!({"item": "book", "quantity": 1});

    // Create, then replay.
    let first = read(
        post(&client, &server, "k1", "alice", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.2);
    let replay = read(
        post(&client, &server, "k1", "alice", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(replay.0, StatusCode::CREATED);
    assert_eq!(replay.1["idempotent-replayed"], "true");
    assert_eq!(
        (replay.2.as_str(), &replay.1["location"]),
        (first.2.as_str(), &first.1["location"])
    );

    // The same key with another body.
    let other = json!({"item": "book", "quantity": 9});
    let mismatch = read(
        post(&client, &server, "k1", "alice", &other)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(mismatch.0, StatusCode::UNPROCESSABLE_ENTITY);

    // Another principal with the same key gets an order of its own.
    let bob = read(
        post(&client, &server, "k1", "bob", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bob.0, StatusCode::CREATED);
    assert!(bob.1.get("idempotent-replayed").is_none());
    assert_ne!(bob.2, first.2);
    assert_eq!((orders.of("alice").len(), orders.of("bob").len()), (1, 1));

    // A duplicate while the first runs.
    let slow = json!({"item": "slow", "quantity": 1, "delay_ms": 700});
    let running = tokio::spawn(post(&client, &server, "k2", "alice", &slow).send());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let conflict = read(
        post(&client, &server, "k2", "alice", &slow)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(conflict.0, StatusCode::CONFLICT);
    assert_eq!(conflict.1["retry-after"], "1");
    assert_eq!(running.await.unwrap().unwrap().status(), 201);

    // 100 concurrent duplicates: one order, one 201, 99 409s.
    let rush = json!({"item": "rush", "quantity": 1, "delay_ms": 1500});
    let requests: Vec<_> = (0..100)
        .map(|_| tokio::spawn(post(&client, &server, "k3", "carol", &rush).send()))
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap().unwrap().status().as_u16());
    }
    let created = statuses.iter().filter(|&&s| s == 201).count();
    let conflicts = statuses.iter().filter(|&&s| s == 409).count();
    assert_eq!((created, conflicts), (1, 99), "{statuses:?}");
    assert_eq!(orders.of("carol").len(), 1);
    assert_eq!(orders.count(), 4);
}

/// The paths that release the key or keep a record that cannot be replayed, on `store`: a
/// 5xx and a panic release (the retry runs again), a response too large to store is delivered
/// once and then 410, and a client that disconnects mid-request leaves no claim behind.
async fn released_and_unstored(store: Arc<dyn IdempotencyStore>) {
    let app = App::start(store, |layer| layer.max_stored_body(1024)).await;
    let client = client();
    let send = |path: &str, key: &str| {
        client
            .post(app.url(path))
            .header("idempotency-key", key)
            .send()
    };

    for attempt in 1..=2 {
        let failed = send("/status/503", "unavailable").await.unwrap();
        assert_eq!(failed.status(), 503);
        assert_eq!(
            app.calls.get(),
            attempt,
            "a 5xx is not stored: the retry runs"
        );
    }
    // A panic releases the key in the background as it unwinds: until the store has applied
    // the release, a retry is a 409 (bounded wait for it).
    assert_eq!(send("/panic", "boom").await.unwrap().status(), 500);
    let mut retried = send("/panic", "boom").await.unwrap().status();
    for _ in 0..50 {
        if retried != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        retried = send("/panic", "boom").await.unwrap().status();
    }
    assert_eq!(retried, 500, "the retry after a panic runs again");
    assert_eq!(app.calls.get(), 4, "a panic releases the key");
    let huge = send("/large/4096", "huge").await.unwrap();
    assert_eq!(huge.status(), 201);
    assert_eq!(huge.bytes().await.unwrap().len(), 4096);
    let again = read(send("/large/4096", "huge").await.unwrap()).await;
    assert_problem(&again, StatusCode::GONE, "not-replayable");
    assert_eq!(app.calls.get(), 5, "the too-large response ran once");

    // A client that goes away while its request runs: the retry runs at once, once.
    let body = r#"{"item":"gone","quantity":1,"delay_ms":800}"#;
    abandon_order(&app, "gone", body).await;
    // The claim is given up in the background, long before its 30 s lease: a retry that
    // still finds it in flight tries again (bounded).
    let retry_once = || {
        client
            .post(app.url("/orders"))
            .header("idempotency-key", "gone")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mut retry = retry_once().await.unwrap();
    for _ in 0..50 {
        if retry.status() != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        retry = retry_once().await.unwrap();
    }
    assert_eq!(retry.status(), 201);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        app.orders.count(),
        1,
        "one order for the abandoned request and its retry"
    );
}

/// Creates an order on a server with the store `open` gives, stops the server and drops the
/// store, then retries on a new server with a store opened anew: the retry is replayed.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "redis", feature = "postgres")),
    allow(dead_code)
)]
async fn restart<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn IdempotencyStore>>,
{
    let orders = Orders::new();
    let client = client();
    let body = json!({"item": "durable", "quantity": 3});
    let server = serve(open().await, orders.clone()).await;
    let first = read(
        post(&client, &server, "restart", "dana", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first.0, StatusCode::CREATED);
    server.stop().await;

    let server = serve(open().await, orders.clone()).await;
    let replay = read(
        post(&client, &server, "restart", "dana", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(replay.0, StatusCode::CREATED);
    assert_eq!(replay.1["idempotent-replayed"], "true");
    assert_eq!(replay.2, first.2);
    assert_eq!(orders.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    scenario(Arc::new(MemoryStore::new())).await;
    released_and_unstored(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use idempotent_core::SqliteStore;
    use support::sqlite::TempDb;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store() {
        let db = TempDb::new("http");
        let store = Arc::new(SqliteStore::open(db.path()).await.unwrap());
        scenario(store.clone()).await;
        released_and_unstored(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_replays_after_a_restart() {
        let db = TempDb::new("http-restart");
        restart(|| async {
            Arc::new(SqliteStore::open(db.path()).await.unwrap()) as Arc<dyn IdempotencyStore>
        })
        .await;
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use idempotent_core::RedisStore;

    async fn connect(prefix: &str) -> Option<RedisStore> {
        let url = support::redis_url();
        match RedisStore::builder().key_prefix(prefix).connect(&url).await {
            Ok(store) => Some(store),
            Err(error) => support::unavailable("Redis", &url, error),
        }
    }

    async fn clean(prefix: &str) {
        if let Some(redis) = support::redis::RawRedis::connect().await {
            redis.delete_prefix(prefix).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store() {
        let prefix = support::unique_name("idem-http");
        let Some(store) = connect(&prefix).await else {
            return;
        };
        let store = Arc::new(store);
        scenario(store.clone()).await;
        released_and_unstored(store).await;
        clean(&prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_replays_after_a_restart() {
        let prefix = support::unique_name("idem-http-restart");
        if connect(&prefix).await.is_none() {
            return;
        }
        restart(|| async {
            Arc::new(connect(&prefix).await.unwrap()) as Arc<dyn IdempotencyStore>
        })
        .await;
        clean(&prefix).await;
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use idempotent_core::PostgresStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store() {
        let Some((store, _drop_table)) = support::postgres::connect("idem_http", 8).await else {
            return;
        };
        let store = Arc::new(store);
        scenario(store.clone()).await;
        released_and_unstored(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_replays_after_a_restart() {
        let Some((store, _drop_table)) = support::postgres::connect("idem_http_restart", 4).await
        else {
            return;
        };
        let table = store.table().to_owned();
        drop(store);
        restart(|| async {
            let store = PostgresStore::builder()
                .table(&table)
                .connect(&support::postgres_url())
                .await
                .unwrap();
            Arc::new(store) as Arc<dyn IdempotencyStore>
        })
        .await;
    }
}
