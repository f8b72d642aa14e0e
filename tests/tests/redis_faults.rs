#![cfg(feature = "redis")]
//! `RedisStore` when Redis goes away: stopped mid-run, then restarted.
//!
//! This binary stops the local Redis server (`SHUTDOWN NOSAVE`), which breaks every other
//! client of it, so it holds this one test only: cargo runs test binaries one at a time, and
//! no other test of this project runs while it does. A guard restarts Redis (with the same
//! command as `.ci/run`) even when the test fails. It runs only against the local server at
//! 127.0.0.1:6379, the one it can restart.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotent_core::store::OwnerId;
use idempotent_core::{Call, CallOptions, Error, IdempotencyStore, OnStoreError, RedisStore};
use support::redis_server::{HOST, PORT, RestartOnDrop, ping, redis_cli, start_redis, stop_redis};
use tokio::time::Instant;

/// The store's bound on one operation; calls while Redis is down must fail within a small
/// multiple of it.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Counts body runs per key.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, usize>>>);

impl Runs {
    fn record(&self, key: &str) {
        *self.0.lock().unwrap().entry(key.to_owned()).or_default() += 1;
    }

    fn of(&self, key: &str) -> usize {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    fn most(&self) -> usize {
        self.0.lock().unwrap().values().copied().max().unwrap_or(0)
    }
}

const SCOPE: &str = "faults";

async fn call(
    store: &RedisStore,
    runs: &Runs,
    key: &str,
    options: CallOptions,
) -> Result<(u64, bool), Error> {
    Call::new(store, SCOPE, key)
        .options(options)
        .run(async {
            runs.record(key);
            Ok::<u64, Error>(42)
        })
        .await
        .map(|outcome| (outcome.value, outcome.is_replayed()))
}

fn assert_store_error<T: std::fmt::Debug>(result: &Result<T, Error>, what: &str) {
    assert!(
        matches!(
            result,
            Err(Error::Store {
                backend: "redis",
                ..
            })
        ),
        "{what}: expected Error::Store from redis, got {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_closed_and_the_same_store_recovers_after_restart() {
    let url = support::redis_url();
    let local = [
        format!("redis://{HOST}:{PORT}"),
        format!("redis://localhost:{PORT}"),
    ];
    if !local.iter().any(|prefix| url.starts_with(prefix.as_str())) {
        support::skip(&format!(
            "the Redis fault test stops and restarts only the local Redis, not {url}"
        ));
        return;
    }
    for binary in ["redis-server", "redis-cli"] {
        if Command::new(binary).arg("--version").output().is_err() {
            return support::unavailable(binary, &url, "binary not found").unwrap_or(());
        }
    }
    let store = match RedisStore::builder()
        .key_prefix(support::unique_name("idem-test-faults"))
        .timeout(TIMEOUT)
        .connect(&url)
        .await
    {
        Ok(store) => store,
        Err(error) => return support::unavailable("Redis", &url, error).unwrap_or(()),
    };
    if !ping() {
        return support::unavailable("redis-cli", &url, "no PONG from `redis-cli ping`")
            .unwrap_or(());
    }
    let _restart = RestartOnDrop;
    let runs = Runs::default();
    let options = CallOptions::new()
        .lease(Duration::from_secs(30))
        .ttl(Duration::from_secs(60));

    // Healthy: a call runs once and replays.
    assert_eq!(
        call(&store, &runs, "before", options).await.unwrap(),
        (42, false)
    );
    assert_eq!(
        call(&store, &runs, "before", options).await.unwrap(),
        (42, true)
    );

    // Load in flight while Redis stops: every key is called twice in a row (a duplicate
    // retry), bounded in count and time. Each call succeeds (run or replay) or fails with
    // Error::Store; no key's body may run twice.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load_errors = Arc::new(AtomicUsize::new(0));
    let load = {
        let (store, runs) = (store.clone(), runs.clone());
        let (stop_load, load_errors) = (stop_load.clone(), load_errors.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut calls = 0;
            for i in 0..5_000 {
                if stop_load.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(30) {
                    break;
                }
                let key = format!("load-{i}");
                for _ in 0..2 {
                    calls += 1;
                    match call(&store, &runs, &key, options).await {
                        Ok((value, _)) => assert_eq!(value, 42),
                        Err(error) => {
                            assert_store_error(&Err::<(), _>(error), "a call during the outage");
                            load_errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
            calls
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::task::spawn_blocking(stop_redis).await.unwrap(),
        "Redis did not stop"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_load.store(true, Ordering::SeqCst);
    let load_calls = load.await.unwrap();
    assert!(
        load_errors.load(Ordering::SeqCst) > 0,
        "no call of the load failed while Redis was down"
    );
    assert_eq!(
        runs.most(),
        1,
        "a body ran twice for one key during the outage"
    );

    // While Redis is down: fail closed, promptly, and the body never runs.
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let key = format!("down-{i}");
        let started = Instant::now();
        let result = call(&store, &runs, &key, options).await;
        assert_store_error(&result, "a call while Redis is down");
        slowest = slowest.max(started.elapsed());
        assert!(
            started.elapsed() < TIMEOUT * 6,
            "a call while Redis is down took {:?}",
            started.elapsed()
        );
        assert_eq!(runs.of(&key), 0, "the body ran while Redis was down");
    }
    let claim = store
        .claim(&support::request(SCOPE, "down-claim", OwnerId::new()))
        .await;
    assert_store_error(&claim, "a claim while Redis is down");
    assert_store_error(&store.purge_expired().await, "a purge while Redis is down");
    // Fail-open, chosen explicitly, runs the body unprotected.
    let open = call(
        &store,
        &runs,
        "down-open",
        options.on_store_error(OnStoreError::FailOpen),
    )
    .await;
    assert_eq!(open.unwrap(), (42, false));
    assert_eq!(runs.of("down-open"), 1);

    // Restart; the same store reconnects by itself (bounded retries: the first calls may
    // still see the old connection fail).
    assert!(
        tokio::task::spawn_blocking(start_redis).await.unwrap(),
        "Redis did not restart"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failures = Vec::new();
    let recovered = loop {
        match call(&store, &runs, "after", options).await {
            Ok(outcome) => break outcome,
            Err(error) => {
                assert_store_error(&Err::<(), _>(error), "a call after the restart");
                failures.push(Instant::now());
            }
        }
        assert!(
            Instant::now() < deadline && failures.len() < 100,
            "the store did not recover within 20 s of the restart ({} failed calls)",
            failures.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(recovered, (42, false));
    assert_eq!(
        call(&store, &runs, "after", options).await.unwrap(),
        (42, true)
    );
    assert_eq!(runs.of("after"), 1, "the body ran twice after the restart");
    println!(
        "faults: {load_calls} load calls, {} failed during the outage; calls while down failed \
         within {slowest:?}; {} failed calls before recovery",
        load_errors.load(Ordering::SeqCst),
        failures.len()
    );

    // The restarted server kept nothing (`--save ""`), so only this run's keys since the
    // restart remain; delete them.
    let _ = redis_cli(&["del", &store.record_key(SCOPE, "after")]);
}
