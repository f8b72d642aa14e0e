//! Claims: exclusivity, replay, mismatch, in flight, retried claims, payloads and keys of
//! every shape, and 1,000 duplicate calls through the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Barrier;

use super::{Conformance, LONG};
use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, OwnerId};
use crate::{Call, CallOptions, OnInFlight};

impl Conformance {
    /// 200 concurrent claimers of one key: exactly one acquires, the rest see it in flight.
    pub async fn exclusive_claim_under_contention(&self) {
        const CLAIMERS: usize = 200;
        let scope = Arc::new(self.scope("exclusive"));
        let barrier = Arc::new(Barrier::new(CLAIMERS));
        let acquired = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(CLAIMERS);
        for _ in 0..CLAIMERS {
            let (suite, scope, barrier) = (self.clone(), scope.clone(), barrier.clone());
            let (acquired, in_flight) = (acquired.clone(), in_flight.clone());
            tasks.push(tokio::spawn(async move {
                let request = suite.request(&scope, "k", OwnerId::new());
                barrier.wait().await;
                match suite.claim(&request).await {
                    Claim::Acquired(_) => acquired.fetch_add(1, Ordering::SeqCst),
                    Claim::InFlight { .. } => in_flight.fetch_add(1, Ordering::SeqCst),
                    other => panic!("unexpected claim outcome under contention: {other:?}"),
                };
            }));
        }
        for task in tasks {
            if let Err(error) = task.await {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        assert_eq!(
            acquired.load(Ordering::SeqCst),
            1,
            "exactly one of {CLAIMERS} concurrent claimers must acquire"
        );
        assert_eq!(in_flight.load(Ordering::SeqCst), CLAIMERS - 1);
    }

    /// A completed record is returned, payload, epoch and time left, to the next claim.
    pub async fn replays_completed_record(&self) {
        let scope = self.scope("replay");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(lease.epoch() > 0, "an epoch is never 0");
        self.complete(&lease, b"first result", LONG).await;
        for _ in 0..2 {
            match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
                Claim::Completed(record) => {
                    assert_eq!(&record.payload[..], b"first result");
                    assert_eq!(record.epoch, lease.epoch());
                    if let Some(left) = record.expires_in {
                        assert!(
                            left <= LONG && left > LONG - Duration::from_secs(30),
                            "a record completed for {LONG:?} has {left:?} left"
                        );
                    }
                }
                other => panic!("a completed key must replay, got {other:?}"),
            }
        }
        // Falsy payloads round-trip like any other.
        let lease = self
            .acquire(&self.request(&scope, "empty", OwnerId::new()))
            .await;
        self.complete(&lease, b"", LONG).await;
        match self
            .claim(&self.request(&scope, "empty", OwnerId::new()))
            .await
        {
            Claim::Completed(record) => assert!(record.payload.is_empty()),
            other => panic!("an empty payload must replay, got {other:?}"),
        }
    }

    /// A live record with a different fingerprint is a mismatch, in progress or completed.
    pub async fn rejects_payload_mismatch(&self) {
        let scope = self.scope("mismatch");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        let other = ClaimRequest {
            fingerprint: Fingerprint::of_bytes(b"different"),
            ..self.request(&scope, "k", OwnerId::new())
        };
        assert_eq!(
            self.claim(&other).await,
            Claim::PayloadMismatch,
            "in progress"
        );
        self.complete(&lease, b"done", LONG).await;
        assert_eq!(
            self.claim(&other).await,
            Claim::PayloadMismatch,
            "completed"
        );
    }

    /// A live claim is reported in flight, with the time left on its lease.
    pub async fn reports_in_flight_with_retry_after(&self) {
        let scope = self.scope("in-flight");
        let lease_for = Duration::from_secs(5);
        let request = ClaimRequest {
            lease: lease_for,
            ..self.request(&scope, "k", OwnerId::new())
        };
        self.acquire(&request).await;
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { retry_after } => assert!(
                retry_after > Duration::ZERO && retry_after <= lease_for,
                "retry_after {retry_after:?} must be within the lease {lease_for:?}"
            ),
            other => panic!("a live claim must be in flight, got {other:?}"),
        }
    }

