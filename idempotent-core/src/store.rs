//! The storage contract every backend keeps.
//!
//! A store keeps one record per `(scope, key)`. A record is in progress (claimed by an owner
//! until its lease runs out), completed (holding an opaque payload to replay), or released
//! (a tombstone that remembers the epoch). Every record carries the request fingerprint it was
//! claimed with and an expiry. See [`IdempotencyStore::claim`] for the decision table.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::key::Fingerprint;

/// Identifies one attempt to run a call. Unique across processes, forked children included
/// (64 random bits per process plus a per-process counter), so a store can tell "my own claim,
/// retried" from "someone else's claim".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerId(u128);

impl OwnerId {
    /// A fresh owner id, never returned before by this process or any other.
    ///
    /// The per-process random part is drawn again whenever the process id changes: a child
    /// created by `fork` inherits its parent's memory, counter and seed included, and would
    /// otherwise mint the very ids its parent mints next. Checking the process id costs one
    /// `getpid` per id.
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = process_seed();
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

/// The random half of this process's owner ids, drawn once per process id.
///
/// The seed is published before the pid it belongs to (release/acquire), so a thread that
/// sees the current pid also sees its seed. Two threads that both notice a new pid both draw
/// a seed; either is fine, since the counter keeps ids apart within one process.
fn process_seed() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    // 0 is never a process id, so a fresh process always draws a seed first.
    static SEEDED_FOR_PID: AtomicU64 = AtomicU64::new(0);
    let pid = u64::from(std::process::id());
    if SEEDED_FOR_PID.load(Ordering::Acquire) == pid {
        return SEED.load(Ordering::Relaxed);
    }
    let seed = random_seed(pid);
    SEED.store(seed, Ordering::Relaxed);
    SEEDED_FOR_PID.store(pid, Ordering::Release);
    seed
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
/// mixed with the process id and the clock (no extra dependency for randomness). A forked
/// child's hasher keys start as a copy of its parent's, so the pid and the clock are what
/// set the two apart.
fn random_seed(pid: u64) -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(pid);
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}

/// The epoch of a claim that acquires a record: above the record's previous epoch, and at
/// least `clock_micros`, the store's clock in microseconds since the Unix epoch.
///
/// Deriving epochs from the clock is what keeps them from repeating once a record is gone:
/// after a purge, a sweep or a restart of an in-memory store nothing remembers the previous
/// epoch, but every epoch issued before was at most the clock reading of its own claim plus
/// the number of claims that outran the clock, and the record lived at least one lease after
/// that. Custom stores that compute epochs in Rust call this; the Redis and SQL stores compute
/// the same formula on the server.
///
/// `None` when the previous epoch is already the largest `u64`: no later epoch exists, so
/// the record cannot be claimed again without repeating one; stores report it as
/// unreadable ([`Error::Decode`]).
///
/// ```
/// use idempotent_core::store::next_epoch;
///
/// assert_eq!(next_epoch(None, 1_700_000_000_000_000), Some(1_700_000_000_000_000));
/// assert_eq!(next_epoch(Some(41), 7), Some(42));
/// assert_eq!(next_epoch(Some(41), 1_000), Some(1_000));
/// assert_eq!(next_epoch(Some(u64::MAX), 7), None);
/// ```
pub fn next_epoch(previous: Option<u64>, clock_micros: u64) -> Option<u64> {
    match previous {
        Some(previous) => previous.checked_add(1).map(|next| next.max(clock_micros)),
        None => Some(clock_micros.max(1)),
    }
}

/// The system clock in microseconds since the Unix epoch, for [`next_epoch`] in stores whose
/// clock is this process's. A clock before 1970 reads as 0 (the previous epoch still counts).
pub fn system_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
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

/// Gives up a claim whose answer never arrived, on the current tokio runtime and without
/// waiting for it: the usual body of [`IdempotencyStore::abandon_claim_in_background`] for a
/// store whose handle is cheap to clone.
///
/// It claims again as the same owner. If the lost claim was granted, that returns its lease
/// (the retried-claim rule) and the lease is released; if it was not, the key is either
/// someone else's (nothing to do) or free, and the fresh claim is released at once, which only
/// moves the key's epoch on. With no runtime it does nothing, and a granted claim expires with
/// its lease.
pub fn spawn_abandon<S>(store: S, request: &ClaimRequest<'_>)
where
    S: IdempotencyStore + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let request = OwnedClaimRequest::new(request);
    runtime.spawn(async move {
        let outcome = match store.claim(&request.as_request()).await {
            Ok(Claim::Acquired(lease)) => store.release(&lease).await,
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) | Err(Error::LeaseLost) => {}
            Err(error) => tracing::warn!(
                scope = request.scope.as_str(),
                key = request.key.as_str(),
                %error,
                "could not give up a cancelled claim; it expires with its lease"
            ),
        }
    });
}
