//! The Redis store (feature `redis`): records shared by every instance that talks to one Redis
//! server, decided by Lua scripts on the server.
//!
//! # Data layout (a persisted format)
//!
//! Each record is one Redis hash. Its key name never contains caller input:
//!
//! ```text
//! {prefix}:{<hex sha256(be_u64(len(scope)) || scope || be_u64(len(key)) || key)>}
//! ```
//!
//! that is, the configured prefix (default `idem`), a colon, and the lowercase hex SHA-256 of the
//! length-prefixed UTF-8 bytes of the scope and the key, each length a big-endian `u64` byte
//! count. The digest sits inside `{...}`: a Redis Cluster hash tag, so the key's slot depends on
//! the digest only (the whole record is one key, and so one slot). The length prefixes keep
//! `("a:b", "c")` and `("a", "b:c")` apart; hashing keeps every name the prefix plus 67 bytes,
//! whatever the caller sends (unicode, `{`, `}`, spaces, NUL, kilobytes).
//!
//! The hash's fields, all strings:
//!
//! | field | present | value |
//! |---|---|---|
//! | `v` | always | `1`, the format version |
//! | `state` | always | `in_progress`, `completed` or `released` |
//! | `epoch` | always | the fencing token, a decimal integer: above the previous epoch and at least the server clock in microseconds |
//! | `fingerprint` | always | the request fingerprint, 64 lowercase hex characters |
//! | `expires_at` | always | when the record's ttl ends: Unix milliseconds on the server clock |
//! | `owner` | always | the [`OwnerId`] of the latest claim, 32 lowercase hex characters |
//! | `lease_until` | always | when the latest claim's lease ends: Unix milliseconds on the server clock |
//! | `payload` | `completed` | the stored result, raw bytes |
//!
//! `owner` and `lease_until` decide only while the record is `in_progress`; completing or
//! releasing leaves them in place (as a record of the last claim) rather than spend a command
//! on deleting them.
//!
//! Every write except a release (which keeps the record's expiry) also sets `PEXPIREAT` to
//! `expires_at` plus the retention
//! ([`RedisStoreBuilder::expired_retention`], default 60 s), so Redis deletes records by itself.
//! During the retention a record is logically expired (a claim treats it like a released one)
//! but still remembers its epoch; a released record is a tombstone that keeps its epoch and its
//! expiry. A new epoch is above the previous one and at least the server's clock in
//! microseconds (`TIME`), so it stays above every earlier epoch of the key even once Redis has
//! deleted the record.
//!
//! A hash that is not a record (a key of another type, a missing field, an unknown version or
//! state, a malformed number) is reported as [`Error::Decode`], never treated as absent.
//!
//! # Scripts
//!
//! Every state change is one Lua script, run with `EVALSHA` (loaded when the store connects, and
//! loaded again automatically after a server restart answers `NOSCRIPT`). A script runs
//! atomically on the server, so each decision is one step, never check-then-act, and costs one
//! round trip:
//!
//! - **claim** reads the record and decides by the table on [`IdempotencyStore::claim`]: it
//!   writes a fresh `in_progress` record (absent, released, expired, or lease run out), renews
//!   the lease for the same owner (same epoch), or answers in flight (with the time left on the
//!   lease), payload mismatch, or completed *with the payload*, so a replay is one round trip.
//! - **complete**, **release** and **extend** are compare-and-set: they change the record only
//!   while it is `in_progress` with the lease's owner and epoch, else the caller gets
//!   [`Error::LeaseLost`].
//! - **purge** deletes, from a batch of keys found by `SCAN`, those whose `expires_at` passed.
//!
//! Deadlines come from Redis `TIME` inside the scripts, never from the caller's clock, so
//! instances with skewed clocks agree on when a lease ends. A fresh call costs two round trips
//! (claim, complete) and a replay one; the tests count them on the server.
//!
//! # Expiry and purging
//!
//! Redis removes records by itself (`PEXPIREAT`), so [`IdempotencyStore::purge_expired`] is
//! never needed. It still does what it says: it deletes the records of this prefix that are past
//! their ttl but still inside their retention, and reports how many it deleted (records Redis
//! already removed are not counted; 0 is a truthful answer).
//!
//! # Waiting
//!
//! A call waiting for an in-flight duplicate polls with backoff (the trait's default
//! [`wait_for_change`](IdempotencyStore::wait_for_change); the engine backs off to 100 ms).
//! Keyspace notifications or pub/sub would wake waiters sooner, but need a server setting or a
//! subscriber connection with fan-out, more machinery than a bounded poll is worth here.
//!
//! # Connection
//!
//! One multiplexed connection (the `redis` crate's `ConnectionManager`), shared by clones of
//! the store and reconnected automatically after a failure. Every operation is bounded by
//! [`RedisStoreBuilder::timeout`]: while Redis is unreachable, calls fail with [`Error::Store`]
//! (and, by default, the engine fails closed) instead of hanging; once Redis is back, the same
//! store works again. The store speaks to one server (standalone, or a primary); it needs Redis
//! 5.0 or newer (scripts that call `TIME` before writing).

