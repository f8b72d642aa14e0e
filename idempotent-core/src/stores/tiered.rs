//! The tiered store (feature `tiered`): PostgreSQL decides every claim, Redis caches completed
//! records so that replays cost one Redis round trip.
//!
//! This is the seed's recommendation ("Redis for speed, DB for durability") made safe:
//!
//! - **Claims, completions, releases, heartbeats and purges go to PostgreSQL only.** Redis
//!   never decides whether a body runs, so losing Redis, flushing it, or reading a stale or
//!   corrupt entry from it can cost speed but never a second execution.
//! - **Redis holds only completed records**, which cannot change until their ttl ends. An entry
//!   is the record a claim returned, written with a Redis expiry equal to the time that record
//!   had left when the claim read it, so it outlives the record by at most the time between
//!   that claim and the `SET` (a round trip).
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
//! Key: `{prefix}:{<hex sha256(be_u64(len(scope)) || scope || be_u64(len(key)) || key)>}`
//! (default prefix `idem-cache`; the digest is a Redis Cluster hash tag and no caller input
//! appears in the key name). Value: byte `0x01` (format version), the 32-byte request
//! fingerprint, the epoch as 8 bytes big-endian, then the payload. An entry that does not
//! parse is ignored (and deleted): PostgreSQL answers instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, Record};
use crate::stores::postgres::PostgresStore;

const CACHE_FORMAT_V1: u8 = 0x01;
const HEADER_LEN: usize = 1 + 32 + 8;

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
    cache: ConnectionManager,
    prefix: String,
    timeout: Duration,
    bypass: Duration,
    /// Milliseconds since `started` until which the cache is bypassed after a failure.
    bypass_until_ms: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("durable", &self.inner.durable)
            .field("cache_prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Builder for [`TieredStore`].
#[derive(Debug, Clone)]
pub struct TieredStoreBuilder {
    prefix: String,
    timeout: Duration,
    bypass: Duration,
}

impl Default for TieredStoreBuilder {
    fn default() -> Self {
        TieredStoreBuilder {
            prefix: "idem-cache".to_owned(),
            timeout: Duration::from_millis(100),
            bypass: Duration::from_secs(1),
        }
    }
}

impl TieredStoreBuilder {
    /// The prefix of every cache key (default `idem-cache`). Must not contain `{` or `}`.
    pub fn cache_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a cache read or write may take before it is abandoned (default 100 ms). Keep
    /// it short: a slow cache should cost little more than no cache.
    pub fn cache_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the cache is bypassed after it fails (default 1 s).
    pub fn cache_bypass(mut self, bypass: Duration) -> Self {
        self.bypass = bypass;
        self
    }

    /// Builds the store on `durable`, caching in the Redis server at `redis_url`.
    ///
    /// Connecting to Redis must succeed once here (a wrong URL should fail loudly at start-up);
    /// afterwards a Redis outage only makes the store slower.
    pub async fn connect(
        self,
        durable: PostgresStore,
        redis_url: &str,
    ) -> Result<TieredStore, Error> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(Error::InvalidInput {
                reason: format!(
                    "cache prefix {:?} must be non-empty and contain no `{{` or `}}`",
                    self.prefix
                ),
            });
        }
        let client = redis::Client::open(redis_url).map_err(cache_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let bound = self.timeout.saturating_mul(4).max(Duration::from_secs(2));
        let cache = tokio::time::timeout(bound, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| Error::store("redis", format!("connecting timed out after {bound:?}")))?
            .map_err(cache_error)?;
        Ok(TieredStore {
            inner: Arc::new(Inner {
                durable,
                cache,
                prefix: self.prefix,
                timeout: self.timeout,
                bypass: self.bypass,
                bypass_until_ms: AtomicU64::new(0),
                started: Instant::now(),
            }),
        })
    }
}

