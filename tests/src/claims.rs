//! Claims made directly on a store, as another caller (or a crashed one) would.

use std::time::Duration;

use idempotent_core::IdempotencyStore;
use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, ClaimRequest, Lease, OwnerId};

/// A claim request on `(scope, key)` by `owner` with the values most tests need: no
/// fingerprint ([`Fingerprint::NONE`], what a `Call` without one sends, so direct claims and
/// calls on one key agree), a 30 s lease and a 60 s ttl. A test that needs other values sets
/// them with struct update syntax: `ClaimRequest { lease, ..request(scope, key, owner) }`.
pub fn request<'a>(scope: &'a str, key: &'a str, owner: OwnerId) -> ClaimRequest<'a> {
    ClaimRequest {
        scope,
        key,
        fingerprint: Fingerprint::NONE,
        owner,
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(60),
    }
}

/// Claims with `request` and returns the lease; panics unless the claim was acquired.
pub async fn acquire<S>(store: &S, request: &ClaimRequest<'_>) -> Lease
where
    S: IdempotencyStore + ?Sized,
{
    match store.claim(request).await {
        Ok(Claim::Acquired(lease)) => lease,
        other => panic!(
            "expected to acquire {}/{}, got {other:?}",
            request.scope, request.key
        ),
    }
}
