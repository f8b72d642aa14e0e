//! The storage contract every backend keeps.
//!
//! A store keeps one record per `(scope, key)`. A record is in progress (claimed by an owner
//! until its lease runs out), completed (holding an opaque payload to replay), or released
//! (a tombstone that remembers the epoch). Every record carries the request fingerprint it was
//! claimed with and an expiry. See [`IdempotencyStore::claim`] for the decision table.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::key::Fingerprint;

/// Identifies one attempt to run a call. Unique across processes (64 random bits per process
/// plus a per-process counter), so a store can tell "my own claim, retried" from "someone
/// else's claim".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerId(u128);

impl OwnerId {
    /// A fresh owner id, never returned before by this process.
    pub fn new() -> Self {
        static PROCESS_SEED: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = *PROCESS_SEED.get_or_init(random_seed);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        OwnerId((u128::from(seed) << 64) | u128::from(count))
    }

    /// Rebuilds an owner id read back from a store.
    pub const fn from_u128(value: u128) -> Self {
        OwnerId(value)
    }

    /// The id as a number, for stores that persist it.
    pub const fn as_u128(&self) -> u128 {
        self.0
    }
}

impl Default for OwnerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerId({:032x})", self.0)
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// 64 bits that differ between processes, from the standard library's randomly keyed hasher
/// mixed with the process id and the clock (no extra dependency for randomness).
fn random_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}

/// Everything a store needs to decide a claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The namespace the key lives in (function namespace, or HTTP principal and route).
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
    /// | none, released, or expired (past its ttl) | `Acquired`, epoch = previous epoch + 1 (1 for a new record) |
    /// | in progress by `request.owner` (a retried claim) | `Acquired` with the same epoch, lease renewed |
    /// | in progress, lease live, fingerprint differs | `PayloadMismatch` |
    /// | in progress, lease live | `InFlight { retry_after }` |
    /// | in progress, lease expired | `Acquired` (takeover), epoch + 1 |
    /// | completed, fingerprint differs | `PayloadMismatch` |
    /// | completed | `Completed(record)` |
    ///
    /// A record that exists but cannot be read is an error, never "absent".
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error>;

    /// Stores `payload` as the completed result, replayable for `ttl`. Compare-and-set on the
    /// lease's owner and epoch: fails with [`Error::LeaseLost`] if the record is no longer this
    /// lease's in-progress claim.
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

    /// Removes records whose ttl has passed; returns how many were removed.
    async fn purge_expired(&self) -> Result<u64, Error>;

    /// Waits until `(scope, key)` may have changed, or `max_wait` passes, whichever is first.
    /// Used between claims while another owner holds the key. The default sleeps for
    /// `max_wait`; stores that can observe changes wake up earlier. Spurious wake-ups are fine.
    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        let _ = (scope, key);
        tokio::time::sleep(max_wait).await;
    }
}

/// Runs `store.release(&lease)` on the current tokio runtime without waiting for it: the usual
/// body of [`IdempotencyStore::release_in_background`] for a store whose handle is cheap to
/// clone. With no runtime it does nothing, and the claim expires with its lease. A lease that
/// was already lost has nothing to release; any other failure is logged.
pub fn spawn_release<S>(store: S, lease: Lease)
where
    S: IdempotencyStore + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        match store.release(&lease).await {
            Ok(()) | Err(Error::LeaseLost) => {}
            Err(error) => tracing::warn!(
                scope = lease.scope(),
                key = lease.key(),
                %error,
                "could not release the claim; it expires with its lease"
            ),
        }
    });
}
