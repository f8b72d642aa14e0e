//! Failures in the body: `Err` and panics release the key, cancellation releases it, and
//! `cache_errors = true` stores and replays `Err`.

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idempotent_core::{Disposition, Error, MemoryStore, idempotent, observe};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Fails on the first `failures` runs, then succeeds. Rejects duplicates, so a claim left
/// behind by a failed run would show up as `InFlight` instead of a (slow) takeover.
#[idempotent(key = "id", store = store, skip = "runs, failures", on_in_flight = "reject")]
async fn flaky(
    store: &MemoryStore,
    runs: &AtomicUsize,
    failures: usize,
    id: u64,
) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    if run <= failures {
        return Err(Error::InvalidInput {
            reason: format!("attempt {run} failed"),
        });
    }
    Ok(format!("ok-{id}-run-{run}"))
}

#[tokio::test]
async fn err_releases_the_key_so_a_retry_runs_the_body() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let (first, how_first) = observe(flaky(&store, &runs, 1, 9)).await;
    assert!(
        matches!(&first, Err(Error::InvalidInput { reason }) if reason == "attempt 1 failed"),
        "{first:?}"
    );
    assert_eq!(how_first, Some(Disposition::Executed));

    let (second, how_second) = observe(flaky(&store, &runs, 1, 9)).await;
    assert_eq!(second.unwrap(), "ok-9-run-2");
    assert_eq!(how_second, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // The success is recorded: the next duplicate replays it.
    let (third, how_third) = observe(flaky(&store, &runs, 1, 9)).await;
    assert_eq!(third.unwrap(), "ok-9-run-2");
    assert_eq!(how_third, Some(Disposition::Replayed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn err_is_never_replayed_without_cache_errors() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    for attempt in 1..=3 {
        let result = flaky(&store, &runs, usize::MAX, 1).await;
        assert!(
            matches!(&result, Err(Error::InvalidInput { reason }) if *reason == format!("attempt {attempt} failed")),
            "{result:?}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn waiting_duplicate_runs_the_body_itself_when_the_owner_returns_err() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let started = Instant::now();

    // Nested in the test, so it names its scope.
    #[idempotent(key = "id", store = store, skip = "runs", scope = "errors.fails_first_slowly")]
    async fn fails_first_slowly(
        store: &MemoryStore,
        runs: &AtomicUsize,
        id: u64,
    ) -> Result<u64, Error> {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if run == 1 {
            return Err(Error::InvalidInput {
                reason: "first attempt".into(),
            });
        }
        Ok(id)
    }

    let (owner, duplicate) = tokio::join!(
        observe(fails_first_slowly(&store, &runs, 5)),
        observe(fails_first_slowly(&store, &runs, 5)),
    );
    assert!(matches!(owner.0, Err(Error::InvalidInput { .. })));
    assert_eq!(duplicate.0.unwrap(), 5);
    assert_eq!(duplicate.1, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // The duplicate did not wait for the lease (30 s) to run out.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum PaymentError {
    Declined { code: String, attempt: usize },
    Idempotency(String),
}

impl From<Error> for PaymentError {
    fn from(error: Error) -> Self {
        PaymentError::Idempotency(error.to_string())
    }
}

#[idempotent(key = "id", store = store, skip = "runs", cache_errors = true)]
async fn declined(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, PaymentError> {
    let attempt = runs.fetch_add(1, Ordering::SeqCst) + 1;
    if id == 0 {
        return Ok(0);
    }
    Err(PaymentError::Declined {
        code: "card_declined".into(),
        attempt,
    })
}

#[tokio::test]
async fn cached_err_is_replayed_and_the_body_runs_once() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let (first, how_first) = observe(declined(&store, &runs, 1)).await;
    let expected = PaymentError::Declined {
        code: "card_declined".into(),
        attempt: 1,
    };
    assert_eq!(first, Err(expected.clone()));
    assert_eq!(how_first, Some(Disposition::Executed));

    for _ in 0..3 {
        let (again, how) = observe(declined(&store, &runs, 1)).await;
        assert_eq!(again, Err(expected.clone()));
        assert_eq!(how, Some(Disposition::Replayed));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cache_errors_still_replays_ok_results() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    assert_eq!(declined(&store, &runs, 0).await, Ok(0));
    let (again, how) = observe(declined(&store, &runs, 0)).await;
    assert_eq!(again, Ok(0));
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Panics on its first run. Rejects duplicates, so a claim left behind by the panic would show
/// up as `InFlight`.
#[idempotent(key = "id", store = store, skip = "runs", on_in_flight = "reject")]
async fn panics_first(store: MemoryStore, runs: Arc<AtomicUsize>, id: u64) -> Result<u64, Error> {
    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("boom in the body");
    }
    Ok(id)
}

#[tokio::test]
async fn panic_in_body_propagates_and_releases_the_key() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));

    let join = tokio::spawn(panics_first(store.clone(), runs.clone(), 3)).await;
    let error = join.unwrap_err();
    assert!(error.is_panic(), "{error:?}");
    let payload = error.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in the body"));

    // Released, not left in progress: a retry (in the same instant) runs the body.
    let (retry, how) = observe(panics_first(store.clone(), runs.clone(), 3)).await;
    assert_eq!(retry.unwrap(), 3);
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// The body of the `hangs_first` functions: hangs on its first run (until cancelled), returns
/// `id` afterwards.
async fn hang_on_the_first_run(
    runs: &AtomicUsize,
    started: &Notify,
    id: u64,
) -> Result<u64, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    started.notify_one();
    if run == 1 {
        pending::<()>().await;
    }
    Ok(id)
}

/// Hangs on its first run (until cancelled), succeeds afterwards. Rejects duplicates, so a
/// claim left behind by a cancelled call would show up as `InFlight`.
#[idempotent(key = "id", store = store, skip = "runs, started", on_in_flight = "reject")]
async fn hangs_first(
    store: MemoryStore,
    runs: Arc<AtomicUsize>,
    started: Arc<Notify>,
    id: u64,
) -> Result<u64, Error> {
    hang_on_the_first_run(&runs, &started, id).await
}

#[tokio::test(start_paused = true)]
async fn call_dropped_by_timeout_releases_the_key_at_once() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());

    let timed_out = tokio::time::timeout(
        Duration::from_secs(1),
        hangs_first(store.clone(), runs.clone(), started.clone(), 4),
    )
    .await;
    assert!(timed_out.is_err(), "the first call should hang");
    let dropped_at = Instant::now();

    let (retry, how) = observe(hangs_first(store, runs.clone(), started, 4)).await;
    assert_eq!(retry.unwrap(), 4);
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(dropped_at.elapsed(), Duration::ZERO, "the retry waited");
}

#[tokio::test]
async fn aborted_task_releases_the_key_at_once() {
    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());

    let task = tokio::spawn(hangs_first(store.clone(), runs.clone(), started.clone(), 8));
    started.notified().await;
    task.abort();
    let error = task.await.unwrap_err();
    assert!(error.is_cancelled(), "{error:?}");

    let retry = hangs_first(store, runs.clone(), started, 8).await;
    assert_eq!(retry.unwrap(), 8);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn waiting_duplicate_runs_once_the_owner_is_cancelled() {
    #[idempotent(key = "id", store = store, skip = "runs, started", scope = "errors.hangs_first_waiting")]
    async fn hangs_first_waiting(
        store: MemoryStore,
        runs: Arc<AtomicUsize>,
        started: Arc<Notify>,
        id: u64,
    ) -> Result<u64, Error> {
        hang_on_the_first_run(&runs, &started, id).await
    }

    let store = MemoryStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());

    let owner = tokio::spawn(hangs_first_waiting(
        store.clone(),
        runs.clone(),
        started.clone(),
        6,
    ));
    started.notified().await;
    let duplicate = tokio::spawn(observe(hangs_first_waiting(
        store.clone(),
        runs.clone(),
        started.clone(),
        6,
    )));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!duplicate.is_finished(), "the duplicate should wait");

    let cancelled_at = Instant::now();
    owner.abort();
    assert!(owner.await.unwrap_err().is_cancelled());
    let (value, how) = duplicate.await.unwrap();
    assert_eq!(value.unwrap(), 6);
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "the duplicate waited {:?} after the owner was cancelled",
        cancelled_at.elapsed()
    );
}

