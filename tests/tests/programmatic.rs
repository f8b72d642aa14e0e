//! The programmatic `Call` API and `observe`: the same machinery as `#[idempotent]`, without the
//! attribute.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::key::{Fingerprint, IdempotencyKey};
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, RecordState};
use idempotent_core::{
    Call, CallOptions, Disposition, Error, IdempotencyStore, MemoryStore, OnInFlight, OnStoreError,
    Outcome, idempotent, observe,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

const SCOPE: &str = "programmatic.refund";

fn key(id: u64) -> IdempotencyKey {
    IdempotencyKey::builder(SCOPE).part(&id).finish()
}

fn amount(value: u64) -> Fingerprint {
    Fingerprint::builder().field("amount", &value).finish()
}

/// The body: counts its runs and returns which run it was.
async fn counted(runs: &AtomicUsize) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(format!("refund-run-{run}"))
}

#[tokio::test]
async fn call_runs_the_body_once_then_replays() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let call = Call::new(&store, SCOPE, key.as_str()).fingerprint(amount(250));

    let first = call.run(counted(&runs)).await.unwrap();
    let second = call.run(counted(&runs)).await.unwrap();

    assert_eq!(
        first,
        Outcome {
            value: "refund-run-1".to_owned(),
            disposition: Disposition::Executed
        }
    );
    assert!(!first.is_replayed());
    assert!(second.is_replayed());
    assert_eq!(second.into_value(), "refund-run-1");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn call_with_another_key_or_scope_runs_again() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let (key1, key2) = (key(1), key(2));

    Call::new(&store, SCOPE, key1.as_str())
        .run(counted(&runs))
        .await
        .unwrap();
    let other_key = Call::new(&store, SCOPE, key2.as_str())
        .run(counted(&runs))
        .await
        .unwrap();
    let other_scope = Call::new(&store, "programmatic.other", key1.as_str())
        .run(counted(&runs))
        .await
        .unwrap();
    assert!(!other_key.is_replayed());
    assert!(!other_scope.is_replayed());
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn call_with_a_different_fingerprint_is_payload_mismatch() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);

    Call::new(&store, SCOPE, key.as_str())
        .fingerprint(amount(250))
        .run(counted(&runs))
        .await
        .unwrap();
    let mismatch = Call::new(&store, SCOPE, key.as_str())
        .fingerprint(amount(999))
        .run(counted(&runs))
        .await;
    assert!(
        matches!(&mismatch, Err(Error::PayloadMismatch { scope }) if scope == SCOPE),
        "{mismatch:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn call_err_releases_the_key_and_a_retry_runs() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);
    // Reject mode: a claim left behind by the failed run would show up as `InFlight`.
    let call = Call::new(&store, SCOPE, key.as_str())
        .options(CallOptions::new().on_in_flight(OnInFlight::Reject));

    let failed = call
        .run(async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(Error::InvalidInput {
                reason: "bad".into(),
            })
        })
        .await;
    assert!(matches!(failed, Err(Error::InvalidInput { .. })));
    let retry = call.run(counted(&runs)).await.unwrap();
    assert_eq!(retry.value, "refund-run-2");
    assert!(!retry.is_replayed());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum RefundError {
    AlreadyRefunded { run: usize },
    Idempotency(String),
}

impl From<Error> for RefundError {
    fn from(error: Error) -> Self {
        RefundError::Idempotency(error.to_string())
    }
}

async fn refused(runs: &AtomicUsize) -> Result<String, RefundError> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    Err(RefundError::AlreadyRefunded { run })
}

