//! A store that owns its clean-up.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, RecordState};
use idempotent_core::{Error, IdempotencyStore};

/// A store that keeps a clean-up guard (dropping test tables, deleting keys) alive for as
/// long as the store, so the conformance suite's stores clean up after themselves.
pub struct Guarded<S> {
    store: S,
    _guard: Box<dyn Send + Sync>,
}

impl<S> Guarded<S> {
    /// Wraps `store`; `guard` is dropped with it.
    pub fn new(store: S, guard: impl Send + Sync + 'static) -> Self {
        Guarded {
            store,
            _guard: Box::new(guard),
        }
    }

    /// The store inside.
    pub fn store(&self) -> &S {
        &self.store
    }
}

#[async_trait]
impl<S: IdempotencyStore> IdempotencyStore for Guarded<S> {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.store.claim(request).await
    }
    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        self.store.complete(lease, payload, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.store.release(lease).await
    }
    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.store.extend(lease, lease_for).await
    }
    fn release_in_background(&self, lease: Lease) {
        self.store.release_in_background(lease);
    }
    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        self.store.abandon_claim_in_background(request);
    }
    async fn purge_expired(&self) -> Result<u64, Error> {
        self.store.purge_expired().await
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.store.inspect(scope, key).await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.store.forget(scope, key, mode).await
    }
    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        self.store.wait_for_change(scope, key, max_wait).await;
    }
}