use std::io;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, Value};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::time::millis_ceil;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, Record};

const BACKEND: &str = "redis";
const DEFAULT_KEY_PREFIX: &str = "idem";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_RETENTION: Duration = Duration::from_secs(60);
/// How many keys one `SCAN` step asks for during a purge.
const PURGE_BATCH: usize = 500;
/// Reconnection attempts per failure before a waiting call gets the error; the next call
/// starts a new round.
const RECONNECT_RETRIES: usize = 3;

// The scripts are written for the server's time per call (every `redis.call` costs about as
// much as a small command): no helper closures, and the checks that need string scans
// (hex fields) run only when a cheaper comparison has not settled the question already.
// Numbers are written with `%.0f`, exact for integers below 2^53 (Lua numbers are doubles);
// epochs (microseconds) and deadlines (milliseconds) stay below it for centuries.

/// KEYS[1] record; ARGV owner, fingerprint, lease ms, record ttl ms, retention ms.
/// Replies `{'acquired', epoch}`, `{'completed', epoch, payload, ms left}`,
/// `{'in_flight', ms left}`, `{'mismatch'}` or `{'corrupt', reason}`.
const CLAIM_LUA: &str = r#"
local key, owner, fp = KEYS[1], ARGV[1], ARGV[2]
local record = redis.pcall('HMGET', key, 'v', 'state', 'owner', 'epoch', 'fingerprint',
  'lease_until', 'expires_at', 'payload')
if record.err then return {'corrupt', record.err} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Microseconds since the Unix epoch: below 2^53 until the year 2255, exact in a Lua number.
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])

local epoch = 0
local version, state, holder, stored_fp, payload =
  record[1], record[2], record[3], record[5], record[8]
if not (version or state or holder or record[4] or stored_fp or record[6] or record[7]
    or payload) then
  if redis.call('EXISTS', key) == 1 then return {'corrupt', 'a hash without record fields'} end
else
  epoch = tonumber(record[4])
  local lease_until, expires_at = tonumber(record[6]), tonumber(record[7])
  if version ~= '1' then return {'corrupt', 'unknown record format version'} end
  if not epoch or epoch < 0 or epoch % 1 ~= 0 or epoch >= 9007199254740992 then
    return {'corrupt', 'invalid epoch'}
  end
  if not expires_at or expires_at % 1 ~= 0 then return {'corrupt', 'invalid expires_at'} end
  if stored_fp ~= fp and (type(stored_fp) ~= 'string' or #stored_fp ~= 64
      or string.find(stored_fp, '[^0-9a-f]')) then
    return {'corrupt', 'invalid fingerprint'}
  end
  if state == 'completed' then
    if not payload then return {'corrupt', 'completed record without payload'} end
  elseif state == 'in_progress' then
    if holder ~= owner and (type(holder) ~= 'string' or #holder ~= 32
        or string.find(holder, '[^0-9a-f]')) then
      return {'corrupt', 'invalid owner'}
    end
    if not lease_until or lease_until % 1 ~= 0 then return {'corrupt', 'invalid lease_until'} end
  elseif state ~= 'released' then
    return {'corrupt', 'unknown state'}
  end

  -- Live (not past its ttl) and not released: the record decides.
  if expires_at > now and state ~= 'released' then
    if state == 'completed' then
      if stored_fp ~= fp then return {'mismatch'} end
      return {'completed', epoch, payload, expires_at - now}
    end
    if holder == owner then
      -- The same owner's claim, retried: same epoch, lease renewed.
      local renewed = now + tonumber(ARGV[3])
      local until_ms = math.max(expires_at, renewed)
      redis.call('HSET', key, 'lease_until', string.format('%.0f', renewed),
        'expires_at', string.format('%.0f', until_ms))
      redis.call('PEXPIREAT', key, string.format('%.0f', until_ms + tonumber(ARGV[5])))
      return {'acquired', epoch}
    end
    if lease_until > now then
      if stored_fp ~= fp then return {'mismatch'} end
      return {'in_flight', lease_until - now}
    end
  end
  -- Released, expired, or a lease that ran out: taken over with the next epoch.
  if payload then redis.call('HDEL', key, 'payload') end
