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
//! | `owner` | always | the [`OwnerId`](crate::store::OwnerId) of the latest claim, 32 lowercase hex characters |
//! | `lease_until` | always | when the latest claim's lease ends: Unix milliseconds on the server clock |
//! | `payload` | `completed` | the stored result, raw bytes |
//!
//! `owner` and `lease_until` decide only while the record is `in_progress`; completing or
//! releasing leaves them in place (as a record of the last claim) rather than spend a command
//! on deleting them.
//!
//! Every write except a release and a forget (which keep the record's expiry) also sets `PEXPIREAT` to
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
//! - **record** reads the record for [`IdempotencyStore::inspect`], and for
//!   [`IdempotencyStore::forget`] also turns it into a released one (refusing a live lease
//!   unless forced). Claims and it read and check the record with the same Lua.
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

mod builder;
mod keys;
mod reply;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{ScriptInvocation, Value};

pub use builder::RedisStoreBuilder;
use keys::glob_escape;
pub(crate) use keys::record_key;
#[cfg(feature = "tiered")]
pub(crate) use keys::{hash_part, tagged_key};
/// The `redis` crate this store is built on, so that the client and connection manager you
/// pass to [`RedisStoreBuilder::connect_with_client`] and
/// [`RedisStoreBuilder::connect_with_manager`] are of the same version.
pub use redis;
use reply::{RecordReply, Reply, corrupt, unexpected};
use scripts::SCRIPTS;

use crate::error::Error;
use crate::store::time::millis_ceil;
use crate::store::{Claim, ClaimRequest, Forget, IdempotencyStore, Lease, Record, RecordState};
use crate::stores::redis_connection::{Connection, store_error};

/// How many keys one `SCAN` step asks for during a purge.
const PURGE_BATCH: usize = 500;

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
    connection: Connection,
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
        self.inner.connection.invoke(invocation).await
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

    /// Runs `record.lua` in `mode` (inspect, forget, force) and maps its reply.
    async fn record(&self, scope: &str, key: &str, mode: &str) -> Result<RecordState, Error> {
        let record_key = self.record_key(scope, key);
        let mut invocation = SCRIPTS.record.prepare_invoke();
        invocation.key(&record_key).arg(mode);
        match RecordReply::parse(scope, self.invoke(&invocation).await?)? {
            RecordReply::Absent => Ok(RecordState::Absent),
            RecordReply::Record(state) => Ok(state),
            RecordReply::Refused(retry_after) => Err(Error::InFlight { retry_after }),
            RecordReply::Corrupt(reason) => Err(corrupt(scope, &record_key, &reason)),
        }
    }

    /// Lists this store's keys with `SCAN` and purges each batch with one script.
    async fn purge(&self) -> Result<u64, Error> {
        let pattern = format!("{}:{{*}}", glob_escape(&self.inner.prefix));
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
            let (next, keys) = self
                .inner
                .connection
                .query::<(u64, Vec<Vec<u8>>)>(&step)
                .await?;
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

    crate::store::spawned_background_work!();

    fn backend_name(&self) -> &'static str {
        "redis"
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

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.record(scope, key, "inspect").await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        let mode = match mode {
            Forget::UnlessLeased => "forget",
            Forget::EvenIfLeased => "force",
        };
        self.record(scope, key, mode).await
    }
}
