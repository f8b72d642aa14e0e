//! The in-memory store: the embedded default.

mod builder;
mod keys;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use builder::MemoryStoreBuilder;
use keys::{KeyView, Lookup, Prehashed, RecordKey};

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::decision::{Decision, Stored, StoredState, decide};
use crate::store::records::{ForgetStep, forget_step, state_of};
use crate::store::time::capped;
use crate::store::{
    Claim, ClaimRequest, Forget, IdempotencyStore, Lease, OwnerId, Record, RecordState,
    system_clock_micros,
};

/// A shard sweeps its expired records once it has grown past this many (and then past twice
/// its size after the last sweep), so purging costs O(1) amortised per insert.
const MIN_SWEEP_THRESHOLD: usize = 1024;

/// `now + after`; a duration of "forever" ends after [`FOREVER`](crate::store::time::FOREVER).
fn deadline(now: Instant, after: Duration) -> Instant {
    now + capped(after)
}

/// An in-process [`IdempotencyStore`]: sharded hash maps behind short, synchronous locks.
///
/// Cheap to clone (clones share the records). Deadlines use tokio's clock, so tests with a
/// paused clock control expiry. Records live in this process only: use a shared store when
/// more than one instance serves the same keys, and a durable one when a restart must not
/// forget completed work.
///
/// The store is bounded: when it holds `capacity` records and none has expired, a claim for a
/// new key fails with [`Error::CapacityExceeded`]. Live records (in progress or completed) are
/// never evicted, since an evicted record would let a duplicate run again. Expired records are
/// removed lazily, by periodic sweeps as the store grows, and by
/// [`purge_expired`](IdempotencyStore::purge_expired). A released key (an `Err` that was not
/// cached) is removed at once: it takes no capacity, and the next claim's epoch still grows,
/// since epochs come from the store's clock.
///
/// ```
/// use idempotent_core::MemoryStore;
///
/// let store = MemoryStore::builder().capacity(10_000).shards(16).build();
/// assert!(store.is_empty());
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    shard_hasher: RandomState,
    capacity: usize,
    len: AtomicUsize,
    /// The highest clock reading an epoch was derived from: epochs keep growing even if the
    /// system clock steps back while the store lives.
    epoch_clock: AtomicU64,
}

struct Shard {
    state: Mutex<ShardState>,
    changed: Notify,
}

struct ShardState {
    records: HashMap<RecordKey, Entry, BuildHasherDefault<Prehashed>>,
    /// A lower bound on the earliest expiry in this shard: nothing expires before it.
    next_expiry: Option<Instant>,
    sweep_threshold: usize,
}

struct Entry {
    fingerprint: Fingerprint,
    epoch: u64,
    expires_at: Instant,
    state: EntryState,
}

