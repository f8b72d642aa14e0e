//! The storage contract every backend keeps.
//!
//! A store keeps one record per `(scope, key)`. A record is in progress (claimed by an owner
//! until its lease runs out), completed (holding an opaque payload to replay), or released
//! (a tombstone that remembers the epoch). Every record carries the request fingerprint it was
//! claimed with and an expiry. See [`IdempotencyStore::claim`] for the decision table, and
//! [`IdempotencyStore::inspect`] and [`IdempotencyStore::forget`] for one record by hand.

mod background;
pub(crate) mod decision;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod encoding;
mod epoch;
mod forward;
#[cfg(feature = "sqlite")]
pub(crate) mod notify;
mod owner;
pub(crate) mod records;
mod request;
pub(crate) mod time;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) use background::spawned_background_work;
pub use background::{spawn_abandon, spawn_release};
pub use epoch::{next_epoch, system_clock_micros};
pub use owner::OwnerId;
pub use records::{Forget, RecordState};
pub use request::{Claim, ClaimRequest, Lease, OwnedClaimRequest, Record};

/// A backend that keeps idempotency records.
///
/// Object safe: `Arc<dyn IdempotencyStore>` works. Implementations must decide every state
/// change in one atomic step (a locked map entry, a Lua script, a single SQL statement), never
/// check-then-act, and compute deadlines on the store's own clock.
///
/// [`testing`](crate#testing) has a conformance suite for custom stores.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `(scope, key)`. The decision, atomically:
    ///
    /// | stored record | result |
    /// |---|---|
    /// | none, released, or expired (past its ttl) | `Acquired`, with a new epoch (see below) |
    /// | in progress by `request.owner` (a retried claim) | `Acquired` with the same epoch, lease renewed |
    /// | in progress, lease live, fingerprint differs | `PayloadMismatch` |
    /// | in progress, lease live | `InFlight { retry_after }` |
    /// | in progress, lease expired | `Acquired` (takeover), with a new epoch |
    /// | completed, fingerprint differs | `PayloadMismatch` |
    /// | completed | `Completed(record)`, with the time the record has left |
    ///
    /// A new epoch is [`next_epoch`]`(previous, now)`: above the record's previous epoch and
    /// at least the store's clock in microseconds, so epochs of one key never repeat, even
    /// after the record was purged, swept or forgotten by a restart.
    ///
    /// A new claim's record lives at least one lease: its expiry is `now + max(ttl, lease)`,
    /// so a claim is never purged while its lease holds.
    ///
    /// A record that exists but cannot be read is an error, never "absent".
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error>;

    /// Stores `payload` as the completed result, replayable for `ttl`. Compare-and-set on the
    /// lease's owner and epoch: fails with [`Error::LeaseLost`] if the record is no longer this
    /// lease's in-progress claim. Completing again a record this same lease completed (a retry
    /// whose first answer was lost) succeeds and leaves the stored result as it is.
    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error>;

    /// Gives the key up so the next claim acquires it (keeping the epoch). Compare-and-set like
    /// [`complete`](Self::complete).
    async fn release(&self, lease: &Lease) -> Result<(), Error>;

    /// Renews the lease to `lease_for` from now (heartbeat). Compare-and-set like
    /// [`complete`](Self::complete).
    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error>;

    /// Releases without awaiting, for a call that was cancelled or panicked and cannot await.
    /// Must not block or panic; with no async runtime available it may do nothing, leaving the
    /// claim to expire with its lease.
    fn release_in_background(&self, lease: Lease);

    /// Gives up, without awaiting, a claim whose answer never arrived: the call was cancelled
    /// while `claim(request)` was on the wire, so the store may or may not have granted it,
    /// and nobody holds the lease. Must not block or panic.
    ///
    /// The usual body is [`spawn_abandon`]: it claims again as the same owner (which, by the
    /// retried-claim rule, returns the same lease if the first claim was granted) and releases
    /// what it gets, so a duplicate does not wait a whole lease for a claim nobody holds.
    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>);

    /// Removes records whose ttl has passed; returns how many were removed.
    async fn purge_expired(&self) -> Result<u64, Error>;

    /// Reads the record of `(scope, key)` without changing it, for operators and tools: in
    /// progress (owner, epoch, lease left), completed (payload, time left), released, or
    /// absent. A record past its ttl is absent, as it is for a claim. A record that exists
    /// but cannot be read is [`Error::Decode`], never "absent".
    ///
    /// The record of an annotated call is at its scope and the key that
    /// [`IdempotencyKey::builder`](crate::key::IdempotencyKey::builder) computes from the
    /// scope and the call's key parts, in order (see
    /// [the attribute's reference](crate::idempotent#finding-a-calls-record)).
    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error>;

    /// Forgets the record of `(scope, key)`, so that the next call runs the body again (to
    /// drop a bad stored result, or a claim whose holder is known to be gone). Returns what the
    /// record was; forgetting an absent or released record changes nothing.
    ///
    /// While a live lease holds the record, [`Forget::UnlessLeased`] refuses with
    /// [`Error::InFlight`] and changes nothing; [`Forget::EvenIfLeased`] forgets it anyway,
    /// and the holder's later `complete`, `release` and `extend` fail with
    /// [`Error::LeaseLost`]. Atomic like every other change. The key's epochs keep increasing:
    /// the next claim's epoch is above the forgotten record's. A record that cannot be read is
    /// [`Error::Decode`] and is left as it is.
    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error>;

    /// A short name for the kind of store, such as `"memory"` or `"postgres"`, for metrics and
    /// logs. The default, `"custom"`, suits a store of your own.
    fn backend_name(&self) -> &'static str {
        "custom"
    }

    /// Waits until `(scope, key)` may have changed, or `max_wait` passes, whichever is first.
    /// Used between claims while another owner holds the key. The default sleeps for
    /// `max_wait`; stores that can observe changes wake up earlier. Spurious wake-ups are fine.
    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        let _ = (scope, key);
        tokio::time::sleep(max_wait).await;
    }
}
