//! `TieredStore` when Redis goes away: losing the cache loses speed, never correctness, and a
//! forget the cache cannot hear of fails rather than leave the cache replaying the record.
//!
//! This binary stops the local Redis server, which breaks every other client of it, so it
//! holds this one test only (cargo runs test binaries one at a time). A guard restarts Redis
//! even when the test fails.

#![cfg(feature = "tiered")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idempotent_core::store::{Forget, RecordState};
use idempotent_core::{Call, Error, IdempotencyStore, TieredStore};
use support::postgres::connect;
use support::redis::DeleteKeys;
use support::redis_server::{RestartOnDrop, ping, redis_cli, stop_redis};

async fn call(store: &TieredStore, runs: &AtomicUsize, key: &str) -> Result<(u64, bool), Error> {
    Call::new(store, "tiered-faults", key)
        .run(async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<u64, Error>(5)
        })
        .await
        .map(|outcome| (outcome.value, outcome.is_replayed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_working_and_never_run_twice_while_redis_is_down() {
    let Some((durable, _tables)) = connect("idem_tiered_faults", 8).await else {
        return;
    };
    let url = support::redis_url();
    if !url.contains("127.0.0.1:6379") {
        support::skip("the tiered fault test only stops the local Redis at 127.0.0.1:6379");
        return;
    }
    let cache_prefix = support::unique_name("idem_tiered_faults");
    // Declared before the restart guard, so it runs once Redis is back.
    let _keys = DeleteKeys(cache_prefix.clone());
    let store = match TieredStore::builder()
        .cache_prefix(&cache_prefix)
        .cache_timeout(Duration::from_millis(200))
        .connect(durable, &url)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            support::unavailable::<()>("Redis", &url, error);
            return;
        }
    };
    let runs = AtomicUsize::new(0);
    // Warm: one key completed and back-filled into the cache.
    assert_eq!(call(&store, &runs, "warm").await.unwrap(), (5, false));
    assert_eq!(call(&store, &runs, "warm").await.unwrap(), (5, true));
    assert_eq!(call(&store, &runs, "forgotten").await.unwrap(), (5, false));
    assert_eq!(call(&store, &runs, "forgotten").await.unwrap(), (5, true));

    let _restart = RestartOnDrop;
    assert!(stop_redis(), "Redis did not stop");
    // With the cache gone, replays and fresh calls are answered by PostgreSQL alone.
    for round in 0..3 {
        assert_eq!(
            call(&store, &runs, "warm").await.unwrap(),
            (5, true),
            "round {round}"
        );
        let key = format!("during-{round}");
        assert_eq!(call(&store, &runs, &key).await.unwrap(), (5, false));
        assert_eq!(call(&store, &runs, &key).await.unwrap(), (5, true));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 5, "every key ran exactly once");
    // A forget cannot tell the cache, so it fails (a persistent cache would still replay
    // the record), though PostgreSQL has forgotten the record.
    let forgot = store
        .forget("tiered-faults", "forgotten", Forget::UnlessLeased)
        .await;
    assert!(
        matches!(forgot, Err(Error::Store { .. })),
        "a forget the cache did not hear of must fail, got {forgot:?}"
    );
    assert!(matches!(
        store.durable().inspect("tiered-faults", "forgotten").await,
        Ok(RecordState::Released { .. })
    ));

    drop(_restart);
    assert!(ping(), "Redis is back");
    // Forgetting again tells the cache (the first command on the dead connection may fail).
    let cache_key = store.cache_key("tiered-faults", "forgotten");
    let mut told = false;
    for _ in 0..50 {
        if let Ok(state) = store
            .forget("tiered-faults", "forgotten", Forget::UnlessLeased)
            .await
        {
            assert!(matches!(state, RecordState::Released { .. }), "{state:?}");
            told = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        told,
        "forget did not reach the cache within 10 s of the restart"
    );
    assert_eq!(
        redis_cli(&["strlen", &cache_key]).as_deref(),
        Some("1"),
        "the forgotten record's stand-in is in the cache"
    );
    assert_eq!(call(&store, &runs, "forgotten").await.unwrap(), (5, false));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        6,
        "the forgotten key ran again"
    );
    // The cache comes back: the first request on the dead connection fails (and starts
    // another bypass window), then a replay back-fills the restarted, empty cache. Results
    // are unchanged throughout.
    for key in ["warm", "during-0", "during-2"] {
        let cache_key = store.cache_key("tiered-faults", key);
        let mut cached = false;
        for _ in 0..50 {
            assert_eq!(call(&store, &runs, key).await.unwrap(), (5, true));
            if redis_cli(&["exists", &cache_key]).as_deref() == Some("1") {
                cached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            cached,
            "{key} was not cached again within 10 s of the restart"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 6);
}