enum EntryState {
    InProgress {
        owner: OwnerId,
        lease_until: Instant,
    },
    Completed {
        payload: Bytes,
    },
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.len())
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl MemoryStore {
    /// A store with the default capacity (1,000,000 records) and 64 shards.
    pub fn new() -> Self {
        MemoryStoreBuilder::default().build()
    }

    /// Configures capacity and sharding.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    fn with_shards(shard_count: usize, capacity: usize) -> Self {
        let shards = (0..shard_count)
            .map(|_| Shard {
                state: Mutex::new(ShardState {
                    records: HashMap::default(),
                    next_expiry: None,
                    sweep_threshold: MIN_SWEEP_THRESHOLD,
                }),
                changed: Notify::new(),
            })
            .collect();
        MemoryStore {
            inner: Arc::new(Inner {
                shards,
                shard_hasher: RandomState::new(),
                capacity,
                len: AtomicUsize::new(0),
                epoch_clock: AtomicU64::new(0),
            }),
        }
    }

    /// How many records are held, including expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The keyed hash of `(scope, key)` and the shard that holds it. The hash is computed once
    /// per operation: the shard's map reuses it (see [`Prehashed`]).
    fn locate(&self, scope: &str, key: &str) -> (u64, &Shard) {
        let digest = self.inner.shard_hasher.hash_one((scope, key));
        // The map picks buckets from the low bits and tags from the top 7; the shard comes from
        // the bits in between. The shard count is a power of two, so the mask keeps it in range.
        let index = ((digest >> 32) as usize) & (self.inner.shards.len() - 1);
        (digest, &self.inner.shards[index])
    }

    fn lock(shard: &Shard) -> MutexGuard<'_, ShardState> {
        // A panic while holding the lock cannot leave a record half-written (every update is a
        // single assignment), so a poisoned lock is still consistent.
        shard
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Compare-and-set on a lease: runs `update` on the entry if it is still this lease's
    /// in-progress claim, else fails with `LeaseLost`. With `done_if`, an entry for which it
    /// holds counts as already updated: `Ok` without running `update` (a repeated `complete`).
    fn compare_and_set(
        &self,
        lease: &Lease,
        done_if: Option<fn(&Entry, &Lease) -> bool>,
        update: impl FnOnce(&mut Entry, Instant),
    ) -> Result<(), Error> {
        let (digest, shard) = self.locate(lease.scope(), lease.key());
        let now = Instant::now();
        {
            let mut state = Self::lock(shard);
            let lookup = Lookup {
                digest,
                scope: lease.scope(),
                key: lease.key(),
            };
            let entry = state
                .records
                .get_mut(&lookup as &dyn KeyView)
                .ok_or(Error::LeaseLost)?;
            if !entry.is_held_by(lease) {
                return match done_if {
                    Some(done) if done(entry, lease) => Ok(()),
                    _ => Err(Error::LeaseLost),
                };
            }
            update(entry, now);
            let expires_at = entry.expires_at;
            state.note_expiry(expires_at);
        }
        shard.changed.notify_waiters();
        Ok(())
    }

    /// The clock reading a new epoch is derived from (see
    /// [`next_epoch`](crate::store::next_epoch)): the system clock in microseconds, and above
    /// every reading this store handed out before, so two claims never get the same one even
    /// within a microsecond or after the clock stepped back.
    fn epoch_clock(&self) -> u64 {
        let now = system_clock_micros();
        let previous = self
            .inner
            .epoch_clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or(now);
        now.max(previous.saturating_add(1))
    }

    /// Removes the lease's record if it is still the lease's in-progress claim (else
    /// `LeaseLost`): the next claim acquires the key, with an epoch from the clock.
    fn release_now(&self, lease: &Lease) -> Result<(), Error> {
        let (digest, shard) = self.locate(lease.scope(), lease.key());
        {
            let mut state = Self::lock(shard);
            let lookup = Lookup {
                digest,
                scope: lease.scope(),
                key: lease.key(),
            };
            let held = state
                .records
                .get(&lookup as &dyn KeyView)
                .is_some_and(|entry| entry.is_held_by(lease));
            if !held {
                return Err(Error::LeaseLost);
            }
            state.records.remove(&lookup as &dyn KeyView);
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
        }
        shard.changed.notify_waiters();
        Ok(())
    }

    /// The state of the record of `(scope, key)`; with `forget`, forgets it too, under the same
    /// lock. A forgotten record is removed: the next claim's epoch comes from the epoch clock,
    /// which is above every epoch this store issued.
    fn record_state(
        &self,
        scope: &str,
        key: &str,
        forget: Option<Forget>,
    ) -> Result<RecordState, Error> {
        let (digest, shard) = self.locate(scope, key);
        let now = Instant::now();
        let lookup = Lookup { digest, scope, key };
        let state = {
            let mut records = Self::lock(shard);
            let Some(entry) = records.records.get(&lookup as &dyn KeyView) else {
                return Ok(RecordState::Absent);
            };
            let payload = match &entry.state {
                EntryState::Completed { payload } => Some(payload.clone()),
                EntryState::InProgress { .. } => None,
            };
            let state = state_of(scope, &entry.view(), payload, now, |deadline| {
                deadline.saturating_duration_since(now)
            })?;
            let Some(mode) = forget else {
                return Ok(state);
            };
            if forget_step(&state, mode)? == ForgetStep::Nothing {
                return Ok(state);
            }
            records.records.remove(&lookup as &dyn KeyView);
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
            state
        };
        shard.changed.notify_waiters();
        Ok(state)
    }

    /// Removes expired records from one shard; returns how many.
    fn purge_shard(&self, state: &mut ShardState, now: Instant) -> usize {
        if state.next_expiry.is_none_or(|next| next > now) {
            return 0;
        }
        let before = state.records.len();
        let mut next_expiry: Option<Instant> = None;
        state.records.retain(|_, entry| {
            // Expired exactly when a claim would take it for absent.
            let keep = entry.expires_at > now;
            if keep {
                next_expiry =
                    Some(next_expiry.map_or(entry.expires_at, |n| n.min(entry.expires_at)));
            }
            keep
        });
        state.next_expiry = next_expiry;
        let removed = before - state.records.len();
        self.inner.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    fn claim_at(&self, request: &ClaimRequest<'_>, now: Instant) -> Result<Claim, Error> {
        let (digest, shard) = self.locate(request.scope, request.key);
        let mut state = Self::lock(shard);
        let lookup = Lookup {
            digest,
            scope: request.scope,
            key: request.key,
        };
        let entry = state.records.get_mut(&lookup as &dyn KeyView);
        let stored = entry.as_deref().map(Entry::view);
        let decision = decide(
            stored.as_ref(),
            request,
            now,
            |deadline| deadline.saturating_duration_since(now),
            || self.epoch_clock(),
        )?;
        let lease_until = deadline(now, request.lease);
        let claim = match (decision, entry) {
            (Decision::Acquire { epoch }, entry) => {
                let fresh = Entry {
                    fingerprint: request.fingerprint,
                    epoch,
                    // A claim's record lives at least one lease.
                    expires_at: deadline(now, request.ttl.max(request.lease)),
                    state: EntryState::InProgress {
                        owner: request.owner,
                        lease_until,
                    },
                };
                let expires_at = fresh.expires_at;
                match entry {
                    Some(entry) => *entry = fresh,
                    None => self.insert(&mut state, digest, request, fresh, now)?,
                }
                state.note_expiry(expires_at);
                Claim::Acquired(Lease::new(request.scope, request.key, request.owner, epoch))
            }
            (Decision::Renew, Some(entry)) => {
                if let EntryState::InProgress {
                    lease_until: until, ..
                } = &mut entry.state
                {
                    *until = lease_until;
                }
                entry.expires_at = entry.expires_at.max(lease_until);
                let (epoch, expires_at) = (entry.epoch, entry.expires_at);
                state.note_expiry(expires_at);
                Claim::Acquired(Lease::new(request.scope, request.key, request.owner, epoch))
            }
            (
                Decision::Replay { expires_in },
                Some(Entry {
                    state: EntryState::Completed { payload },
                    epoch,
                    ..
                }),
            ) => Claim::Completed(Record {
                payload: payload.clone(),
                epoch: *epoch,
                expires_in: Some(expires_in),
            }),
            (Decision::InFlight { retry_after }, _) => Claim::InFlight { retry_after },
            (Decision::Mismatch, _) => Claim::PayloadMismatch,
            // `decide` renews in-progress records and replays completed ones only.
            (Decision::Renew | Decision::Replay { .. }, _) => {
                return Err(Error::store(
                    "memory",
                    "the claim decision does not fit the stored record",
                ));
            }
        };
        Ok(claim)
    }

    /// Inserts a new key's record, within capacity: an expired record of the shard makes room
    /// if the store is full.
    fn insert(
        &self,
        state: &mut ShardState,
        digest: u64,
        request: &ClaimRequest<'_>,
        entry: Entry,
        now: Instant,
    ) -> Result<(), Error> {
        if !self.try_reserve_slot() {
            self.purge_shard(state, now);
            if !self.try_reserve_slot() {
                return Err(Error::CapacityExceeded {
                    capacity: self.inner.capacity,
                });
            }
        }
        state
            .records
            .insert(RecordKey::new(digest, request.scope, request.key), entry);
        if state.records.len() >= state.sweep_threshold {
            self.purge_shard(state, now);
            state.sweep_threshold = (state.records.len() * 2).max(MIN_SWEEP_THRESHOLD);
        }
        Ok(())
    }

    /// Takes one slot of capacity for a new record, if there is one. A compare-and-swap, so the
    /// count never passes the capacity, not even for a moment (`len()` reads it).
    fn try_reserve_slot(&self) -> bool {
        let capacity = self.inner.capacity;
        self.inner
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |len| {
                (len < capacity).then_some(len + 1)
            })
            .is_ok()
    }

    /// Removes expired records from every shard that has any. Shards with nothing to remove
    /// are skipped without a scan, so a full store of live records rejects claims in
    /// O(shards), not O(records).
    fn purge_all(&self, now: Instant) -> u64 {
        let mut removed = 0u64;
        for shard in self.inner.shards.iter() {
            let mut state = Self::lock(shard);
            removed += self.purge_shard(&mut state, now) as u64;
        }
        removed
    }
}

