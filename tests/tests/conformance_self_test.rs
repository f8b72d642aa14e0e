//! The conformance suite must catch broken stores: each check below runs against a store with
//! one deliberate bug and must fail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, RecordState};
use idempotent_core::testing::Conformance;
use idempotent_core::{Error, IdempotencyStore, MemoryStore};

#[derive(Clone, Copy, Debug)]
enum Bug {
    /// Ignores fingerprints, so a different payload replays the first result.
    IgnoresFingerprint,
    /// Reports success for a stale owner's complete/release/extend.
    UnfencedWrites,
    /// Does not raise the epoch on takeover.
    EpochStuck,
    /// Lets a second claimer in while the first holds the key (check-then-act).
    NotExclusive,
    /// Counts epochs per record from 1, so they start over once a purge deleted the record.
    EpochsForgottenByPurge,
    /// Answers `LeaseLost` to a repeated complete of the lease that completed the record.
    CompleteOnlyOnce,
    /// Does nothing when asked to abandon a claim, leaving it held for its whole lease.
    AbandonIgnored,
}

struct BrokenStore {
    inner: MemoryStore,
    bug: Bug,
    /// `EpochsForgottenByPurge`: the epoch each key counts from, cleared by a purge.
    counters: Mutex<HashMap<(String, String), u64>>,
    /// `CompleteOnlyOnce`: the epochs completed so far.
    completed: Mutex<HashSet<u64>>,
}

#[async_trait]
impl IdempotencyStore for BrokenStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let mut request = *request;
        if let Bug::IgnoresFingerprint = self.bug {
            request.fingerprint = Fingerprint::NONE;
        }
        let claim = self.inner.claim(&request).await?;
        Ok(match (self.bug, claim) {
            (Bug::EpochStuck, Claim::Acquired(lease)) => {
                Claim::Acquired(Lease::new(lease.scope(), lease.key(), lease.owner(), 1))
            }
            (Bug::NotExclusive, Claim::InFlight { .. }) => {
                Claim::Acquired(Lease::new(request.scope, request.key, request.owner, 1))
            }
            (Bug::EpochsForgottenByPurge, Claim::Acquired(lease)) => {
                let mut counters = self.counters.lock().unwrap();
                let counter = counters
                    .entry((lease.scope().to_owned(), lease.key().to_owned()))
                    .or_insert(0);
                *counter += 1;
                Claim::Acquired(Lease::new(
                    lease.scope(),
                    lease.key(),
                    lease.owner(),
                    *counter,
                ))
            }
            (_, claim) => claim,
        })
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        if let Bug::CompleteOnlyOnce = self.bug
            && !self.completed.lock().unwrap().insert(lease.epoch())
        {
            return Err(Error::LeaseLost);
        }
        self.unfenced(self.inner.complete(lease, payload, ttl).await)
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.unfenced(self.inner.release(lease).await)
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.unfenced(self.inner.extend(lease, lease_for).await)
    }

    fn release_in_background(&self, lease: Lease) {
        self.inner.release_in_background(lease);
    }

    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        if !matches!(self.bug, Bug::AbandonIgnored) {
            self.inner.abandon_claim_in_background(request);
        }
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.counters.lock().unwrap().clear();
        self.inner.purge_expired().await
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.inner.inspect(scope, key).await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.inner.forget(scope, key, mode).await
    }
}

impl BrokenStore {
    fn unfenced(&self, result: Result<(), Error>) -> Result<(), Error> {
        match (self.bug, result) {
            (Bug::UnfencedWrites, Err(Error::LeaseLost)) => Ok(()),
            (_, result) => result,
        }
    }
}

fn suite(bug: Bug) -> Conformance {
    let store = BrokenStore {
        inner: MemoryStore::new(),
        bug,
        counters: Mutex::default(),
        completed: Mutex::default(),
    };
    Conformance::new(Arc::new(store), "self-test")
}

/// Runs one check in its own task and returns whether it failed (panicked).
async fn fails<F>(check: F) -> bool
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(check).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatch_check_catches_a_store_that_ignores_fingerprints() {
    let suite = suite(Bug::IgnoresFingerprint);
    assert!(fails(async move { suite.rejects_payload_mismatch().await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_check_catches_unfenced_writes() {
    let suite = suite(Bug::UnfencedWrites);
    assert!(fails(async move { suite.rejects_stale_owner_after_takeover().await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_check_catches_a_stuck_epoch() {
    let suite = suite(Bug::EpochStuck);
    assert!(fails(async move { suite.takes_over_after_lease_expiry().await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusivity_checks_catch_a_non_exclusive_claim() {
    let suite = suite(Bug::NotExclusive);
    let again = suite.clone();
    assert!(fails(async move { suite.exclusive_claim_under_contention().await }).await);
    assert!(fails(async move { again.collapses_concurrent_duplicate_calls().await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_check_catches_epochs_that_restart_after_a_purge() {
    let suite = suite(Bug::EpochsForgottenByPurge);
    assert!(fails(async move { suite.epochs_never_repeat_after_purge().await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_complete_check_catches_a_complete_that_is_not_idempotent() {
    let suite = suite(Bug::CompleteOnlyOnce);
    assert!(fails(async move { suite.repeated_complete_of_one_lease_is_harmless().await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_check_catches_a_store_that_ignores_abandoned_claims() {
    let suite = suite(Bug::AbandonIgnored);
    assert!(fails(async move { suite.abandoned_claim_frees_key().await }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_store_passes_the_same_checks() {
    let suite = Conformance::new(Arc::new(MemoryStore::new()), "self-test-control");
    suite.rejects_payload_mismatch().await;
    suite.rejects_stale_owner_after_takeover().await;
    suite.takes_over_after_lease_expiry().await;
    suite.exclusive_claim_under_contention().await;
    suite.collapses_concurrent_duplicate_calls().await;
    suite.epochs_never_repeat_after_purge().await;
    suite.repeated_complete_of_one_lease_is_harmless().await;
    suite.abandoned_claim_frees_key().await;
}
