//! The conformance suite must catch broken stores: each check below runs against a store with
//! one deliberate bug and must fail.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, ClaimRequest, Lease};
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
}

struct BrokenStore {
    inner: MemoryStore,
    bug: Bug,
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
            (_, claim) => claim,
        })
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
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

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.inner.purge_expired().await
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
async fn a_correct_store_passes_the_same_checks() {
    let suite = Conformance::new(Arc::new(MemoryStore::new()), "self-test-control");
    suite.rejects_payload_mismatch().await;
    suite.rejects_stale_owner_after_takeover().await;
    suite.takes_over_after_lease_expiry().await;
    suite.exclusive_claim_under_contention().await;
    suite.collapses_concurrent_duplicate_calls().await;
}
