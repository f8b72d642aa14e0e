//! What goes into a claim and what comes back: the request, the lease, the stored record.

use std::time::Duration;

use bytes::Bytes;

#[cfg(doc)]
use super::IdempotencyStore;
use super::owner::OwnerId;
#[cfg(doc)]
use crate::error::Error;
use crate::key::Fingerprint;

/// Everything a store needs to decide a claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The scope the key lives in (an annotated function's `scope`, or for HTTP the
    /// principal and the route).
    pub scope: &'a str,
    /// The idempotency key inside `scope`.
    pub key: &'a str,
    /// The fingerprint of the request; a live record with a different one is a mismatch.
    pub fingerprint: Fingerprint,
    /// Who is claiming.
    pub owner: OwnerId,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
    /// How long the record lives: the replay window once completed.
    pub ttl: Duration,
}

/// Proof of a claim: who holds `(scope, key)` and under which epoch.
///
/// `complete`, `release` and `extend` succeed only while the stored record is still in
/// progress with this owner and epoch; after a takeover they fail with
/// [`Error::LeaseLost`] and change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    scope: String,
    key: String,
    owner: OwnerId,
    epoch: u64,
}

impl Lease {
    /// Builds a lease; stores call this when a claim is acquired.
    pub fn new(
        scope: impl Into<String>,
        key: impl Into<String>,
        owner: OwnerId,
        epoch: u64,
    ) -> Self {
        Lease {
            scope: scope.into(),
            key: key.into(),
            owner,
            epoch,
        }
    }

    /// The scope of the claimed record.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The claimed key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The claiming owner.
    pub fn owner(&self) -> OwnerId {
        self.owner
    }

    /// The fencing token: strictly greater than the epoch of every earlier claim on this record.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// A completed record, returned by a claim so it can be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The opaque bytes the winner stored with [`IdempotencyStore::complete`].
    pub payload: Bytes,
    /// The epoch of the claim that completed it.
    pub epoch: u64,
    /// How long the record has left before its ttl ends, on the store's clock, as of the
    /// claim that read it; `None` when the store cannot tell (it answered from a copy). A cache
    /// in front of a store keeps a copy no longer than this, and none when it is `None`.
    pub expires_in: Option<Duration>,
}

/// The outcome of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The caller owns the key now and must complete, release or extend it.
    Acquired(Lease),
    /// A completed record exists: replay it.
    Completed(Record),
    /// Another owner holds a live claim.
    InFlight {
        /// Time left on that claim's lease.
        retry_after: Duration,
    },
    /// A live record exists with a different fingerprint.
    PayloadMismatch,
}

/// A [`ClaimRequest`] that owns its scope and key, for work that outlives the call.
#[derive(Debug, Clone)]
pub struct OwnedClaimRequest {
    /// The scope.
    pub scope: String,
    /// The key.
    pub key: String,
    /// The request fingerprint.
    pub fingerprint: Fingerprint,
    /// The owner that claimed.
    pub owner: OwnerId,
    /// The lease asked for.
    pub lease: Duration,
    /// The ttl asked for.
    pub ttl: Duration,
}

impl OwnedClaimRequest {
    /// Copies a borrowed request.
    pub fn new(request: &ClaimRequest<'_>) -> Self {
        OwnedClaimRequest {
            scope: request.scope.to_owned(),
            key: request.key.to_owned(),
            fingerprint: request.fingerprint,
            owner: request.owner,
            lease: request.lease,
            ttl: request.ttl,
        }
    }

    /// Borrows it back.
    pub fn as_request(&self) -> ClaimRequest<'_> {
        ClaimRequest {
            scope: &self.scope,
            key: &self.key,
            fingerprint: self.fingerprint,
            owner: self.owner,
            lease: self.lease,
            ttl: self.ttl,
        }
    }
}
