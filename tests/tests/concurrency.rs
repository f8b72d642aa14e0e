//! Concurrency: many simultaneous calls with one key run the body exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idempotent_core::{Disposition, Error, MemoryStore, idempotent, observe};
use support::assert_duplicates_run_once;
use tokio::sync::{Barrier, Notify};

const CALLS: usize = 1_000;
const BODY_TIME: Duration = Duration::from_millis(200);

#[idempotent(key = "id", store = store, skip = "runs", lease = "30s")]
async fn slow_wait(store: MemoryStore, runs: Arc<AtomicUsize>, id: u64) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(BODY_TIME).await;
    Ok(format!("result-{id}-run-{run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn thousand_concurrent_calls_wait_run_once_and_all_get_the_same_value() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    assert_duplicates_run_once(CALLS, &runs, "result-7-run-1".to_owned(), || {
        slow_wait(store.clone(), runs.clone(), 7)
    })
    .await;
}

/// Rejections counted by the callers; the body stays in flight until every duplicate has been
/// rejected (or 10 s pass), so no duplicate can arrive after it completed and replay instead.
struct RejectProbe {
    rejected: AtomicUsize,
    all_rejected: Notify,
}

#[idempotent(key = "id", store = store, skip = "runs, probe", lease = "30s", on_in_flight = "reject")]
async fn slow_reject(
    store: MemoryStore,
    runs: Arc<AtomicUsize>,
    probe: Arc<RejectProbe>,
    id: u64,
) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(BODY_TIME).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), probe.all_rejected.notified()).await;
    Ok(format!("result-{id}-run-{run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn thousand_concurrent_calls_in_reject_mode_run_once_and_reject_the_rest_as_in_flight() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let probe = Arc::new(RejectProbe {
        rejected: AtomicUsize::new(0),
        all_rejected: Notify::new(),
    });
    let barrier = Arc::new(Barrier::new(CALLS));

    let handles: Vec<_> = (0..CALLS)
        .map(|_| {
            let (store, runs, probe, barrier) =
                (store.clone(), runs.clone(), probe.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let result = observe(slow_reject(store, runs, probe.clone(), 7)).await;
                if matches!(result, (Err(Error::InFlight { .. }), _))
                    && probe.rejected.fetch_add(1, Ordering::SeqCst) + 1 == CALLS - 1
                {
                    probe.all_rejected.notify_one();
                }
                result
            })
        })
        .collect();

    let (mut values, mut in_flight, mut other_errors) = (Vec::new(), 0, Vec::new());
    for handle in handles {
        match handle.await.unwrap() {
            (Ok(value), Some(Disposition::Executed)) => values.push(value),
            (Ok(value), how) => panic!("unexpected success {value:?} ({how:?})"),
            (Err(Error::InFlight { retry_after }), _) => {
                assert!(retry_after <= Duration::from_secs(30), "{retry_after:?}");
                in_flight += 1;
            }
            (Err(error), _) => other_errors.push(error.to_string()),
        }
    }

    assert!(other_errors.is_empty(), "{other_errors:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(values, vec!["result-7-run-1".to_owned()]);
    assert_eq!(in_flight, CALLS - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_calls_with_distinct_keys_each_run_once() {
    const KEYS: u64 = 200;
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(2 * KEYS as usize));

    // Two calls per key, all started together.
    let handles: Vec<_> = (0..2 * KEYS)
        .map(|i| {
            let (store, runs, barrier) = (store.clone(), runs.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let id = i % KEYS;
                (id, slow_wait(store, runs, id).await)
            })
        })
        .collect();

    for handle in handles {
        let (id, result) = handle.await.unwrap();
        let value = result.unwrap();
        assert!(value.starts_with(&format!("result-{id}-run-")), "{value}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), KEYS as usize);
    assert_eq!(store.len(), KEYS as usize);
}
