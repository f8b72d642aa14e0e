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
//! Entries written by earlier versions of this store, named without the authority
//! (`{prefix}:{<hex sha256(lp(scope) || lp(key))>}`) or in format `0x01`, are never read; each
//! expires by itself when the record it copied does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, Record};
use crate::stores::postgres::PostgresStore;
use crate::stores::postgres::sqlx;
use crate::stores::postgres::sqlx::postgres::PgConnectOptions;
use crate::stores::redis::{hash_part, tagged_key};

const CACHE_FORMAT_V2: u8 = 0x02;
const CHECKSUM_LEN: usize = 16;
/// Version, checksum, fingerprint, epoch.
const HEADER_LEN: usize = 1 + CHECKSUM_LEN + 32 + 8;
/// The longest the statements that read the authority may take when the store is built.
const AUTHORITY_TIMEOUT: Duration = Duration::from_secs(10);

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
    cache: ConnectionManager,
    prefix: String,
    timeout: Duration,
    bypass: Duration,
    /// Milliseconds since `started` until which the cache is bypassed after a failure.
    bypass_until_ms: AtomicU64,
    started: Instant,
}

/// The PostgreSQL table that decides the claims, as cache keys name it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    server: String,
    database: String,
    table: String,
}

impl Authority {
    /// Reads the authority of `durable` from its server.
    async fn read(durable: &PostgresStore) -> Result<Authority, Error> {
        let read = async {
            let pool = durable.pool();
            let configured = durable.table();
            let (database, resolved_schema, current_schema, may_read_identifier): (
                String,
                Option<String>,
                Option<String>,
                bool,
            ) = sqlx::query_as(
                "SELECT pg_catalog.current_database()::text, \
                     (SELECT n.nspname::text FROM pg_catalog.pg_class AS c \
                      JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
                      WHERE c.oid = pg_catalog.to_regclass($1)), \
                     pg_catalog.current_schema()::text, \
                     COALESCE(pg_catalog.has_function_privilege(\
                         pg_catalog.to_regprocedure('pg_catalog.pg_control_system()'), 'EXECUTE'), \
                         false)",
            )
            .bind(configured)
            .fetch_one(pool)
            .await?;
            let identifier: Option<String> = if may_read_identifier {
                // Allowed but failing anyway (an unusual server): the address will do.
                sqlx::query_scalar(
                    "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
                )
                .fetch_one(pool)
                .await
                .map_err(|error| {
                    tracing::debug!(%error, "cannot read the PostgreSQL system identifier");
                })
                .ok()
            } else {
                None
            };
            let server = server_name(identifier.as_deref(), &pool.connect_options());
            let table = if configured.contains('.') {
                configured.to_owned()
            } else {
                match resolved_schema.or(current_schema) {
                    Some(schema) => format!("{schema}.{configured}"),
                    None => configured.to_owned(),
                }
            };
            Ok::<_, sqlx::Error>(Authority {
                server,
                database,
                table,
            })
        };
        tokio::time::timeout(AUTHORITY_TIMEOUT, read)
            .await
            .map_err(|_| {
                Error::store(
                    "postgres",
                    format!(
                        "reading the server, database and table for the cache keys timed out after {AUTHORITY_TIMEOUT:?}"
                    ),
                )
            })?
            .map_err(|error| Error::store("postgres", error))
    }

    /// SHA-256 with the authority fed in, ready for a scope and a key.
    fn key_hasher(&self) -> Sha256 {
        let mut hasher = Sha256::new();
        hash_part(&mut hasher, self.server.as_bytes());
        hash_part(&mut hasher, self.database.as_bytes());
        hash_part(&mut hasher, self.table.as_bytes());
        hasher
    }
}

/// The `server` part of the authority: the system identifier when the role may read it, else
/// the address the pool connects to.
fn server_name(identifier: Option<&str>, options: &PgConnectOptions) -> String {
    match (identifier, options.get_socket()) {
        (Some(identifier), _) => format!("system_identifier:{identifier}"),
        (None, Some(socket)) => format!("socket:{}:{}", socket.display(), options.get_port()),
        (None, None) => format!("address:{}:{}", options.get_host(), options.get_port()),
    }
}