end

-- Above the previous epoch and at least the clock, so a key's epochs never repeat, not even
-- after Redis dropped the record (expiry, eviction, a flush).
epoch = math.max(epoch + 1, now_us)
if epoch >= 9007199254740992 then return {'corrupt', 'epoch at its maximum'} end
local expires_at = now + tonumber(ARGV[4])
redis.call('HSET', key, 'v', '1', 'state', 'in_progress', 'owner', owner,
  'epoch', string.format('%.0f', epoch), 'fingerprint', fp,
  'lease_until', string.format('%.0f', now + tonumber(ARGV[3])),
  'expires_at', string.format('%.0f', expires_at))
redis.call('PEXPIREAT', key, string.format('%.0f', expires_at + tonumber(ARGV[5])))
return {'acquired', epoch}
"#;

/// KEYS[1] record; ARGV owner, epoch, payload, ttl ms, retention ms. A record this lease
/// already completed (a retried completion) is left as it is.
/// Replies `{'ok'}`, `{'lost'}` or `{'corrupt', reason}`.
const COMPLETE_LUA: &str = r#"
local key = KEYS[1]
local record = redis.pcall('HMGET', key, 'state', 'owner', 'epoch')
if record.err then return {'corrupt', record.err} end
if record[2] ~= ARGV[1] or record[3] ~= ARGV[2] then return {'lost'} end
if record[1] == 'completed' then return {'ok'} end
if record[1] ~= 'in_progress' then return {'lost'} end
local time = redis.call('TIME')
local expires_at = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  + tonumber(ARGV[4])
redis.call('HSET', key, 'state', 'completed', 'payload', ARGV[3],
  'expires_at', string.format('%.0f', expires_at))
redis.call('PEXPIREAT', key, string.format('%.0f', expires_at + tonumber(ARGV[5])))
return {'ok'}
"#;

/// KEYS[1] record; ARGV owner, epoch. The tombstone keeps its epoch and its expiry.
/// Replies `{'ok'}`, `{'lost'}` or `{'corrupt', reason}`.
const RELEASE_LUA: &str = r#"
local key = KEYS[1]
local record = redis.pcall('HMGET', key, 'state', 'owner', 'epoch')
if record.err then return {'corrupt', record.err} end
if record[1] ~= 'in_progress' or record[2] ~= ARGV[1] or record[3] ~= ARGV[2] then
  return {'lost'}
end
redis.call('HSET', key, 'state', 'released')
return {'ok'}
"#;

/// KEYS[1] record; ARGV owner, epoch, lease ms, retention ms.
/// Replies `{'ok'}`, `{'lost'}` or `{'corrupt', reason}`.
const EXTEND_LUA: &str = r#"
local key = KEYS[1]
local record = redis.pcall('HMGET', key, 'state', 'owner', 'epoch', 'expires_at')
if record.err then return {'corrupt', record.err} end
if record[1] ~= 'in_progress' or record[2] ~= ARGV[1] or record[3] ~= ARGV[2] then
  return {'lost'}
end
local time = redis.call('TIME')
local renewed = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  + tonumber(ARGV[3])
local until_ms = math.max(tonumber(record[4]) or 0, renewed)
redis.call('HSET', key, 'lease_until', string.format('%.0f', renewed),
  'expires_at', string.format('%.0f', until_ms))
redis.call('PEXPIREAT', key, string.format('%.0f', until_ms + tonumber(ARGV[4])))
return {'ok'}
"#;

