//! The tiered store (feature `tiered`): PostgreSQL decides every claim, Redis caches completed
//! records so that replays cost one Redis round trip.
//!
//! Redis for speed, PostgreSQL for durability, arranged so that the cache can never change a
//! decision:
//!
//! - **Claims, completions, releases, heartbeats and purges go to PostgreSQL only.** Redis
//!   never decides whether a body runs, so losing Redis, flushing it, or reading a stale or
//!   corrupt entry from it can cost speed but never a second execution.
//! - **Redis holds only completed records**, which cannot change until their ttl ends. An entry
//!   is the record a claim returned, and its Redis expiry is the time that record had left
//!   when the claim read it, less the time the claim took: however slow the claim, the entry
//!   ends when the record does (up to the time the `SET` takes to reach Redis), so a record
//!   that expired and was replaced is not replayed from the cache.
//! - **Every entry is checked**: it carries a checksum, and an entry that fails it (or does not
//!   parse) is deleted and PostgreSQL answers, so a damaged entry costs one cache miss.
//! - **Entries are named after the PostgreSQL table** as well as the scope and the key, so
//!   stores over different tables, databases or servers never serve each other's results
//!   through one Redis server.
//! - **Back-fill on a miss**: a claim that misses the cache and finds a completed record in
//!   PostgreSQL copies it to Redis (best effort) for the next replay.
//! - **Redis failures are absorbed**: a cache read or write that fails or times out (100 ms by
//!   default) is logged and skipped, and the cache is bypassed for a second before it is tried
//!   again, so an outage does not add a timeout to every call.
//!
//! A fresh call costs one Redis `GET` (a miss) and the two PostgreSQL statements of
//! [`PostgresStore`]; the first replay of a key adds a Redis `SET`; every later replay is one
//! Redis `GET`.
//!
//! # Cache entries (a persisted format)
//!
//! An entry's key is `{prefix}:{<digest>}` (default prefix `idem-cache`), where `<digest>` is
//! the lowercase hex of
//!
//! ```text
//! sha256(lp(server) || lp(database) || lp(table) || lp(scope) || lp(key))
//! ```
//!
//! and `lp(x)` is the byte count of `x`'s UTF-8 as a big-endian `u64` followed by those bytes.
//! The digest sits inside `{...}`, a Redis Cluster hash tag, and no caller input appears in
//! the key name. `server`, `database` and `table` name the *authority*: the PostgreSQL table
//! that decides the store's claims, read once when the store is built:
//!
//! - `server` is `system_identifier:<n>`, the server's system identifier from
//!   `pg_control_system()` (a physical replica promoted after a failover has the same one), or,
//!   where the store's role may not read it, `address:<host>:<port>` (`socket:<dir>:<port>`
//!   for a Unix socket) as configured in the store's pool;
//! - `database` is `current_database()`;
//! - `table` is `schema.table`: the schema as configured, or, for an unqualified table name,
//!   the schema that name resolves to (`current_schema()` while the table does not exist yet).
//!
//! So stores over different tables, databases or servers never read each other's entries,
//! even when they share a Redis server and a cache prefix. Instances over one table share
//! entries when they compute the same authority, which they do when they reach the server the
//! same way; instances that compute different ones (one may read the system identifier and
//! another may not, say) each fill entries of their own, which costs cache hits, never a
//! wrong replay.
//!
//! An entry's value is byte `0x02` (the format version), a 16-byte checksum, the 32-byte
//! request fingerprint, the epoch as 8 bytes big-endian, then the payload. The checksum is the
//! first 16 bytes of SHA-256 over everything after it (fingerprint, epoch and payload), so a
//! truncated, overwritten or bit-flipped entry is detected even where the payload is bytes
//! this store cannot interpret. It guards against damage, not against someone who may write
//! to the Redis server: such a writer can compute it too. An entry that is not one (another
//! version, a bad checksum, too short) is deleted, and PostgreSQL answers.
//!
//! A forgotten record ([`IdempotencyStore::forget`]) leaves, in place of its entry, the single
//! byte `0x00`, for as long as the record would have lived: a claim takes it for a miss, and a
//! back-fill (a `SET ... NX`) never writes over it, so no copy of the forgotten record is
//! replayed, even one a claim read just before the forget. Until it expires, that key's
//! replays are answered by PostgreSQL.
//!
//! Entries written by earlier versions of this store, named without the authority
//! (`{prefix}:{<hex sha256(lp(scope) || lp(key))>}`) or in format `0x01`, are never read; each
//! expires by itself when the record it copied does.