/// A map with non-string keys cannot be stored as JSON.
#[idempotent(key = "id", store = store, skip = "runs", on_in_flight = "reject")]
async fn unencodable(
    store: &MemoryStore,
    runs: &AtomicUsize,
    id: u64,
) -> Result<std::collections::BTreeMap<(u64, u64), u64>, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok([((id, id), id)].into())
}

#[tokio::test]
async fn result_that_cannot_be_encoded_is_an_encode_error_and_releases_the_key() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let first = unencodable(&store, &runs, 1).await;
    assert!(matches!(first, Err(Error::Encode { .. })), "{first:?}");
    // Not left in progress: the retry runs (and fails the same way) instead of `InFlight`.
    let second = unencodable(&store, &runs, 1).await;
    assert!(matches!(second, Err(Error::Encode { .. })), "{second:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[idempotent(key = "id", store = store, skip = "runs", on_in_flight = "reject")]
async fn not_a_number(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<f64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    let _ = id;
    Ok(f64::NAN)
}

#[tokio::test]
async fn result_that_does_not_survive_json_is_an_encode_error_and_releases_the_key() {
    // JSON has no NaN: it would be stored as `null` and fail every replay until the ttl ends.
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    for attempt in 1..=2 {
        let result = not_a_number(&store, &runs, 1).await;
        assert!(matches!(result, Err(Error::Encode { .. })), "{result:?}");
        assert_eq!(runs.load(Ordering::SeqCst), attempt, "the key was released");
    }
}