#[tokio::test]
async fn run_caching_errors_replays_the_err() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let call = Call::new(&store, SCOPE, key.as_str());

    let first = observe(call.run_caching_errors(refused(&runs))).await;
    let second = observe(call.run_caching_errors(refused(&runs))).await;
    assert_eq!(first.0, Err(RefundError::AlreadyRefunded { run: 1 }));
    assert_eq!(first.1, Some(Disposition::Executed));
    assert_eq!(second.0, Err(RefundError::AlreadyRefunded { run: 1 }));
    assert_eq!(second.1, Some(Disposition::Replayed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn run_does_not_store_the_err_of_a_serializable_error_type() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let call = Call::new(&store, SCOPE, key.as_str());

    let first = call.run(refused(&runs)).await.map(|outcome| outcome.value);
    let second = call.run(refused(&runs)).await.map(|outcome| outcome.value);
    assert_eq!(first, Err(RefundError::AlreadyRefunded { run: 1 }));
    assert_eq!(second, Err(RefundError::AlreadyRefunded { run: 2 }));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn reject_policy_fails_a_duplicate_in_flight_at_once() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let release = Notify::new();
    let key = key(1);
    let call = Call::new(&store, SCOPE, key.as_str())
        .options(CallOptions::new().on_in_flight(OnInFlight::Reject));

    let (owner, duplicate) = tokio::join!(
        call.run(async {
            release.notified().await;
            counted(&runs).await
        }),
        async {
            let duplicate = call.run(counted(&runs)).await;
            release.notify_one();
            duplicate
        },
    );
    assert!(
        matches!(duplicate, Err(Error::InFlight { retry_after }) if retry_after <= Duration::from_secs(30)),
        "{duplicate:?}"
    );
    assert_eq!(owner.unwrap().value, "refund-run-1");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_policy_replays_the_in_flight_result_to_a_duplicate() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let call = Call::new(&store, SCOPE, key.as_str());

    let (owner, duplicate) = tokio::join!(
        call.run(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            counted(&runs).await
        }),
        call.run(counted(&runs)),
    );
    let (owner, duplicate) = (owner.unwrap(), duplicate.unwrap());
    assert!(!owner.is_replayed());
    assert!(duplicate.is_replayed());
    assert_eq!(duplicate.value, owner.value);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_bounds_how_long_a_duplicate_waits() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let call = Call::new(&store, SCOPE, key.as_str());
    let patient = call.options(CallOptions::new().wait_timeout(Duration::from_secs(1)));

    let (owner, duplicate) = tokio::join!(
        call.run(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            counted(&runs).await
        }),
        async {
            let started = Instant::now();
            (patient.run(counted(&runs)).await, started.elapsed())
        },
    );
    assert!(owner.is_ok());
    let (duplicate, waited) = duplicate;
    assert!(
        matches!(duplicate, Err(Error::InFlight { .. })),
        "{duplicate:?}"
    );
    assert_eq!(waited, Duration::from_secs(1));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A store whose backend is down: every operation fails with `Error::Store`.
struct DownStore;

fn down() -> Error {
    Error::store("test", "connection refused")
}

#[async_trait]
impl IdempotencyStore for DownStore {
    async fn claim(&self, _request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        Err(down())
    }

    async fn complete(&self, _lease: &Lease, _payload: Bytes, _ttl: Duration) -> Result<(), Error> {
        Err(down())
    }

    async fn release(&self, _lease: &Lease) -> Result<(), Error> {
        Err(down())
    }

    async fn extend(&self, _lease: &Lease, _lease_for: Duration) -> Result<(), Error> {
        Err(down())
    }

    fn release_in_background(&self, _lease: Lease) {}