    /// The same owner claiming again (its first answer was lost) gets the same epoch.
    pub async fn same_owner_claim_retry_keeps_epoch(&self) {
        let scope = self.scope("same-owner");
        let owner = OwnerId::new();
        let first = self.acquire(&self.request(&scope, "k", owner)).await;
        let again = self.acquire(&self.request(&scope, "k", owner)).await;
        assert_eq!(first, again, "a retried claim must return the same lease");
    }

    /// A 1 MiB payload is stored and replayed unchanged.
    pub async fn round_trips_large_payloads(&self) {
        let scope = self.scope("large");
        let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        if let Err(error) = self
            .store
            .complete(&lease, Bytes::from(payload.clone()), LONG)
            .await
        {
            panic!("complete with a 1 MiB payload failed: {error} ({error:?})");
        }
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::Completed(record) => assert!(record.payload[..] == payload[..]),
            other => panic!("expected the large record, got {other:?}"),
        }
    }

    /// Keys and scopes with unicode, separators, braces, spaces and 1 KiB length are kept
    /// apart and found again.
    pub async fn handles_unusual_keys_and_scopes(&self) {
        let base = self.scope("unusual");
        let long_key = "k".repeat(1024);
        let long_scope = format!("{base}:{}", "s".repeat(1024));
        let cases: Vec<(String, String)> = vec![
            (format!("{base}:a:b"), "c".to_owned()),
            (format!("{base}:a"), "b:c".to_owned()),
            (format!("{base}:{{tag}}"), "{tag}".to_owned()),
            (format!("{base}:ünïcødé 中文 😀"), "ключ 🔑".to_owned()),
            (format!("{base}: spaces "), " a key with spaces ".to_owned()),
            (format!("{base}:long"), long_key),
            (long_scope, "k".to_owned()),
            (format!("{base}:nul"), "a\0b".to_owned()),
        ];
        for (index, (scope, key)) in cases.iter().enumerate() {
            let lease = self
                .acquire(&self.request(scope, key, OwnerId::new()))
                .await;
            let payload = Bytes::from(index.to_string());
            if let Err(error) = self.store.complete(&lease, payload, LONG).await {
                panic!("complete for scope {scope:?} key {key:?} failed: {error}");
            }
        }
        for (index, (scope, key)) in cases.iter().enumerate() {
            match self.claim(&self.request(scope, key, OwnerId::new())).await {
                Claim::Completed(record) => assert_eq!(
                    &record.payload[..],
                    index.to_string().as_bytes(),
                    "scope {scope:?} key {key:?} must keep its own record"
                ),
                other => panic!("scope {scope:?} key {key:?}: expected its record, got {other:?}"),
            }
        }
    }

    /// 1,000 concurrent calls with one key through the engine: one execution, 1,000 equal
    /// results.
    pub async fn collapses_concurrent_duplicate_calls(&self) {
        const CALLS: usize = 1000;
        let scope = Arc::new(self.scope("collapse"));
        let runs = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(CALLS));
        let options = CallOptions::new()
            .lease(Duration::from_secs(30))
            .on_in_flight(OnInFlight::Wait);
        let mut tasks = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let (store, scope, runs, barrier) = (
                self.store.clone(),
                scope.clone(),
                runs.clone(),
                barrier.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                Call::new(&*store, &scope, "k")
                    .options(options)
                    .run(async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<u64, Error>(42)
                    })
                    .await
            }));
        }
        let mut replayed = 0;
        for task in tasks {
            match task.await {
                Ok(Ok(outcome)) => {
                    assert_eq!(outcome.value, 42);
                    replayed += usize::from(outcome.is_replayed());
                }
                Ok(Err(error)) => panic!("a duplicate call failed: {error} ({error:?})"),
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the body must run exactly once"
        );
        assert_eq!(replayed, CALLS - 1);
    }
}
