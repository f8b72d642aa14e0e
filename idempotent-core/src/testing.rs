//! The conformance suite every [`IdempotencyStore`] runs: one async function per clause of the
//! contract (see [`IdempotencyStore::claim`]). Public so that custom stores can run it too.
//!
//! Each check panics with a message naming the clause when the store breaks it. Checks use
//! real time with short leases (a store computes deadlines on its own clock, which a paused
//! tokio clock cannot move), and a fresh scope each, so runs can repeat and overlap against a
//! shared server.
//!
//! ```
//! use std::sync::Arc;
//! use idempotent_core::MemoryStore;
//! use idempotent_core::testing::Conformance;
//!
//! # #[tokio::main]
//! # async fn main() {
//! Conformance::new(Arc::new(MemoryStore::new()), "docs").run_all().await;
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Barrier;

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, OwnerId};
use crate::{Call, CallOptions, OnInFlight};

/// The conformance suite for one store.
#[derive(Clone)]
pub struct Conformance {
    store: Arc<dyn IdempotencyStore>,
    prefix: String,
    short_lease: Duration,
}

impl std::fmt::Debug for Conformance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conformance")
            .field("prefix", &self.prefix)
            .field("short_lease", &self.short_lease)
            .finish_non_exhaustive()
    }
}

const LONG: Duration = Duration::from_secs(60);

impl Conformance {
    /// A suite for `store`. `prefix` starts every scope the checks use (add a per-run unique
    /// part when several runs share one server).
    pub fn new(store: Arc<dyn IdempotencyStore>, prefix: &str) -> Self {
        Conformance {
            store,
            prefix: format!("{prefix}:{}", OwnerId::new()),
            short_lease: Duration::from_millis(300),
        }
    }

    /// The lease used where a check waits for expiry (default 300 ms). Raise it for stores
    /// whose round trips are slow compared with it.
    pub fn short_lease(mut self, lease: Duration) -> Self {
        self.short_lease = lease;
        self
    }

    /// Runs every check, one after the other.
    pub async fn run_all(&self) {
        crate::__conformance_checks!(__conformance_run_all(self));
    }

    fn scope(&self, check: &str) -> String {
        format!("{}:{check}", self.prefix)
    }

    fn request<'a>(&self, scope: &'a str, key: &'a str, owner: OwnerId) -> ClaimRequest<'a> {
        ClaimRequest {
            scope,
            key,
            fingerprint: Fingerprint::of_bytes(b"request"),
            owner,
            lease: LONG,
            ttl: LONG,
        }
    }

    async fn claim(&self, request: &ClaimRequest<'_>) -> Claim {
        match self.store.claim(request).await {
            Ok(claim) => claim,
            Err(error) => panic!("claim failed: {error} ({error:?})"),
        }
    }

    async fn acquire(&self, request: &ClaimRequest<'_>) -> Lease {
        match self.claim(request).await {
            Claim::Acquired(lease) => lease,
            other => panic!("expected to acquire a fresh key, got {other:?}"),
        }
    }

    async fn complete(&self, lease: &Lease, payload: &'static [u8], ttl: Duration) {
        if let Err(error) = self
            .store
            .complete(lease, Bytes::from_static(payload), ttl)
            .await
        {
            panic!("complete by the current owner failed: {error} ({error:?})");
        }
    }

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

    /// After its lease expires, a claim is taken over with a higher epoch.
    pub async fn takes_over_after_lease_expiry(&self) {
        let scope = self.scope("takeover");
        let first = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        let second = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(
            second.epoch() > first.epoch(),
            "takeover epoch {} must exceed {}",
            second.epoch(),
            first.epoch()
        );
    }