mod authority;
mod builder;
mod entry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::Sha256;

use authority::{Authority, cache_key};
pub use builder::TieredStoreBuilder;
use entry::{FORGOTTEN, HEADER_LEN, encode_entry, parse_entry};

use crate::error::Error;
use crate::store::time::millis_ceil;
use crate::store::{Claim, ClaimRequest, Forget, IdempotencyStore, Lease, Record, RecordState};
use crate::stores::postgres::PostgresStore;
use crate::stores::redis_connection::Connection;

/// PostgreSQL for decisions, Redis for fast replays. See the [module docs](self).
///
/// ```no_run
/// use idempotent_core::{Error, PostgresStore};
/// use idempotent_core::stores::tiered::TieredStore;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Error> {
/// let durable = PostgresStore::connect("postgres://app@db.internal/app").await?;
/// durable.migrate().await?;
/// let store = TieredStore::builder().connect(durable, "redis://cache.internal/").await?;
/// idempotent_core::set_default_store(std::sync::Arc::new(store));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TieredStore {
    inner: Arc<Inner>,
}

struct Inner {
    durable: PostgresStore,
    authority: Authority,
    /// SHA-256 with the authority already fed in; each cache key adds the scope and the key.
    key_hasher: Sha256,
    cache: Connection,
    prefix: String,
    bypass: Duration,
    /// Until when the cache is bypassed after a failure, in milliseconds of this store's
    /// monotonic clock (since `started`).
    bypass_until_ms: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("durable", &self.inner.durable)
            .field("cache_prefix", &self.inner.prefix)
            .field("cache_server", &self.inner.authority.server)
            .field("cache_database", &self.inner.authority.database)
            .field("cache_table", &self.inner.authority.table)
            .finish_non_exhaustive()
    }
}

impl TieredStore {
    /// Configures the cache.
    pub fn builder() -> TieredStoreBuilder {
        TieredStoreBuilder::default()
    }

    /// The PostgreSQL store that decides every claim.
    pub fn durable(&self) -> &PostgresStore {
        &self.inner.durable
    }

    /// The Redis key a record of `(scope, key)` is cached under, for operators who inspect or
    /// delete entries by hand: named after this store's PostgreSQL table, the scope and the
    /// key, under the cache prefix (see the [module docs](self) for the derivation).
    pub fn cache_key(&self, scope: &str, key: &str) -> String {
        cache_key(&self.inner.prefix, &self.inner.key_hasher, scope, key)
    }

    /// Milliseconds on this store's monotonic clock: since it was built.
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn cache_usable(&self) -> bool {
        self.elapsed_ms() >= self.inner.bypass_until_ms.load(Ordering::Relaxed)
    }

    fn cache_failed(&self, what: &str, error: &Error) {
        let until = self
            .elapsed_ms()
            .saturating_add(u64::try_from(self.inner.bypass.as_millis()).unwrap_or(u64::MAX));
        self.inner.bypass_until_ms.store(until, Ordering::Relaxed);
        let source = std::error::Error::source(error).map(ToString::to_string);
        tracing::warn!(%error, source, bypass = ?self.inner.bypass, "redis cache {what} failed; using PostgreSQL alone for now");
    }

    /// Runs one cache command within the cache timeout.
    async fn cache_command<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, Error> {
        self.inner.cache.query(&command).await
    }

    /// The cached answer for a claim, if the cache has one.
    async fn cached_claim(&self, request: &ClaimRequest<'_>, cache_key: &str) -> Option<Claim> {
        if !self.cache_usable() {
            return None;
        }
        let mut get = redis::cmd("GET");
        get.arg(cache_key);
        let entry: Option<Vec<u8>> = match self.cache_command(get).await {
            Ok(entry) => entry,
            Err(error) => {
                self.cache_failed("read", &error);
                return None;
            }
        };
        let entry = entry?;
        if entry == FORGOTTEN {
            return None;
        }
        match parse_entry(&entry).map(|(fingerprint, epoch, _)| (fingerprint, epoch)) {
            Some((fingerprint, _)) if fingerprint != request.fingerprint => {
                Some(Claim::PayloadMismatch)
            }
            // The payload is the tail of the entry: hand it on without copying it.
            Some((_, epoch)) => Some(Claim::Completed(Record {
                payload: Bytes::from(entry).slice(HEADER_LEN..),
                epoch,
                // Redis keeps the entry no longer than the record; how much longer is not asked
                // (a `PTTL` would double the replay's commands).
                expires_in: None,
            })),
            None => {
                tracing::warn!(
                    cache_key,
                    "unreadable cache entry; deleting it and asking PostgreSQL"
                );
                let mut del = redis::cmd("DEL");
                del.arg(cache_key);
                let _ = self.cache_command::<i64>(del).await;
                None
            }
        }
    }