/// KEYS: candidate records from one `SCAN` step. Deletes those whose `expires_at` passed and
/// replies how many. Keys that are not readable records are left alone.
const PURGE_LUA: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local removed = 0
for _, key in ipairs(KEYS) do
  local expires_at = redis.pcall('HGET', key, 'expires_at')
  if type(expires_at) == 'string' then
    local at = tonumber(expires_at)
    if at and at <= now then
      redis.call('DEL', key)
      removed = removed + 1
    end
  end
end
return removed
"#;

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    extend: Script,
    purge: Script,
}

/// Compiled once per process: `Script::new` computes each script's SHA-1.
static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: Script::new(CLAIM_LUA),
    complete: Script::new(COMPLETE_LUA),
    release: Script::new(RELEASE_LUA),
    extend: Script::new(EXTEND_LUA),
    purge: Script::new(PURGE_LUA),
});

const ALL_SCRIPTS: [&str; 5] = [CLAIM_LUA, COMPLETE_LUA, RELEASE_LUA, EXTEND_LUA, PURGE_LUA];

/// An [`IdempotencyStore`] in Redis: shared by every process that uses the same server and
/// key prefix.
///
/// Cheap to clone (clones share one multiplexed connection). See the [module
/// docs](crate::stores::redis) for the stored format and the scripts.
///
/// Durability is Redis's: with persistence off (or with `appendfsync everysec`, up to a second
/// of writes), a server restart forgets completed records and their keys run again. Use a
/// durable store where a restart must not repeat completed work.
///
/// ```no_run
/// use std::time::Duration;
/// use idempotent_core::{Call, Error, RedisStore};
///
/// # async fn run() -> Result<(), Error> {
/// let store = RedisStore::builder()
///     .key_prefix("billing:idem")
///     .timeout(Duration::from_secs(1))
///     .connect("redis://127.0.0.1:6379/")
///     .await?;
/// let receipt = Call::new(&store, "payments.charge", "order-42")
///     .run(async { Ok::<_, Error>(String::from("ch_1")) })
///     .await?;
/// assert_eq!(receipt.value, "ch_1");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    retention_ms: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("retention_ms", &self.inner.retention_ms)
            .finish_non_exhaustive()
    }
}

/// Builder for [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    prefix: String,
    timeout: Duration,
    retention: Duration,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        RedisStoreBuilder {
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            retention: DEFAULT_RETENTION,
        }
    }
}

impl RedisStoreBuilder {
    /// The first part of every key name (default `idem`): stores with different prefixes
    /// never see each other's records. Must not be empty or contain `{` or `}` (the record
    /// key's hash tag must be the first braces in the name).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest one store operation may take, including waiting for a reconnection
    /// (default 2 s). Past it the operation fails with [`Error::Store`]; a claim or complete
    /// that timed out may still have been applied by the server.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a record stays in Redis after its ttl ends (default 60 s): a claim in that
    /// window continues the record's epoch rather than starting at 1, and
    /// [`purge_expired`](IdempotencyStore::purge_expired) can delete it early. Redis deletes
    /// it at the end of the window by itself. With zero, Redis deletes a record as its ttl
    /// ends, so the next claim starts again at epoch 1 (the conformance suite's checks on
    /// expiry and purging then fail): keep it well above the longest lease.
    pub fn expired_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Connects to the server at `url` (`redis://host:port/db`, `rediss://` for TLS where the
    /// `redis` crate was built with it) and loads the scripts.
    pub async fn connect(self, url: &str) -> Result<RedisStore, Error> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(Error::InvalidInput {
                reason: format!(
                    "redis key prefix {:?} must be non-empty and contain no `{{` or `}}`",
                    self.prefix
                ),
            });
        }
        let client = redis::Client::open(url).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connect = async {
            let mut connection = ConnectionManager::new_with_config(client, config).await?;
            let mut load = redis::pipe();
            for code in ALL_SCRIPTS {
                load.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
            }
            load.query_async::<()>(&mut connection).await?;
            Ok::<_, redis::RedisError>(connection)
        };
        // Up to every reconnection attempt plus the script load, each bounded by `timeout`.
        let bound = self
            .timeout
            .saturating_mul(u32::try_from(RECONNECT_RETRIES + 2).unwrap_or(u32::MAX));
        let connection = tokio::time::timeout(bound, connect)
            .await
            .map_err(|_| timed_out(bound))?
            .map_err(store_error)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: self.prefix,
                timeout: self.timeout,
                retention_ms: millis_ceil(self.retention),
            }),
        })
    }
}