    /// After a takeover, the stale owner's complete, release and extend fail with `LeaseLost`
    /// and change nothing.
    pub async fn rejects_stale_owner_after_takeover(&self) {
        let scope = self.scope("fencing");
        let stale = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        let current = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;

        let stale_complete = self
            .store
            .complete(&stale, Bytes::from_static(b"stale"), LONG)
            .await;
        assert!(
            matches!(stale_complete, Err(Error::LeaseLost)),
            "stale complete: {stale_complete:?}"
        );
        let stale_release = self.store.release(&stale).await;
        assert!(
            matches!(stale_release, Err(Error::LeaseLost)),
            "stale release: {stale_release:?}"
        );
        let stale_extend = self.store.extend(&stale, LONG).await;
        assert!(
            matches!(stale_extend, Err(Error::LeaseLost)),
            "stale extend: {stale_extend:?}"
        );
        self.store.release_in_background(stale.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;

        // The current owner's claim is intact...
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { .. } => {}
            other => panic!("the new owner's claim must survive the stale owner, got {other:?}"),
        }
        // ...and its result is the one replayed.
        self.complete(&current, b"current", LONG).await;
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::Completed(record) => {
                assert_eq!(&record.payload[..], b"current");
                assert_eq!(record.epoch, current.epoch());
            }
            other => panic!("expected the current owner's record, got {other:?}"),
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

    /// Extending keeps a claim alive past its original lease.
    pub async fn heartbeat_extends_lease(&self) {
        let scope = self.scope("heartbeat");
        let lease_for = self.short_lease;
        let lease = self
            .acquire(&ClaimRequest {
                lease: lease_for,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        for _ in 0..6 {
            tokio::time::sleep(lease_for / 3).await;
            if let Err(error) = self.store.extend(&lease, lease_for).await {
                panic!("extend by the owner failed: {error} ({error:?})");
            }
        }
        // Two full leases have passed since the claim; it must still be held.
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { .. } => {}
            other => panic!("an extended claim must still be in flight, got {other:?}"),
        }
        self.complete(&lease, b"kept", LONG).await;
    }

    /// A released key is acquired by the next claim, with a higher epoch.
    pub async fn release_lets_next_claim_acquire(&self) {
        let scope = self.scope("release");
        let first = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        if let Err(error) = self.store.release(&first).await {
            panic!("release by the owner failed: {error} ({error:?})");
        }
        let second = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(
            second.epoch() > first.epoch(),
            "epochs keep counting after a release"
        );
    }

    /// `release_in_background` frees the key soon, without being awaited.
    pub async fn release_in_background_frees_key(&self) {
        let scope = self.scope("background-release");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.store.release_in_background(lease);
        for _ in 0..100 {
            if let Claim::Acquired(_) = self.claim(&self.request(&scope, "k", OwnerId::new())).await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("release_in_background did not free the key within 2 s");
    }

    /// A completed record is replayed for its ttl, then the key can be claimed again.
    pub async fn completed_record_expires_after_ttl(&self) {
        let scope = self.scope("ttl");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.complete(&lease, b"short-lived", self.short_lease)
            .await;
        assert!(matches!(
            self.claim(&self.request(&scope, "k", OwnerId::new())).await,
            Claim::Completed(_)
        ));
        tokio::time::sleep(self.short_lease * 2).await;
        let again = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(again.epoch() > lease.epoch());
    }

    /// An owner whose lease ran out but was not taken over may still complete.
    pub async fn complete_after_lease_expiry_without_takeover(&self) {
        let scope = self.scope("late-complete");
        let lease = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        self.complete(&lease, b"late", LONG).await;
        assert!(matches!(
            self.claim(&self.request(&scope, "k", OwnerId::new())).await,
            Claim::Completed(_)
        ));
    }

    /// `purge_expired` removes expired records and reports how many.
    pub async fn purges_expired_records(&self) {
        let scope = self.scope("purge");
        for key in ["a", "b", "c"] {
            let lease = self
                .acquire(&self.request(&scope, key, OwnerId::new()))
                .await;
            self.complete(&lease, b"x", self.short_lease).await;
        }
        tokio::time::sleep(self.short_lease * 2).await;
        let removed = match self.store.purge_expired().await {
            Ok(removed) => removed,
            Err(error) => panic!("purge failed: {error} ({error:?})"),
        };
        // Other runs sharing the store may have expired records too.
        assert!(removed >= 3, "purge removed {removed}, expected at least 3");
        for key in ["a", "b", "c"] {
            self.acquire(&self.request(&scope, key, OwnerId::new()))
                .await;
        }
    }

    /// Epochs of one key never repeat: across release, expiry and a purge that deleted the
    /// record (nothing is left to count from, so the store's clock must carry them).
    pub async fn epochs_never_repeat_after_purge(&self) {
        let scope = self.scope("epochs");
        let mut seen = Vec::new();
        let first = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        seen.push(first.epoch());
        if let Err(error) = self.store.release(&first).await {
            panic!("release by the owner failed: {error} ({error:?})");
        }
        let second = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        seen.push(second.epoch());
        self.complete(&second, b"short-lived", self.short_lease)
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        if let Err(error) = self.store.purge_expired().await {
            panic!("purge failed: {error} ({error:?})");
        }
        let third = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        seen.push(third.epoch());
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "epochs must grow across release, expiry and purge: {seen:?}"
        );
    }

    /// Completing again with the lease that completed the record (a retry whose first answer
    /// was lost) succeeds and keeps the first result.
    pub async fn repeated_complete_of_one_lease_is_harmless(&self) {
        let scope = self.scope("complete-twice");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.complete(&lease, b"first", LONG).await;
        let again = self
            .store
            .complete(&lease, Bytes::from_static(b"second"), LONG)
            .await;
        assert!(
            again.is_ok(),
            "a repeated complete of the same lease must succeed: {again:?}"
        );
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::Completed(record) => assert_eq!(&record.payload[..], b"first"),
            other => panic!("expected the first result, got {other:?}"),
        }
        // A lease of the same owner with another epoch completed nothing.
        let other_epoch = Lease::new(lease.scope(), lease.key(), lease.owner(), lease.epoch() + 1);
        let stale = self
            .store
            .complete(&other_epoch, Bytes::from_static(b"other"), LONG)
            .await;
        assert!(
            matches!(stale, Err(Error::LeaseLost)),
            "another epoch's complete: {stale:?}"
        );
    }

    /// `abandon_claim_in_background` gives up a claim whose answer was lost, so the next
    /// caller does not wait a whole lease for a claim nobody holds.
    pub async fn abandoned_claim_frees_key(&self) {
        let scope = self.scope("abandon");
        let request = self.request(&scope, "k", OwnerId::new());
        // The store granted the claim, but the caller never saw the answer.
        self.acquire(&request).await;
        self.store.abandon_claim_in_background(&request);
        // Abandoning a claim that was never granted leaves the key claimable too.
        let never_sent = self.request(&scope, "never-sent", OwnerId::new());
        self.store.abandon_claim_in_background(&never_sent);
        for key in ["k", "never-sent"] {
            let mut freed = false;
            for _ in 0..100 {
                if let Claim::Acquired(_) =
                    self.claim(&self.request(&scope, key, OwnerId::new())).await
                {
                    freed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                freed,
                "abandon_claim_in_background did not free `{key}` within 2 s"
            );
        }
    }

    /// A new claim's record lives at least one lease, whatever its ttl: purging never removes
    /// a claim whose lease still holds.
    pub async fn record_lives_at_least_one_lease(&self) {
        let scope = self.scope("ttl-below-lease");
        let request = ClaimRequest {
            ttl: Duration::from_millis(1),
            ..self.request(&scope, "k", OwnerId::new())
        };
        self.acquire(&request).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(error) = self.store.purge_expired().await {
            panic!("purge failed: {error} ({error:?})");
        }
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { .. } => {}
            other => panic!("a claim must outlive a ttl shorter than its lease, got {other:?}"),
        }
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

    /// A stored payload the caller cannot decode is `Error::Decode`, and the body does not
    /// run again.
    pub async fn undecodable_record_is_an_error(&self) {
        let scope = self.scope("undecodable");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.complete(&lease, b"\x01{not json", LONG).await;
        let runs = AtomicUsize::new(0);
        let result = Call::new(&*self.store, &scope, "k")
            .fingerprint(Fingerprint::of_bytes(b"request"))
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, Error>(1)
            })
            .await;
        assert!(
            matches!(result, Err(Error::Decode { .. })),
            "expected Error::Decode, got {result:?}"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "the body must not run again"
        );
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

/// Generates one `#[tokio::test]` per conformance check for a store, so each clause passes or
/// fails on its own line. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
///
/// `$make` is an async expression evaluated in each test that yields
/// `Option<Arc<dyn IdempotencyStore>>`; `None` skips the test (for example when the backend's
/// service is not reachable and not required).
///
/// ```
/// use std::sync::Arc;
/// use idempotent_core::{IdempotencyStore, MemoryStore};
///
/// idempotent_core::store_conformance_tests!(memory, async {
///     Some(Arc::new(MemoryStore::new()) as Arc<dyn IdempotencyStore>)
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn suite() -> ::core::option::Option<$crate::testing::Conformance> {
                let store: ::core::option::Option<::std::sync::Arc<dyn $crate::IdempotencyStore>> =
                    $make.await;
                store.map(|store| {
                    $crate::testing::Conformance::new(store, ::core::stringify!($name))
                })
            }

            $crate::__conformance_checks! { __conformance_test_fns() }
        }
    };
}