/// `{prefix}:{<hex sha256(authority, scope, key), each length-prefixed>}`.
fn cache_key(prefix: &str, key_hasher: &Sha256, scope: &str, key: &str) -> String {
    let mut hasher = key_hasher.clone();
    hash_part(&mut hasher, scope.as_bytes());
    hash_part(&mut hasher, key.as_bytes());
    tagged_key(prefix, hasher)
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
    ///
    /// Stores over different PostgreSQL tables may share a prefix: cache keys also name the
    /// table (see the [module docs](self)).
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
    /// Both servers must answer once here: PostgreSQL tells which server, database and table
    /// the cache keys name (see the [module docs](self)), and connecting to Redis fails loudly
    /// for a wrong URL. Afterwards a Redis outage only makes the store slower.
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
        let authority = Authority::read(&durable).await?;
        tracing::debug!(
            server = authority.server,
            database = authority.database,
            table = authority.table,
            "tiered cache keys name this PostgreSQL table"
        );
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
                key_hasher: authority.key_hasher(),
                authority,
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

    /// The Redis key a record of `(scope, key)` is cached under, for operators who inspect or
    /// delete entries by hand: named after this store's PostgreSQL table, the scope and the
    /// key, under the cache prefix (see the [module docs](self) for the derivation).
    pub fn cache_key(&self, scope: &str, key: &str) -> String {
        cache_key(&self.inner.prefix, &self.inner.key_hasher, scope, key)
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
        let mut set = redis::cmd("SET");
        set.arg(cache_key).arg(&value[..]).arg("PX").arg(left_ms);
        if let Err(error) = self.cache_command::<()>(set).await {
            self.cache_failed("write", &error);
        }
    }
}

/// The checksum of an entry: the first [`CHECKSUM_LEN`] bytes of SHA-256 over everything
/// after it.
fn checksum(checked: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(checked);
    let mut sum = [0u8; CHECKSUM_LEN];
    sum.copy_from_slice(&digest[..CHECKSUM_LEN]);
    sum
}

/// A cache entry: version, checksum, fingerprint, epoch, payload.
fn encode_entry(fingerprint: Fingerprint, epoch: u64, payload: &[u8]) -> BytesMut {
    let mut value = BytesMut::with_capacity(HEADER_LEN + payload.len());
    value.put_u8(CACHE_FORMAT_V2);
    value.put_bytes(0, CHECKSUM_LEN);
    value.put_slice(fingerprint.as_bytes());
    value.put_u64(epoch);
    value.put_slice(payload);
    let sum = checksum(&value[1 + CHECKSUM_LEN..]);
    value[1..=CHECKSUM_LEN].copy_from_slice(&sum);
    value
}