    /// Copies a completed record into the cache for no longer than PostgreSQL keeps it: exactly
    /// the record the claim returned, for the time that record had left less the time since
    /// the claim was `sent` (the server read its clock after that), so the entry ends no later
    /// than the record even when the claim was slow.
    async fn back_fill(
        &self,
        request: &ClaimRequest<'_>,
        cache_key: &str,
        record: &Record,
        sent: Instant,
    ) {
        let Some(left) = record.expires_in else {
            return;
        };
        // Whole milliseconds, rounded down; under one millisecond left is not worth a `SET`.
        let left_ms =
            u64::try_from(left.saturating_sub(sent.elapsed()).as_millis()).unwrap_or(u64::MAX);
        if left_ms == 0 || !self.cache_usable() {
            return;
        }
        let value = encode_entry(request.fingerprint, record.epoch, &record.payload);
        // `NX`: never over a forgotten record's stand-in, which must outlive every copy of
        // that record (see `forget`); a live entry there is the same record anyway.
        let mut set = redis::cmd("SET");
        set.arg(cache_key)
            .arg(&value[..])
            .arg("PX")
            .arg(left_ms)
            .arg("NX");
        // `NX` answers nil when it did not set: either way is fine.
        if let Err(error) = self.cache_command::<Option<String>>(set).await {
            self.cache_failed("write", &error);
        }
    }
}

#[async_trait]
impl IdempotencyStore for TieredStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let cache_key = self.cache_key(request.scope, request.key);
        if let Some(claim) = self.cached_claim(request, &cache_key).await {
            return Ok(claim);
        }
        let sent = Instant::now();
        let claim = self.inner.durable.claim(request).await?;
        if let Claim::Completed(record) = &claim {
            self.back_fill(request, &cache_key, record, sent).await;
        }
        Ok(claim)
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        // Not cached here: the lease does not carry the fingerprint the cache entry needs, and
        // the first replay back-fills the entry with the exact remaining ttl.
        self.inner.durable.complete(lease, payload, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.inner.durable.release(lease).await
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.inner.durable.extend(lease, lease_for).await
    }

    fn release_in_background(&self, lease: Lease) {
        self.inner.durable.release_in_background(lease);
    }

    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        self.inner.durable.abandon_claim_in_background(request);
    }

    fn backend_name(&self) -> &'static str {
        "tiered"
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        // PostgreSQL decides; the cache holds copies of completed records only.
        self.inner.durable.inspect(scope, key).await
    }

    /// Forgets the record in PostgreSQL, then puts a stand-in over the record's cache entry
    /// for as long as the record would have lived, so neither the entry nor a back-fill racing
    /// the forget (a claim that read the record before it) replays it. If Redis cannot be
    /// told, this fails with [`Error::Store`] after PostgreSQL forgot the record, and the
    /// cache may still replay it: forget again, which tells the cache again.
    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        let state = self.inner.durable.forget(scope, key, mode).await?;
        let life = match &state {
            // Only completed records are cached; a released one may be a forgotten record
            // whose stand-in could not be written before.
            RecordState::Completed { expires_in, .. }
            | RecordState::Released { expires_in, .. } => *expires_in,
            _ => return Ok(state),
        };
        let mut set = redis::cmd("SET");
        set.arg(self.cache_key(scope, key))
            .arg(FORGOTTEN)
            .arg("PX")
            // Rounded up, at least 1 ms: it may outlive the record, never the reverse.
            .arg(millis_ceil(life).max(1));
        // The bypass after a failure is ignored: the cache must hear of this.
        match self.cache_command::<()>(set).await {
            Ok(()) => Ok(state),
            Err(error) => {
                self.cache_failed("forget", &error);
                Err(error)
            }
        }
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        // Cache entries expire with their records (Redis `PX`); only PostgreSQL needs purging.
        self.inner.durable.purge_expired().await
    }

    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        self.inner
            .durable
            .wait_for_change(scope, key, max_wait)
            .await;
    }
}