impl Entry {
    fn is_held_by(&self, lease: &Lease) -> bool {
        matches!(self.state, EntryState::InProgress { owner, .. } if owner == lease.owner())
            && self.epoch == lease.epoch()
    }

    fn view(&self) -> Stored<Instant> {
        Stored {
            state: match self.state {
                EntryState::InProgress { owner, lease_until } => {
                    StoredState::InProgress { owner, lease_until }
                }
                EntryState::Completed { .. } => StoredState::Completed,
            },
            epoch: self.epoch,
            fingerprint: self.fingerprint,
            expires_at: self.expires_at,
        }
    }
}

impl ShardState {
    fn note_expiry(&mut self, at: Instant) {
        self.next_expiry = Some(self.next_expiry.map_or(at, |next| next.min(at)));
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let now = Instant::now();
        match self.claim_at(request, now) {
            Err(Error::CapacityExceeded { .. }) => {
                // Full even after sweeping the key's own shard: sweep the others (without
                // holding any lock, so shards are never locked two at a time), then retry once.
                self.purge_all(now);
                self.claim_at(request, now)
            }
            other => other,
        }
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        // This lease's own completion, retried: the epoch names the claim that completed it.
        let completed_by = |entry: &Entry, lease: &Lease| {
            matches!(entry.state, EntryState::Completed { .. }) && entry.epoch == lease.epoch()
        };
        self.compare_and_set(lease, Some(completed_by), |entry, now| {
            entry.state = EntryState::Completed { payload };
            entry.expires_at = deadline(now, ttl);
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.release_now(lease)
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.compare_and_set(lease, None, |entry, now| {
            let until = deadline(now, lease_for);
            if let EntryState::InProgress { lease_until, .. } = &mut entry.state {
                *lease_until = until;
            }
            entry.expires_at = entry.expires_at.max(until);
        })
    }

    fn release_in_background(&self, lease: Lease) {
        // Synchronous for this store: nothing to spawn. A lost lease has nothing to release.
        let _ = self.release_now(&lease);
    }

    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        // Synchronous for this store: claim again as the same owner (the lost claim's lease,
        // if it was granted) and release what that returns.
        if let Ok(Claim::Acquired(lease)) = self.claim_at(request, Instant::now()) {
            let _ = self.release_now(&lease);
        }
    }

    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.record_state(scope, key, None)
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.record_state(scope, key, Some(mode))
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        Ok(self.purge_all(Instant::now()))
    }

    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        let notified = self.locate(scope, key).1.changed.notified();
        let _ = tokio::time::timeout(max_wait, notified).await;
    }
}