    fn abandon_claim_in_background(&self, _request: &ClaimRequest<'_>) {}

    async fn purge_expired(&self) -> Result<u64, Error> {
        Err(down())
    }

    async fn inspect(&self, _: &str, _: &str) -> Result<RecordState, Error> {
        Err(down())
    }

    async fn forget(&self, _: &str, _: &str, _: Forget) -> Result<RecordState, Error> {
        Err(down())
    }
}

#[tokio::test]
async fn store_error_fails_closed_by_default_and_the_body_does_not_run() {
    let runs = AtomicUsize::new(0);
    let key = key(1);

    let result = Call::new(&DownStore, SCOPE, key.as_str())
        .run(counted(&runs))
        .await;
    assert!(
        matches!(
            &result,
            Err(Error::Store {
                backend: "test",
                ..
            })
        ),
        "{result:?}"
    );
    assert!(result.unwrap_err().is_retryable());
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let explicit = Call::new(&DownStore, SCOPE, key.as_str())
        .options(CallOptions::new().on_store_error(OnStoreError::FailClosed))
        .run(counted(&runs))
        .await;
    assert!(matches!(explicit, Err(Error::Store { .. })));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn store_error_with_fail_open_runs_the_body_unprotected() {
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let call = Call::new(&DownStore, SCOPE, key.as_str())
        .options(CallOptions::new().on_store_error(OnStoreError::FailOpen));

    let first = call.run(counted(&runs)).await.unwrap();
    let second = call.run(counted(&runs)).await.unwrap();
    assert_eq!(first.value, "refund-run-1");
    assert!(!first.is_replayed());
    // Nothing could be recorded, so a duplicate during the outage runs again.
    assert_eq!(second.value, "refund-run-2");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn observe_reports_executed_then_replayed() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let call = Call::new(&store, SCOPE, key.as_str());

    let (first, how_first) = observe(call.run(counted(&runs))).await;
    let (second, how_second) = observe(call.run(counted(&runs))).await;
    assert_eq!(how_first, Some(Disposition::Executed));
    assert_eq!(how_second, Some(Disposition::Replayed));
    assert_eq!(first.unwrap().value, second.unwrap().value);
}

#[tokio::test]
async fn observe_without_an_idempotent_call_reports_none() {
    let (value, how) = observe(async { 5 }).await;
    assert_eq!((value, how), (5, None));

    // A call rejected before running anything reports nothing either.
    let runs = AtomicUsize::new(0);
    let key = key(1);
    let (result, how) =
        observe(Call::new(&DownStore, SCOPE, key.as_str()).run(counted(&runs))).await;
    assert!(result.is_err());
    assert_eq!(how, None);
}

#[tokio::test]
async fn observe_reports_the_last_of_several_calls() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let (key1, key2) = (key(1), key(2));
    Call::new(&store, SCOPE, key1.as_str())
        .run(counted(&runs))
        .await
        .unwrap();

    let (_, how) = observe(async {
        Call::new(&store, SCOPE, key1.as_str())
            .run(counted(&runs))
            .await
            .unwrap();
        Call::new(&store, SCOPE, key2.as_str())
            .run(counted(&runs))
            .await
            .unwrap();
    })
    .await;
    assert_eq!(how, Some(Disposition::Executed));
}

#[tokio::test]
async fn options_builder_keeps_ttl_and_lease() {
    const OPTIONS: CallOptions = CallOptions::new()
        .ttl(Duration::from_secs(3600))
        .lease(Duration::from_secs(10));
    assert_eq!(OPTIONS.ttl_duration(), Duration::from_secs(3600));
    assert_eq!(OPTIONS.lease_duration(), Duration::from_secs(10));
    assert_eq!(CallOptions::default(), CallOptions::new());
    assert_eq!(CallOptions::new().lease_duration(), Duration::from_secs(30));
    assert_eq!(
        CallOptions::new().ttl_duration(),
        Duration::from_secs(24 * 60 * 60)
    );
}

#[idempotent(key = "id", store = store, skip = "runs", on_store_error = "fail_open")]
async fn refresh_cache(store: &DownStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[idempotent(key = "id", store = store, skip = "runs")]
async fn charge_closed(store: &DownStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[tokio::test]
async fn attribute_fail_open_runs_the_body_and_fail_closed_does_not() {
    let runs = AtomicUsize::new(0);
    assert_eq!(refresh_cache(&DownStore, &runs, 3).await.unwrap(), 3);
    assert_eq!(refresh_cache(&DownStore, &runs, 3).await.unwrap(), 3);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "fail-open runs every duplicate"
    );
    let closed = charge_closed(&DownStore, &runs, 3).await;
    assert!(matches!(closed, Err(Error::Store { .. })), "{closed:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