fn cache_error(error: redis::RedisError) -> Error {
    Error::store("redis", error)
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

    /// The Redis key a record of `(scope, key)` is cached under: named like a
    /// [`RedisStore`](crate::RedisStore) record, under the cache prefix.
    pub fn cache_key(&self, scope: &str, key: &str) -> String {
        crate::stores::redis::record_key(&self.inner.prefix, scope, key)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn cache_usable(&self) -> bool {
        self.now_ms() >= self.inner.bypass_until_ms.load(Ordering::Relaxed)
    }

    fn cache_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(self.inner.bypass.as_millis()).unwrap_or(u64::MAX));
        self.inner.bypass_until_ms.store(until, Ordering::Relaxed);
        tracing::warn!(%error, bypass = ?self.inner.bypass, "redis cache {what} failed; using PostgreSQL alone for now");
    }

    /// Runs one cache command within the cache timeout.
    async fn cache_command<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, String> {
        let mut connection = self.inner.cache.clone();
        match tokio::time::timeout(
            self.inner.timeout,
            command.query_async::<T>(&mut connection),
        )
        .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("timed out after {:?}", self.inner.timeout)),
        }
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

    /// Copies a completed record into the cache for as long as PostgreSQL keeps it: exactly
    /// the record the claim returned, for the time that record had left. (Reading the expiry
    /// again would read whatever record is there by then, which may be a newer one.)
    async fn back_fill(&self, request: &ClaimRequest<'_>, cache_key: &str, record: &Record) {
        let Some(remaining) = record.expires_in.filter(|left| !left.is_zero()) else {
            return;
        };
        if !self.cache_usable() {
            return;
        }
        let mut value = BytesMut::with_capacity(HEADER_LEN + record.payload.len());
        value.put_u8(CACHE_FORMAT_V1);
        value.put_slice(request.fingerprint.as_bytes());
        value.put_u64(record.epoch);
        value.put_slice(&record.payload);
        let mut set = redis::cmd("SET");
        set.arg(cache_key).arg(&value[..]).arg("PX").arg(
            u64::try_from(remaining.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        if let Err(error) = self.cache_command::<()>(set).await {
            self.cache_failed("write", &error);
        }
    }
}

/// `(fingerprint, epoch, payload)` of a cache entry, or `None` if it is not one.
fn parse_entry(entry: &[u8]) -> Option<(Fingerprint, u64, &[u8])> {
    if entry.len() < HEADER_LEN || entry[0] != CACHE_FORMAT_V1 {
        return None;
    }
    let fingerprint: [u8; 32] = entry[1..33].try_into().ok()?;
    let epoch = u64::from_be_bytes(entry[33..41].try_into().ok()?);
    Some((
        Fingerprint::from_bytes(fingerprint),
        epoch,
        &entry[HEADER_LEN..],
    ))
}

#[async_trait]
impl IdempotencyStore for TieredStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let cache_key = self.cache_key(request.scope, request.key);
        if let Some(claim) = self.cached_claim(request, &cache_key).await {
            return Ok(claim);
        }
        let claim = self.inner.durable.claim(request).await?;
        if let Claim::Completed(record) = &claim {
            self.back_fill(request, &cache_key, record).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_parse_back() {
        let mut value = vec![CACHE_FORMAT_V1];
        value.extend_from_slice(&[7u8; 32]);
        value.extend_from_slice(&9u64.to_be_bytes());
        value.extend_from_slice(b"payload");
        let (fingerprint, epoch, payload) = parse_entry(&value).unwrap_or_else(|| panic!("parses"));
        assert_eq!(fingerprint, Fingerprint::from_bytes([7; 32]));
        assert_eq!(epoch, 9);
        assert_eq!(payload, b"payload");
    }

    #[test]
    fn malformed_cache_entries_are_rejected() {
        assert!(parse_entry(b"").is_none());
        assert!(parse_entry(&[CACHE_FORMAT_V1; 10]).is_none());
        let mut wrong_version = vec![0x02];
        wrong_version.extend_from_slice(&[0u8; 40]);
        assert!(parse_entry(&wrong_version).is_none());
    }
}
