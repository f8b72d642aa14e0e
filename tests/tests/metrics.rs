#![cfg(feature = "metrics")]
//! With feature `metrics`, calls are counted by disposition, waits are counted, and store
//! operations are timed and their failures counted, through the `metrics` facade. Its own test
//! binary: the recorder is process-wide.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, RecordState};
use idempotent_core::{Call, CallOptions, Error, IdempotencyStore, MemoryStore, OnInFlight};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

/// A memory store whose completions fail, named like a backend of its own.
struct FailingCompletes(MemoryStore);

#[async_trait]
impl IdempotencyStore for FailingCompletes {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.0.claim(request).await
    }
    async fn complete(&self, _: &Lease, _: Bytes, _: Duration) -> Result<(), Error> {
        Err(Error::store("flaky", "connection reset"))
    }
    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.0.release(lease).await
    }
    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.0.extend(lease, lease_for).await
    }
    fn release_in_background(&self, lease: Lease) {
        self.0.release_in_background(lease);
    }
    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        self.0.abandon_claim_in_background(request);
    }
    async fn purge_expired(&self) -> Result<u64, Error> {
        self.0.purge_expired().await
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.0.inspect(scope, key).await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.0.forget(scope, key, mode).await
    }
    fn backend_name(&self) -> &'static str {
        "flaky"
    }
}

/// What the recorder holds, read once: reading drains histograms.
type Metrics = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

fn value<'a>(
    metrics: &'a Metrics,
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    metrics
        .iter()
        .find(|(key, _, _, _)| {
            key.kind() == kind
                && key.key().name() == name
                && labels.iter().all(|(label, expected)| {
                    key.key()
                        .labels()
                        .any(|l| l.key() == *label && l.value() == *expected)
                })
        })
        .map(|(_, _, _, value)| value)
}

fn counter(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(metrics, MetricKind::Counter, name, labels) {
        Some(DebugValue::Counter(count)) => *count,
        _ => 0,
    }
}

#[tokio::test]
async fn calls_waits_and_store_operations_are_measured() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");

    let store = Arc::new(MemoryStore::new());
    let call = Call::new(&*store, "metrics", "k");
    call.run(async { Ok::<_, Error>(1u8) }).await.unwrap();
    call.run(async { Ok::<_, Error>(1u8) }).await.unwrap();
    assert!(matches!(
        call.fingerprint(idempotent_core::key::Fingerprint::of_bytes(b"other"))
            .run(async { Ok::<_, Error>(1u8) })
            .await,
        Err(Error::PayloadMismatch { .. })
    ));

    // A duplicate that waits for the first call and replays its result.
    let slow = Call::new(&*store, "metrics", "slow");
    let (first, second) = tokio::join!(
        slow.run(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Error>(2u8)
        }),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            slow.run(async { Ok::<_, Error>(3u8) }).await
        }
    );
    assert_eq!((first.unwrap().value, second.unwrap().value), (2, 2));
    let rejected = Call::new(&*store, "metrics", "held")
        .options(CallOptions::new().on_in_flight(OnInFlight::Reject));
    let (_, refused) = tokio::join!(
        rejected.run(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, Error>(4u8)
        }),
        async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rejected.run(async { Ok::<_, Error>(5u8) }).await
        }
    );
    assert!(matches!(refused, Err(Error::InFlight { .. })));

    let flaky = FailingCompletes(MemoryStore::new());
    let failed = Call::new(&flaky, "metrics", "flaky")
        .run(async { Ok::<_, Error>(6u8) })
        .await;
    assert!(matches!(failed, Err(Error::Store { .. })));

    let snapshot: Metrics = snapshotter.snapshot().into_vec();
    let calls = |disposition| {
        counter(
            &snapshot,
            "idempotent_calls_total",
            &[("disposition", disposition)],
        )
    };
    assert_eq!(calls("executed"), 3, "k, slow and held ran their bodies");
    assert_eq!(calls("replayed"), 1);
    assert_eq!(calls("waited"), 1);
    assert_eq!(calls("mismatch"), 1);
    assert_eq!(calls("rejected"), 1);
    assert_eq!(calls("store_error"), 1);
    assert!(counter(&snapshot, "idempotent_waits_total", &[]) >= 1);

    // One try and two retries of the failing completion, each counted as a store error.
    assert_eq!(
        counter(
            &snapshot,
            "idempotent_store_errors_total",
            &[("store", "flaky"), ("operation", "complete")]
        ),
        3
    );
    match value(
        &snapshot,
        MetricKind::Histogram,
        "idempotent_store_operation_seconds",
        &[("store", "memory"), ("operation", "claim")],
    ) {
        Some(DebugValue::Histogram(samples)) => {
            assert!(
                samples.len() >= 8,
                "every claim is timed: {}",
                samples.len()
            );
        }
        other => panic!("no claim latency for the memory store: {other:?}"),
    }
}