impl RedisStore {
    /// Connects with the default options: key prefix `idem`, 2 s operation timeout, 60 s
    /// retention of expired records.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), idempotent_core::Error> {
    /// let store = idempotent_core::RedisStore::connect("redis://127.0.0.1:6379/").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        RedisStoreBuilder::default().connect(url).await
    }

    /// Configures the key prefix, timeout and retention.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// The key prefix this store writes under.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The name of the Redis key that holds the record for `(scope, key)`, for operators who
    /// inspect or delete records by hand. See the [module docs](crate::stores::redis) for the
    /// derivation.
    pub fn record_key(&self, scope: &str, key: &str) -> String {
        record_key(&self.inner.prefix, scope, key)
    }

    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, Error> {
        let mut connection = self.inner.connection.clone();
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, invocation.invoke_async::<Value>(&mut connection)).await
        {
            Ok(reply) => reply.map_err(store_error),
            Err(_) => Err(timed_out(timeout)),
        }
    }

    /// Runs a compare-and-set script (complete, release, extend) and maps its reply.
    async fn compare_and_set(
        &self,
        lease: &Lease,
        record_key: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<(), Error> {
        let reply = self.invoke(invocation).await?;
        match Reply::parse(reply)? {
            Reply::Ok => Ok(()),
            Reply::Lost => Err(Error::LeaseLost),
            Reply::Corrupt(reason) => Err(corrupt(lease.scope(), record_key, &reason)),
            other => Err(unexpected(&other)),
        }
    }

    /// Lists this store's keys with `SCAN` and purges each batch with one script.
    async fn purge(&self) -> Result<u64, Error> {
        let pattern = format!("{}:{{*}}", glob_escape(&self.inner.prefix));
        let mut connection = self.inner.connection.clone();
        let mut cursor: u64 = 0;
        let mut removed: u64 = 0;
        loop {
            let step = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(PURGE_BATCH)
                .to_owned();
            let scanned = tokio::time::timeout(
                self.inner.timeout,
                step.query_async::<(u64, Vec<Vec<u8>>)>(&mut connection),
            )
            .await
            .map_err(|_| timed_out(self.inner.timeout))?
            .map_err(store_error)?;
            let (next, keys) = scanned;
            if !keys.is_empty() {
                let mut invocation = SCRIPTS.purge.prepare_invoke();
                for key in &keys {
                    invocation.key(key.as_slice());
                }
                match self.invoke(&invocation).await? {
                    Value::Int(count) => removed += u64::try_from(count).unwrap_or(0),
                    other => return Err(store_error(format!("unexpected purge reply {other:?}"))),
                }
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let record_key = self.record_key(request.scope, request.key);
        let owner = request.owner.to_string();
        let mut invocation = SCRIPTS.claim.prepare_invoke();
        invocation
            .key(&record_key)
            .arg(&owner)
            .arg(request.fingerprint.to_hex())
            .arg(millis_ceil(request.lease))
            .arg(millis_ceil(request.ttl.max(request.lease)))
            .arg(self.inner.retention_ms);
        let reply = self.invoke(&invocation).await?;
        match Reply::parse(reply)? {
            Reply::Acquired(epoch) => Ok(Claim::Acquired(Lease::new(
                request.scope,
                request.key,
                request.owner,
                epoch,
            ))),
            Reply::Completed {
                epoch,
                payload,
                expires_in,
            } => Ok(Claim::Completed(Record {
                payload,
                epoch,
                expires_in: Some(expires_in),
            })),
            Reply::InFlight(retry_after) => Ok(Claim::InFlight { retry_after }),
            Reply::Mismatch => Ok(Claim::PayloadMismatch),
            Reply::Corrupt(reason) => Err(corrupt(request.scope, &record_key, &reason)),
            other => Err(unexpected(&other)),
        }
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        let record_key = self.record_key(lease.scope(), lease.key());
        let mut invocation = SCRIPTS.complete.prepare_invoke();
        invocation
            .key(&record_key)
            .arg(lease.owner().to_string())
            .arg(lease.epoch())
            .arg(payload.as_ref())
            .arg(millis_ceil(ttl))
            .arg(self.inner.retention_ms);
        self.compare_and_set(lease, &record_key, &invocation).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let record_key = self.record_key(lease.scope(), lease.key());
        let mut invocation = SCRIPTS.release.prepare_invoke();
        invocation
            .key(&record_key)
            .arg(lease.owner().to_string())
            .arg(lease.epoch());
        self.compare_and_set(lease, &record_key, &invocation).await
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        let record_key = self.record_key(lease.scope(), lease.key());
        let mut invocation = SCRIPTS.extend.prepare_invoke();
        invocation
            .key(&record_key)
            .arg(lease.owner().to_string())
            .arg(lease.epoch())
            .arg(millis_ceil(lease_for))
            .arg(self.inner.retention_ms);
        self.compare_and_set(lease, &record_key, &invocation).await
    }

    /// Spawns the release on the current tokio runtime (sharing this store's connection); with
    /// no runtime it does nothing and the claim expires with its lease.
    fn release_in_background(&self, lease: Lease) {
        crate::store::spawn_release(self.clone(), lease);
    }

    /// Gives up a claim whose answer never arrived, on the current tokio runtime (see
    /// [`spawn_abandon`](crate::store::spawn_abandon)). The connection is one multiplexed
    /// stream, so the second claim reaches Redis after the lost one.
    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        crate::store::spawn_abandon(self.clone(), request);
    }

    /// Redis deletes records by itself (`PEXPIREAT`, at the end of the ttl plus the
    /// [retention](RedisStoreBuilder::expired_retention)), so calling this is never required.
    /// It deletes, now, the records of this store's prefix whose ttl has passed but whose
    /// retention has not, and returns how many it deleted (records Redis already removed are
    /// not counted). It walks the prefix with `SCAN`, one round trip per few hundred keys: a
    /// maintenance call, not one for a request path.
    async fn purge_expired(&self) -> Result<u64, Error> {
        self.purge().await
    }
}

/// What a script answered, checked for shape.
#[derive(Debug)]
enum Reply {
    Acquired(u64),
    Completed {
        epoch: u64,
        payload: Bytes,
        expires_in: Duration,
    },
    InFlight(Duration),
    Mismatch,
    Ok,
    Lost,
    Corrupt(String),
}

impl Reply {
    fn parse(reply: Value) -> Result<Reply, Error> {
        let Value::Array(items) = reply else {
            return Err(store_error(format!("unexpected script reply {reply:?}")));
        };
        let mut items = items.into_iter();
        let (Some(Value::BulkString(tag)), first, second, third, None) = (
            items.next(),
            items.next(),
            items.next(),
            items.next(),
            items.next(),
        ) else {
            return Err(store_error("unexpected script reply shape"));
        };
        let reply = match (tag.as_slice(), first, second, third) {
            (b"acquired", Some(Value::Int(epoch)), None, None) => Reply::Acquired(epoch_of(epoch)?),
            (
                b"completed",
                Some(Value::Int(epoch)),
                Some(Value::BulkString(payload)),
                Some(Value::Int(left)),
            ) => Reply::Completed {
                epoch: epoch_of(epoch)?,
                payload: Bytes::from(payload),
                expires_in: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
            },
            (b"in_flight", Some(Value::Int(left)), None, None) => {
                Reply::InFlight(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
            }
            (b"mismatch", None, None, None) => Reply::Mismatch,
            (b"ok", None, None, None) => Reply::Ok,
            (b"lost", None, None, None) => Reply::Lost,
            (b"corrupt", Some(Value::BulkString(reason)), None, None) => {
                Reply::Corrupt(String::from_utf8_lossy(&reason).into_owned())
            }
            (b"corrupt", Some(Value::SimpleString(reason)), None, None) => Reply::Corrupt(reason),
            (tag, first, second, third) => {
                return Err(store_error(format!(
                    "unexpected script reply {:?} {first:?} {second:?} {third:?}",
                    String::from_utf8_lossy(tag)
                )));
            }
        };
        Ok(reply)
    }
}

fn epoch_of(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| store_error(format!("negative epoch {value} in reply")))
}

fn unexpected(reply: &Reply) -> Error {
    store_error(format!("script reply {reply:?} does not fit the operation"))
}

fn corrupt(scope: &str, record_key: &str, reason: &str) -> Error {
    Error::decode(
        scope,
        format!("redis record `{record_key}` is unreadable: {reason}"),
    )
}

fn store_error(error: impl Into<crate::error::BoxError>) -> Error {
    Error::store(BACKEND, error)
}

fn timed_out(after: Duration) -> Error {
    store_error(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("redis operation timed out after {after:?}"),
    ))
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `{prefix}:{<hex sha256 of the length-prefixed scope and key>}`: no caller input in the name,
/// and the digest is the cluster hash tag.
pub(crate) fn record_key(prefix: &str, scope: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hash_part(&mut hasher, scope.as_bytes());
    hash_part(&mut hasher, key.as_bytes());
    tagged_key(prefix, hasher)
}

/// Feeds `part` to `hasher` length-prefixed: its byte count as a big-endian `u64`, then its
/// bytes, so that no two sequences of parts feed the same bytes. Also used for the tiered
/// store's cache keys.
pub(crate) fn hash_part(hasher: &mut Sha256, part: &[u8]) {
    hasher.update((part.len() as u64).to_be_bytes());
    hasher.update(part);
}

/// `{prefix}:{<lowercase hex of the digest>}`: the digest inside braces is the Redis Cluster
/// hash tag. Also names the tiered store's cache entries.
pub(crate) fn tagged_key(prefix: &str, hasher: Sha256) -> String {
    let digest = hasher.finalize();
    let mut name = String::with_capacity(prefix.len() + 3 + 2 * digest.len());
    name.push_str(prefix);
    name.push_str(":{");
    for byte in digest {
        name.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        name.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    name.push('}');
    name
}

/// Escapes the characters Redis glob patterns treat specially.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A server reply as plain data, for the crate's own tests and benchmarks.
#[cfg(feature = "testing")]
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawReply {
    /// No value.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Data(Vec<u8>),
    /// A status or other simple reply, as text.
    Status(String),
    /// An array (maps and sets are flattened into one).
    Array(Vec<RawReply>),
}

#[cfg(feature = "testing")]
impl RawReply {
    fn from_value(value: Value) -> RawReply {
        match value {
            Value::Nil => RawReply::Nil,
            Value::Int(n) => RawReply::Int(n),
            Value::BulkString(data) => RawReply::Data(data),
            Value::SimpleString(text) => RawReply::Status(text),
            Value::Okay => RawReply::Status("OK".to_owned()),
            Value::VerbatimString { text, .. } => RawReply::Data(text.into_bytes()),
            Value::Array(items) | Value::Set(items) => {
                RawReply::Array(items.into_iter().map(RawReply::from_value).collect())
            }
            Value::Map(pairs) => RawReply::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [RawReply::from_value(k), RawReply::from_value(v)])
                    .collect(),
            ),
            Value::Boolean(b) => RawReply::Int(i64::from(b)),
            other => RawReply::Status(format!("{other:?}")),
        }
    }
}