/// The one list of conformance checks, in the order [`Conformance::run_all`] runs them. Calls
/// `$crate::<callback>!(<args>; <check>, <check>, ...)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($callback:ident($($args:tt)*)) => {
        $crate::$callback! { $($args)*;
            exclusive_claim_under_contention,
            replays_completed_record,
            rejects_payload_mismatch,
            reports_in_flight_with_retry_after,
            takes_over_after_lease_expiry,
            rejects_stale_owner_after_takeover,
            same_owner_claim_retry_keeps_epoch,
            heartbeat_extends_lease,
            release_lets_next_claim_acquire,
            release_in_background_frees_key,
            completed_record_expires_after_ttl,
            complete_after_lease_expiry_without_takeover,
            purges_expired_records,
            epochs_never_repeat_after_purge,
            repeated_complete_of_one_lease_is_harmless,
            abandoned_claim_frees_key,
            record_lives_at_least_one_lease,
            round_trips_large_payloads,
            handles_unusual_keys_and_scopes,
            undecodable_record_is_an_error,
            collapses_concurrent_duplicate_calls
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_run_all {
    ($suite:expr; $($check:ident),*) => {
        $( $suite.$check().await; )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    (; $($check:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let ::core::option::Option::Some(suite) = suite().await {
                    suite.$check().await;
                }
            }
        )*
    };
}