/// `(fingerprint, epoch, payload)` of a cache entry, or `None` if it is not one: too short,
/// another format version, or a checksum that does not match.
fn parse_entry(entry: &[u8]) -> Option<(Fingerprint, u64, &[u8])> {
    if entry.len() < HEADER_LEN || entry[0] != CACHE_FORMAT_V2 {
        return None;
    }
    let (stored_sum, checked) = entry[1..].split_at(CHECKSUM_LEN);
    if stored_sum != checksum(checked) {
        return None;
    }
    let fingerprint: [u8; 32] = checked[..32].try_into().ok()?;
    let epoch = u64::from_be_bytes(checked[32..40].try_into().ok()?);
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

    fn entry(fingerprint: [u8; 32], epoch: u64, payload: &[u8]) -> Vec<u8> {
        encode_entry(Fingerprint::from_bytes(fingerprint), epoch, payload).to_vec()
    }

    #[test]
    fn cache_entries_parse_back() {
        let value = entry([7; 32], 9, b"payload");
        let (fingerprint, epoch, payload) = parse_entry(&value).unwrap_or_else(|| panic!("parses"));
        assert_eq!(fingerprint, Fingerprint::from_bytes([7; 32]));
        assert_eq!(epoch, 9);
        assert_eq!(payload, b"payload");
        let empty = entry([0; 32], 1, b"");
        assert_eq!(
            parse_entry(&empty).map(|(_, _, payload)| payload),
            Some(&b""[..])
        );
    }

    #[test]
    fn cache_entry_layout_is_pinned() {
        // Golden: the checksum is sha256([7; 32] || be_u64(9) || "payload")[..16], computed
        // independently (Python hashlib).
        let mut expected = vec![0x02];
        expected.extend_from_slice(&[
            0x50, 0xd7, 0x63, 0x98, 0x97, 0x76, 0x75, 0xf8, 0x23, 0x46, 0xdb, 0x8b, 0x16, 0x96,
            0xb2, 0x9a,
        ]);
        expected.extend_from_slice(&[7u8; 32]);
        expected.extend_from_slice(&9u64.to_be_bytes());
        expected.extend_from_slice(b"payload");
        assert_eq!(entry([7; 32], 9, b"payload"), expected);
    }

    #[test]
    fn malformed_cache_entries_are_rejected() {
        assert!(parse_entry(b"").is_none());
        assert!(parse_entry(&[CACHE_FORMAT_V2; 10]).is_none());
        // One byte short of a header.
        let value = entry([7; 32], 9, b"");
        assert!(parse_entry(&value[..HEADER_LEN - 1]).is_none());
        // The earlier format: version 1, no checksum.
        let mut version_1 = vec![0x01];
        version_1.extend_from_slice(&[7u8; 32]);
        version_1.extend_from_slice(&9u64.to_be_bytes());
        version_1.extend_from_slice(&[0u8; 16]);
        version_1.extend_from_slice(b"payload");
        assert!(parse_entry(&version_1).is_none());
        // A good entry under another version byte.
        let mut other_version = entry([7; 32], 9, b"payload");
        other_version[0] = 0x03;
        assert!(parse_entry(&other_version).is_none());
    }

    #[test]
    fn cache_entries_with_a_bad_checksum_are_rejected() {
        let good = entry([7; 32], 9, b"payload");
        // Any one flipped bit after the version byte: in the checksum, the fingerprint, the
        // epoch or the payload.
        for index in 1..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = good.clone();
                damaged[index] ^= bit;
                assert!(
                    parse_entry(&damaged).is_none(),
                    "byte {index} bit {bit:#04x} flipped"
                );
            }
        }
        // A payload cut short or extended.
        assert!(parse_entry(&good[..good.len() - 1]).is_none());
        let mut longer = good.clone();
        longer.push(b'!');
        assert!(parse_entry(&longer).is_none());
    }

    #[test]
    fn the_server_is_its_identifier_or_else_its_address() {
        let options: PgConnectOptions = "postgres://app@db.internal:6543/app"
            .parse()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            server_name(Some("7714252423507138688"), &options),
            "system_identifier:7714252423507138688"
        );
        assert_eq!(server_name(None, &options), "address:db.internal:6543");
        let socket = options.clone().socket("/run/postgresql");
        assert_eq!(server_name(None, &socket), "socket:/run/postgresql:6543");
    }

    #[test]
    fn cache_keys_name_the_authority_scope_and_key() {
        let authority = Authority {
            server: "system_identifier:7714252423507138688".to_owned(),
            database: "test".to_owned(),
            table: "public.idempotency_records".to_owned(),
        };
        let hasher = authority.key_hasher();
        // Golden: sha256 over the length-prefixed server, database, table, scope and key,
        // each length a big-endian u64, computed independently (Python hashlib).
        assert_eq!(
            cache_key("idem-cache", &hasher, "scope", "key"),
            "idem-cache:{852d45bdb9b4a91a2c30839dbd020b0dae738a43f30a9ea292ff00ee45b727ff}"
        );
        let fallback = Authority {
            server: "address:db.internal:5432".to_owned(),
            database: "app".to_owned(),
            table: "billing.idempotency".to_owned(),
        };
        assert_eq!(
            cache_key(
                "idem-cache",
                &fallback.key_hasher(),
                "payments.charge",
                "order-42"
            ),
            "idem-cache:{859b4d43b8e8ffdfc148f565811a3f4b4b2f2ae5e50d7f38e8bf8576d9b6d0ab}"
        );
        // Every part counts, and the length prefixes keep the parts apart.
        let other_table = Authority {
            table: "public.other_records".to_owned(),
            ..authority.clone()
        };
        let other_database = Authority {
            database: "test2".to_owned(),
            ..authority.clone()
        };
        let shifted = Authority {
            database: "tes".to_owned(),
            table: "tpublic.idempotency_records".to_owned(),
            ..authority.clone()
        };
        let key = cache_key("idem-cache", &hasher, "scope", "key");
        for other in [other_table, other_database, shifted] {
            assert_ne!(
                cache_key("idem-cache", &other.key_hasher(), "scope", "key"),
                key
            );
        }
        assert_ne!(
            cache_key("idem-cache", &hasher, "a:b", "c"),
            cache_key("idem-cache", &hasher, "a", "b:c")
        );
        // The record keys of a RedisStore never collide with cache keys of the same prefix.
        assert_ne!(
            crate::stores::redis::record_key("idem-cache", "scope", "key"),
            key
        );
    }
}