#[cfg(feature = "testing")]
impl RedisStore {
    /// Sends one raw command on the store's connection. Not public API: it exists so this
    /// crate's tests and benchmarks can reach the server through the same client without
    /// depending on the `redis` crate themselves, and may change or go away at any time.
    #[doc(hidden)]
    pub async fn raw_command(&self, args: &[&[u8]]) -> Result<RawReply, Error> {
        let Some((name, rest)) = args.split_first() else {
            return Err(Error::InvalidInput {
                reason: "an empty command".to_owned(),
            });
        };
        let name = std::str::from_utf8(name).map_err(|error| Error::InvalidInput {
            reason: format!("command name: {error}"),
        })?;
        let mut command = redis::cmd(name);
        for arg in rest {
            command.arg(*arg);
        }
        let mut connection = self.inner.connection.clone();
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, command.query_async::<Value>(&mut connection)).await {
            Ok(reply) => reply.map(RawReply::from_value).map_err(store_error),
            Err(_) => Err(timed_out(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_are_hashed_length_prefixed_and_tagged() {
        // Golden: sha256(be_u64(5) "scope" be_u64(3) "key"), computed independently (Python hashlib).
        assert_eq!(
            record_key("idem", "scope", "key"),
            "idem:{b5a3bb5dda8aa6577d161934bb19196151a1f9e8912093525d02ae8455fed2f4}"
        );
        assert_ne!(
            record_key("idem", "a:b", "c"),
            record_key("idem", "a", "b:c")
        );
    }

    #[test]
    fn glob_specials_are_escaped() {
        assert_eq!(glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
