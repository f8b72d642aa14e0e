//! The PostgreSQL store (feature `postgres`): shared, durable, and transactional.
//!
//! [`PostgresStore`] keeps one row per `(scope, key)` in a table it can create itself
//! ([`PostgresStore::migrate`]). Every decision is one SQL statement, deadlines are computed on
//! the server's clock (`statement_timestamp()`), and queries are built at run time (sqlx
//! `query`, never `query!`), so building a program that uses this store needs no database.
//!
//! ```no_run
//! use idempotent_core::{Error, PostgresStore, idempotent};
//!
//! #[idempotent(key = "order_id", store = store)]
//! async fn charge(store: &PostgresStore, order_id: u64, amount: u64) -> Result<String, Error> {
//!     Ok(format!("ch_{order_id}_{amount}"))
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Error> {
//! let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
//! store.migrate().await?; // CREATE TABLE IF NOT EXISTS, then checks its shape; safe on every start
//! let receipt = charge(&store, 42, 1_999).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Schema (a persisted format)
//!
//! The table (default `idempotency_records`, see [`PostgresStoreBuilder::table`]):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "idempotency_records" (
//!     scope       bytea       NOT NULL,  -- the scope's UTF-8 bytes
//!     key         bytea       NOT NULL,  -- the key's UTF-8 bytes
//!     state       text        NOT NULL,  -- 'in_progress' | 'completed' | 'released'
//!     owner       bytea,                 -- the last claimant (OwnerId: 16 bytes, big-endian)
//!     epoch       bigint      NOT NULL,  -- fencing token: above the previous one, >= clock in µs
//!     fingerprint bytea       NOT NULL,  -- the 32-byte request fingerprint
//!     lease_until timestamptz,           -- in_progress only: the claim holds until then
//!     expires_at  timestamptz NOT NULL,  -- past it, the row is as good as absent
//!     payload     bytea,                 -- completed only: the stored result
//!     PRIMARY KEY (scope, key)
//! );
//! CREATE INDEX IF NOT EXISTS "idempotency_records_expires_at_idx"
//!     ON "idempotency_records" (expires_at);
//! ```
//!
//! Scope and key are `bytea` rather than `text` because keys may hold any string, including
//! NUL, which PostgreSQL `text` rejects (`convert_from(key, 'UTF8')` shows them in `psql`).
//! Both sit in the primary key, whose entries PostgreSQL caps at about 2.7 KB, so a claim whose
//! scope and key together exceed 2,048 bytes fails with [`Error::InvalidInput`]. The payload is
//! opaque to the store; the engine writes format byte `0x01` (success) or `0x02` (cached error)
//! followed by JSON. A released row is a tombstone that keeps the epoch counting until it
//! expires.
//!
//! [`PostgresStore::migrate`] creates this table if it does not exist, and refuses one that
//! exists with another shape (a column missing, of another type or nullability, an extra
//! `NOT NULL` column without a default, no unique key on `(scope, key)`) with
//! [`Error::InvalidInput`] naming each difference. Extra columns the store never has to write
//! (nullable, or with a default) are fine.
//!
//! # Unreadable rows
//!
//! The claim validates the row before it decides anything: a negative epoch (or one at
//! `bigint`'s maximum, after which no epoch exists), an unknown `state`, a fingerprint that is
//! not 32 bytes, an owner that is not 16, an in-progress row without owner or lease deadline,
//! a completed row without payload. Such a row makes every claim fail with [`Error::Decode`],
//! and the claim never writes over it, not even past its ttl: it is never taken for absent,
//! which would run the body a second time, and a takeover would compute the new epoch from a
//! corrupt one. Repair or delete the row; [`purge_expired`](IdempotencyStore::purge_expired)
//! deletes it like any other once its ttl has passed.
//!
//! # The claim: one statement
//!
//! ```sql
//! WITH cur AS (                          -- the row as this statement's snapshot sees it
//!     SELECT epoch, state, fingerprint = $3, payload, lease_until,
//!            <takeable(c)> AS takeable, <why c is unreadable, or NULL> AS unreadable
//!     FROM t AS c WHERE scope = $1 AND key = $2
//! ), up AS (
//!     INSERT INTO t AS r (...)
//!     SELECT $1, $2, 'in_progress', $4, clock_us, $3, now + $5, now + $6, NULL
//!     WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.unreadable IS NOT NULL OR NOT cur.takeable)
//!       AND set_config('lock_timeout', '<lock timeout>', true) IS NOT NULL
//!     ON CONFLICT (scope, key) DO UPDATE SET
//!         epoch = CASE WHEN <r is $4's own live claim> THEN r.epoch
//!                      ELSE GREATEST(r.epoch + 1, clock_us) END,
//!         state = 'in_progress', owner = excluded.owner, ...
//!     WHERE <readable(r)> AND <takeable(r)>
//!     RETURNING r.epoch
//! )
//! SELECT (SELECT epoch FROM up),         -- not NULL: acquired, with this epoch
//!        cur.epoch, cur.state, ...,      -- otherwise: what the snapshot holds
//!        cur.lease_until - now, cur.takeable, cur.expires_at - now, cur.unreadable
//! FROM (SELECT) AS one LEFT JOIN cur ON true
//! ```
//!
//! where `readable(x)` holds the checks listed above, `takeable(x)` is: past its ttl, or
//! released, or in progress and either claimed by `$4` (a retried claim) or with its lease
//! expired; `now` is `statement_timestamp()`, `clock_us` the same instant in microseconds
//! since the Unix epoch (so a new epoch stays above every earlier epoch of the key, even once
//! its row was purged), `$5` and `$6` the lease and the ttl as intervals.
//!
//! Why it is shaped like this:
//! - `INSERT ... ON CONFLICT DO UPDATE ... WHERE` decides atomically: the conflicting row is
//!   locked and the `WHERE` is evaluated on its latest committed version, even one committed
//!   after the statement's snapshot. Two claimers cannot both take a key over. The `CASE`
//!   renews the owner's own live claim (a retried claim) without bumping the epoch; a
//!   takeover bumps it.
//! - The common answers for an existing record (replay a completed result, report a live
//!   claim in flight, report a mismatch) are read from `cur` and skip the insert
//!   (`WHERE NOT EXISTS`): one round trip that locks no row and writes nothing, so a replay
//!   commits without flushing anything. A completed row cannot change until it expires, so
//!   reading it from the snapshot is exact; an in-flight answer was true at the snapshot,
//!   which is within the call.
//! - When `cur` is stale (the row was inserted, completed or released after the snapshot and
//!   the upsert found a row it may not take over), the statement returns no epoch and either
//!   no snapshot row or one marked takeable: the claim runs again with a fresh snapshot, at
//!   most five times. A serialization failure or deadlock (possible only when the server's
//!   default isolation is stricter than `READ COMMITTED`) is retried the same way.
//! - Readability is checked on the row the upsert locked, its latest version, before the
//!   `SET` computes anything from it: the epoch formula would otherwise turn a negative epoch
//!   into a plausible one. On the snapshot, `unreadable` alone decides (the checks run once
//!   per replay).
//! - `set_config(..., true)` sets `lock_timeout` for the statement's own transaction (a claim
//!   runs in autocommit) before the upsert reaches the row, and PostgreSQL reads it when a
//!   lock wait begins; see [Timeouts](#timeouts).
//! - The price of one statement: even when it inserts nothing, PostgreSQL sets up the insert
//!   (its `ON CONFLICT` projection and quals) on every execution, so a replay costs the
//!   server about 1.4 times a plain primary-key `SELECT`.
//!
//! `complete`, `release` and `extend` are one compare-and-set `UPDATE ... WHERE scope = $1 AND
//! key = $2 AND state = 'in_progress' AND owner = $3 AND epoch = $4`; no row updated is
//! [`Error::LeaseLost`]. A fresh call therefore costs two statements (claim, complete) and a
//! replay one.
//!
//! # Transactional mode
//!
//! When the body's effects are writes to the same database, [`PostgresStore::transactional`]
//! (or [`PostgresStore::complete_in`] for a hand-rolled flow) records the result in the same
//! transaction as those writes: they commit together or not at all. See [`TransactionalCall`]
//! for exactly what that guarantees.
//!
//! # Timeouts
//!
//! Every operation is bounded by [`PostgresStoreBuilder::timeout`] (default 5 s), counted from
//! its start, waiting for a pool connection included: a claim (with its retries), a
//! completion (and the statement of [`PostgresStore::complete_in`]), a release, an extension,
//! each batch of [`purge_expired`](IdempotencyStore::purge_expired),
//! [`migrate`](PostgresStore::migrate), and the `BEGIN`, `COMMIT` and `ROLLBACK` of
//! transactional mode. A server that stops answering (a network partition, a stopped process)
//! makes the operation fail with [`Error::Store`] whose source is an
//! [`io::ErrorKind::TimedOut`] error, and the call fails closed. The connection is then closed
//! rather than returned to the pool, whose next connection is a fresh one. A claim or
//! completion that timed out may still have been applied by the server: a completion is
//! harmless to repeat; a claim that was granted is held until its lease expires. The default
//! is far above a healthy round trip, even on a loaded server, and short enough that a call
//! fails well within the default 30 s lease, while a heartbeat (every third of the lease)
//! that timed out still leaves the next one time to land.
//!
//! A claim also bounds its wait for the record's row lock, held when another transaction is
//! changing the record (a transactional-mode completion not yet committed, a takeover, a
//! `SELECT ... FOR UPDATE` of your own): [`PostgresStoreBuilder::lock_timeout`], default
//! 100 ms, set for the claim statement alone, never on the pool's connections (transactional
//! mode runs your own SQL on them). A claim that runs out of it reports the key in flight,
//! with the lock timeout as `retry_after`, so the call waits within its wait budget, or is
//! rejected, as for any in-flight duplicate; the connection is free again at once. Keep it
//! well below the timeout, or the timeout ends the claim first, as an [`Error::Store`].
//!
//! # Connections
//!
//! [`PostgresStore::connect`] builds a pool of 16 connections that are not pinged before each
//! use (sqlx's `test_before_acquire` is off), so a replay costs one round trip rather than two.
//! A connection the server dropped while it sat idle fails the one call that picks it up, with
//! [`Error::Store`] (the call fails closed), and is then replaced. While the server is down,
//! calls fail after the timeout, or the pool's acquire timeout if it is shorter (5 s, see
//! [`PostgresStoreBuilder::acquire_timeout`]). Pass your own pool to
//! [`PostgresStore::from_pool`] or [`PostgresStoreBuilder::build`] to choose otherwise. sqlx
//! is re-exported ([`sqlx`]) so that the pool and transaction types you pass in match the
//! version the store is built with.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};
use tokio::time::Instant;

use crate::engine::record::{Recorder, release_quietly};
use crate::engine::{Call, CallOptions, OnStoreError, Outcome};
use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::encoding::{
    COMPLETED, IN_PROGRESS, lease_column_epoch, owner_bytes, stored_epoch,
};
use crate::store::time::{capped, micros};
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, Record};
use crate::stores::table_name::{MAX_IDENTIFIER_LEN, TableName};

/// The sqlx crate this store is built with, so that the [`PgPool`] and
/// [`Transaction`](sqlx::Transaction) types a caller passes in are the ones it expects.
pub use sqlx;

const BACKEND: &str = "postgres";
const DEFAULT_TABLE: &str = "idempotency_records";
const DEFAULT_MAX_CONNECTIONS: u32 = 16;
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one store operation may take, waiting for a connection included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a claim waits for a row lock another transaction holds.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(100);
/// The longest scope plus key a claim accepts: both sit in the primary key, whose entries
/// PostgreSQL caps at 2,704 bytes on the default 8 KiB page.
const MAX_SCOPE_AND_KEY_BYTES: usize = 2048;
/// How often a claim runs again when its snapshot was stale or it hit a transient conflict.
const CLAIM_ATTEMPTS: usize = 5;
/// Rows deleted per statement by `purge_expired`, so a large purge never holds many locks.
const PURGE_BATCH: i64 = 1000;

/// A PostgreSQL-backed [`IdempotencyStore`]: shared between processes and durable.
///
/// Cheap to clone (clones share the pool). Create the table once with
/// [`migrate`](Self::migrate), or with your own migrations from the schema in the
/// [module docs](self).
///
/// ```no_run
/// use idempotent_core::{Error, PostgresStore};
///
/// # async fn run() -> Result<(), Error> {
/// let store = PostgresStore::builder()
///     .table("billing.idempotency")
///     .max_connections(32)
///     .connect("postgres://app@db.internal/app")
///     .await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// As configured: `table` or `schema.table`.
    table: String,
    /// Quoted for SQL: `"table"` or `"schema"."table"`.
    table_sql: String,
    timeout: Duration,
    lock_timeout: Duration,
    sql: Statements,
}

/// Every statement, built once per store with the table name in it.
struct Statements {
    create_table: Arc<str>,
    create_index: Arc<str>,
    columns: Arc<str>,
    unique_key: Arc<str>,
    claim: Arc<str>,
    complete: Arc<str>,
    release: Arc<str>,
    extend: Arc<str>,
    purge: Arc<str>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.table)
            .field("timeout", &self.inner.timeout)
            .field("lock_timeout", &self.inner.lock_timeout)
            .field("pool_size", &self.inner.pool.size())
            .finish_non_exhaustive()
    }
}

/// Builder for [`PostgresStore`]: the table name, the timeouts and, for
/// [`connect`](Self::connect), the pool settings.
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    table: String,
    timeout: Duration,
    lock_timeout: Duration,
    max_connections: u32,
    acquire_timeout: Duration,
}

impl Default for PostgresStoreBuilder {
    fn default() -> Self {
        PostgresStoreBuilder {
            table: DEFAULT_TABLE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl PostgresStoreBuilder {
    /// The table to keep records in. Default `idempotency_records`.
    ///
    /// A lowercase identifier matching `^[a-z_][a-z0-9_]{0,62}$`, optionally qualified by a
    /// schema that matches the same pattern (`billing.idempotency`). Anything else fails with
    /// [`Error::InvalidInput`] when the store is built: the name goes into SQL text (quoted),
    /// so it is checked rather than escaped.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The longest one store operation may take (default 5 s): a claim, a completion (also
    /// the statement of [`PostgresStore::complete_in`]), a release, an extension, one batch of
    /// [`purge_expired`](IdempotencyStore::purge_expired), [`PostgresStore::migrate`], and
    /// the begin and commit of [transactional mode](PostgresStore::transactional). It counts
    /// from the start of the operation, so it includes waiting for a pool connection.
    ///
    /// Past it the operation fails with [`Error::Store`] (whose source says it timed out) and
    /// the call fails closed; the connection it was using is closed rather than returned to
    /// the pool, since its state is unknown. A claim or completion that timed out may still
    /// have been applied by the server. Applies to [`build`](Self::build) too.
    /// `Duration::MAX` means no timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a claim waits for a row lock held by another transaction (default 100 ms),
    /// set for the claim statement alone (the pool's connections keep their own
    /// `lock_timeout`). A claim that runs out of it reports the key as in flight, with this as
    /// its `retry_after`: another transaction is changing the record right now. Rounded up to
    /// whole milliseconds, at least 1 ms. Applies to [`build`](Self::build) too.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The pool size [`connect`](Self::connect) uses. Default 16. Ignored by
    /// [`build`](Self::build), which takes a pool as it is.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long a call waits for a pool connection (all busy, or the server unreachable)
    /// before failing with [`Error::Store`]. Default 5 s. Used by [`connect`](Self::connect)
    /// only.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Connects a new pool to `url` (a `postgres://` URL) and builds the store.
    ///
    /// One connection attempt is made at once, so an unreachable server or a wrong password
    /// fails here, with [`Error::Store`] (a malformed URL or table name with
    /// [`Error::InvalidInput`]); the pool then opens connections as calls need them.
    pub async fn connect(self, url: &str) -> Result<PostgresStore, Error> {
        let table = PgTable::parse(&self.table)?;
        let options: PgConnectOptions = url.parse().map_err(|error| match error {
            sqlx::Error::Configuration(reason) => Error::InvalidInput {
                reason: format!("invalid PostgreSQL connection URL: {reason}"),
            },
            other => store_error(other),
        })?;
        // sqlx's pool retries a refused connection until its acquire timeout; one direct
        // attempt reports a server that is down now.
        PgConnection::connect_with(&options)
            .await
            .map_err(store_error)?
            .close()
            .await
            .map_err(store_error)?;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // A ping before every use would double the round trips of a replay. A connection
            // the server dropped while idle fails one call instead (fail closed) and is
            // replaced when it is returned.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(PostgresStore::with_settings(pool, table, &self))
    }

    /// Builds the store on an existing pool (the pool keeps its own settings; the store's
    /// [`timeout`](Self::timeout) and [`lock_timeout`](Self::lock_timeout) apply).
    pub fn build(self, pool: PgPool) -> Result<PostgresStore, Error> {
        let table = PgTable::parse(&self.table)?;
        Ok(PostgresStore::with_settings(pool, table, &self))
    }
}

impl PostgresStore {
    /// Connects to `url` with the default table (`idempotency_records`) and a pool of 16
    /// connections (see [`PostgresStoreBuilder::connect`]). Fails with [`Error::Store`] if the
    /// server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        PostgresStoreBuilder::default().connect(url).await
    }

    /// A store on an existing pool, with the default table.
    ///
    /// This puts a sqlx type in this crate's API, as transactional mode must anyway: the pool
    /// must come from the same sqlx version ([`sqlx`] is re-exported for that).
    pub fn from_pool(pool: PgPool) -> Self {
        let settings = PostgresStoreBuilder::default();
        PostgresStore::with_settings(pool, PgTable::default_table(), &settings)
    }

    /// Configures the table name, timeouts and pool size.
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::default()
    }

    fn with_settings(pool: PgPool, table: PgTable, settings: &PostgresStoreBuilder) -> Self {
        let sql = Statements::new(&table, settings.lock_timeout);
        PostgresStore {
            inner: Arc::new(Inner {
                pool,
                table: table.display,
                table_sql: table.quoted,
                timeout: settings.timeout,
                lock_timeout: settings.lock_timeout,
                sql,
            }),
        }
    }

    /// The pool the store runs its statements on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The table name, as configured (`schema.table` or `table`).
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// Creates the table and its expiry index if they do not exist (the schema is in the
    /// [module docs](self)), then checks that the table has the shape the store needs. Safe
    /// to run on every start and from several processes at once: concurrent runs are
    /// serialized by an advisory lock. Bounded by [`PostgresStoreBuilder::timeout`], waiting
    /// for a concurrent run included.
    ///
    /// An existing table of another shape fails with [`Error::InvalidInput`] (it is a
    /// configuration to fix, not an outage to retry), naming every difference: a column of
    /// the schema that is missing, of another type or of another nullability; a `NOT NULL`
    /// column without a default that the store would never fill; no primary key or unique
    /// index on exactly `(scope, key)`. Nothing is created then. Other columns are accepted
    /// (nullable, or with a default): the store never writes them.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.bounded("migration", self.migrate_unbounded()).await
    }

    async fn migrate_unbounded(&self) -> Result<(), Error> {
        let mut tx = self.inner.pool.begin().await.map_err(store_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("idempotent.migrate:{}", self.inner.table))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(sql(&self.inner.sql.create_table))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        // Checked before the index is created, which would otherwise fail on a table without
        // `expires_at` with a less helpful message.
        let columns: Vec<FoundColumn> = sqlx::query(sql(&self.inner.sql.columns))
            .bind(&self.inner.table_sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?
            .iter()
            .map(FoundColumn::from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)?;
        let unique_key: bool = sqlx::query_scalar(sql(&self.inner.sql.unique_key))
            .bind(&self.inner.table_sql)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        let differences = shape_differences(&columns, unique_key);
        if !differences.is_empty() {
            return Err(Error::InvalidInput {
                reason: format!(
                    "table {} does not have the shape PostgresStore needs (see the schema in \
                     the PostgresStore docs): {}",
                    self.inner.table,
                    differences.join("; ")
                ),
            });
        }
        sqlx::query(sql(&self.inner.sql.create_index))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }

    /// Records `payload` as the completed result of `lease`, inside the caller's transaction.
    ///
    /// Pass the transaction (`&mut tx` for a `sqlx::Transaction`); the result becomes visible,
    /// and replayable, only when that transaction commits, together with everything else it
    /// wrote. Compare-and-set like [`IdempotencyStore::complete`]: if the claim was taken over
    /// (or released), nothing is written and the call fails with [`Error::LeaseLost`], and the
    /// caller must roll back. The update locks the record's row until the transaction ends, so
    /// commit soon after. The transaction should run at `READ COMMITTED` (PostgreSQL's
    /// default): at a stricter level, a heartbeat that extended the lease after the
    /// transaction's snapshot makes this update fail with a serialization error
    /// ([`Error::Store`]).
    ///
    /// The statement is bounded by [`PostgresStoreBuilder::timeout`]; after a timeout
    /// ([`Error::Store`]) the connection may still be waiting for its answer, so roll back
    /// (or drop) the transaction.
    ///
    /// A hand-rolled flow has no heartbeat: the lease must outlast the work, or the caller
    /// [`extend`](IdempotencyStore::extend)s it (on the pool, not in the transaction). For
    /// [`Call`] and [`TransactionalCall`] to replay the record, `payload` must be in the
    /// engine's format: byte `0x01`, then the value as JSON.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use idempotent_core::{IdempotencyStore, PostgresStore};
    /// use idempotent_core::key::Fingerprint;
    /// use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
    ///
    /// # async fn run(store: PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let request = ClaimRequest {
    ///     scope: "orders.ship",
    ///     key: "order-17",
    ///     fingerprint: Fingerprint::NONE,
    ///     owner: OwnerId::new(),
    ///     lease: Duration::from_secs(30),
    ///     ttl: Duration::from_secs(86_400),
    /// };
    /// if let Claim::Acquired(lease) = store.claim(&request).await? {
    ///     let mut tx = store.pool().begin().await?;
    ///     // ... the work, written through `&mut *tx` ...
    ///     match store.complete_in(&mut tx, &lease, "\x01\"shipped\"".into(), request.ttl).await {
    ///         Ok(()) => tx.commit().await?,
    ///         Err(error) => {
    ///             tx.rollback().await?;
    ///             return Err(error.into());
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn complete_in(
        &self,
        transaction: &mut PgConnection,
        lease: &Lease,
        payload: Bytes,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.bounded(
            "completion",
            self.complete_unbounded(transaction, lease, payload, ttl),
        )
        .await
    }

    async fn complete_unbounded(
        &self,
        connection: &mut PgConnection,
        lease: &Lease,
        payload: Bytes,
        ttl: Duration,
    ) -> Result<(), Error> {
        let epoch = lease_column_epoch(lease.epoch()).ok_or(Error::LeaseLost)?;
        let updated = sqlx::query(sql(&self.inner.sql.complete))
            .bind(lease.scope().as_bytes())
            .bind(lease.key().as_bytes())
            .bind(&owner_bytes(lease.owner())[..])
            .bind(epoch)
            .bind(&payload[..])
            .bind(interval(ttl))
            .execute(&mut *connection)
            .await
            .map_err(store_error)?
            .rows_affected();
        if updated == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost)
        }
    }

    /// Starts a call whose body runs inside a database transaction that also records its
    /// result (transactional mode). See [`TransactionalCall`].
    pub fn transactional<'a>(&'a self, scope: &'a str, key: &'a str) -> TransactionalCall<'a> {
        TransactionalCall {
            store: self,
            call: Call::new(self, scope, key),
        }
    }

    /// Runs a compare-and-set update on the lease's row; no row updated is `LeaseLost`.
    async fn update_lease(
        &self,
        operation: &'static str,
        statement: &Arc<str>,
        lease: &Lease,
        lease_for: Option<PgInterval>,
    ) -> Result<(), Error> {
        let epoch = lease_column_epoch(lease.epoch()).ok_or(Error::LeaseLost)?;
        let mut query = sqlx::query(sql(statement))
            .bind(lease.scope().as_bytes())
            .bind(lease.key().as_bytes())
            .bind(&owner_bytes(lease.owner())[..])
            .bind(epoch);
        if let Some(lease_for) = lease_for {
            query = query.bind(lease_for);
        }
        let updated = self
            .on_connection(operation, async |connection| {
                query
                    .execute(connection)
                    .await
                    .map_err(store_error)
                    .map(|done| done.rows_affected())
            })
            .await?;
        if updated == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost)
        }
    }

    /// The claim's statements on one connection: again while the snapshot was stale or the
    /// statement hit a transient conflict.
    async fn claim_on(
        &self,
        connection: &mut PgConnection,
        request: &ClaimRequest<'_>,
    ) -> Result<Claim, Error> {
        let owner = owner_bytes(request.owner);
        let mut last_error = None;
        for _ in 0..CLAIM_ATTEMPTS {
            let row = sqlx::query(sql(&self.inner.sql.claim))
                .bind(request.scope.as_bytes())
                .bind(request.key.as_bytes())
                .bind(&request.fingerprint.as_bytes()[..])
                .bind(&owner[..])
                .bind(interval(request.lease))
                .bind(interval(request.ttl.max(request.lease)))
                .fetch_optional(&mut *connection)
                .await;
            match row {
                Ok(Some(row)) => match decide(request, &row)? {
                    Step::Decided(claim) => return Ok(claim),
                    Step::Retry => {}
                },
                // The statement always returns one row; none would be a server oddity: again.
                Ok(None) => {}
                // Another transaction holds the record's row lock: it is changing the record
                // right now, so the key is busy, as with a live claim.
                Err(error) if has_code(&error, LOCK_NOT_AVAILABLE) => {
                    return Ok(Claim::InFlight {
                        retry_after: self.inner.lock_timeout,
                    });
                }
                Err(error) if is_transient(&error) => last_error = Some(error),
                Err(error) => return Err(store_error(error)),
            }
        }
        Err(match last_error {
            Some(error) => store_error(error),
            None => Error::store(
                BACKEND,
                format!(
                    "the claim did not settle after {CLAIM_ATTEMPTS} attempts (the record kept changing)"
                ),
            ),
        })
    }

    /// When an operation starting now must be done. The timeout is capped at the stores'
    /// "forever", which `Instant` can add where `Duration::MAX` would overflow.
    fn deadline(&self) -> Instant {
        Instant::now() + capped(self.inner.timeout)
    }

    fn timed_out(&self, operation: &str) -> Error {
        Error::store(
            BACKEND,
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the PostgreSQL {operation} timed out after {:?}",
                    self.inner.timeout
                ),
            ),
        )
    }

    /// Runs `operation` within the store's timeout.
    async fn bounded<T>(
        &self,
        operation: &str,
        future: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout_at(self.deadline(), future)
            .await
            .unwrap_or_else(|_| Err(self.timed_out(operation)))
    }

    /// Runs `operation` on a pool connection, waiting for the connection included, within the
    /// store's timeout. A connection whose statement timed out is closed rather than returned
    /// to the pool: it may still be waiting for an answer that never comes, and the pool would
    /// otherwise wait for that answer before reusing it. A caller that drops this future (a
    /// cancelled call) returns the connection the usual way: sqlx reads the statement's answer
    /// before it reuses the connection, so the statement is not cut short on the server.
    async fn on_connection<T>(
        &self,
        operation: &str,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let deadline = self.deadline();
        let mut connection: PoolConnection<Postgres> =
            match tokio::time::timeout_at(deadline, self.inner.pool.acquire()).await {
                Ok(connection) => connection.map_err(store_error)?,
                Err(_) => return Err(self.timed_out(operation)),
            };
        match tokio::time::timeout_at(deadline, run(&mut connection)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                connection.close_on_drop();
                Err(self.timed_out(operation))
            }
        }
    }
}

/// What one run of the claim statement decided.
enum Step {
    Decided(Claim),
    /// The statement's snapshot was stale: run it again.
    Retry,
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        if request.scope.len() + request.key.len() > MAX_SCOPE_AND_KEY_BYTES {
            return Err(Error::InvalidInput {
                reason: format!(
                    "scope and key are {} bytes together; the PostgreSQL store holds at most {MAX_SCOPE_AND_KEY_BYTES}",
                    request.scope.len() + request.key.len()
                ),
            });
        }
        self.on_connection("claim", async |connection| {
            self.claim_on(connection, request).await
        })
        .await
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        self.on_connection("completion", async |connection| {
            self.complete_unbounded(connection, lease, payload, ttl)
                .await
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.update_lease("release", &self.inner.sql.release, lease, None)
            .await
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.update_lease(
            "lease extension",
            &self.inner.sql.extend,
            lease,
            Some(interval(lease_for)),
        )
        .await
    }

    fn release_in_background(&self, lease: Lease) {
        crate::store::spawn_release(self.clone(), lease);
    }

    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        crate::store::spawn_abandon(self.clone(), request);
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        let mut removed = 0u64;
        loop {
            // Each batch is bounded on its own: a large purge may take longer than one timeout.
            let batch = self
                .on_connection("purge", async |connection| {
                    sqlx::query(sql(&self.inner.sql.purge))
                        .bind(PURGE_BATCH)
                        .execute(connection)
                        .await
                        .map_err(store_error)
                        .map(|done| done.rows_affected())
                })
                .await?;
            removed += batch;
            if batch < PURGE_BATCH.unsigned_abs() {
                return Ok(removed);
            }
        }
    }
}

/// Turns one row of the claim statement into a decision (see the module docs for the columns).
fn decide(request: &ClaimRequest<'_>, row: &PgRow) -> Result<Step, Error> {
    let scope = request.scope;
    let acquired: Option<i64> = column(scope, row, 0)?;
    if acquired.is_some() {
        let epoch = epoch_column(scope, acquired)?;
        return Ok(Step::Decided(Claim::Acquired(Lease::new(
            request.scope,
            request.key,
            request.owner,
            epoch,
        ))));
    }
    let state: Option<String> = column(scope, row, 2)?;
    // Checked first: an unreadable row is never taken over, and never taken for absent.
    let unreadable: Option<String> = column(scope, row, 8)?;
    if let Some(reason) = unreadable {
        let epoch: Option<i64> = column(scope, row, 1)?;
        return Err(Error::decode(
            scope,
            format!(
                "{reason} (state {:?}, epoch {})",
                state.as_deref().unwrap_or("NULL"),
                epoch.map_or_else(|| String::from("NULL"), |epoch| epoch.to_string())
            ),
        ));
    }
    // No row in the snapshot although the upsert found one (inserted since), or a row the
    // upsert could have taken over but did not (changed since): decide again.
    let takeable: Option<bool> = column(scope, row, 6)?;
    let Some(state) = state.filter(|_| takeable != Some(true)) else {
        return Ok(Step::Retry);
    };
    let epoch: Option<i64> = column(scope, row, 1)?;
    let same_fingerprint: Option<bool> = column(scope, row, 3)?;
    let claim = match state.as_str() {
        COMPLETED => {
            if same_fingerprint != Some(true) {
                Claim::PayloadMismatch
            } else {
                let payload: Option<Vec<u8>> = column(scope, row, 4)?;
                let payload = payload
                    .ok_or_else(|| Error::decode(scope, "a completed record has no payload"))?;
                let left: Option<PgInterval> = column(scope, row, 7)?;
                let left = left.ok_or_else(|| Error::decode(scope, "a record has no expiry"))?;
                Claim::Completed(Record {
                    payload: Bytes::from(payload),
                    epoch: epoch_column(scope, epoch)?,
                    expires_in: Some(interval_duration(&left)),
                })
            }
        }
        IN_PROGRESS => {
            if same_fingerprint != Some(true) {
                Claim::PayloadMismatch
            } else {
                let left: Option<PgInterval> = column(scope, row, 5)?;
                let left = left.ok_or_else(|| {
                    Error::decode(scope, "an in-progress record has no lease deadline")
                })?;
                Claim::InFlight {
                    retry_after: interval_duration(&left).max(Duration::from_micros(1)),
                }
            }
        }
        other => {
            return Err(Error::decode(
                scope,
                format!("unknown record state {other:?}"),
            ));
        }
    };
    Ok(Step::Decided(claim))
}

/// A difference of two timestamps as a duration (negative: zero). It has no months; days
/// count 24 hours.
fn interval_duration(interval: &PgInterval) -> Duration {
    let micros = i64::from(interval.days)
        .saturating_mul(86_400_000_000)
        .saturating_add(interval.microseconds);
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn column<'r, T>(scope: &str, row: &'r PgRow, index: usize) -> Result<T, Error>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index)
        .map_err(|error| Error::decode(scope, error))
}

/// A stored epoch, which the claim reads only from rows that passed its checks.
fn epoch_column(scope: &str, epoch: Option<i64>) -> Result<u64, Error> {
    let epoch = epoch.ok_or_else(|| Error::decode(scope, "the stored epoch is NULL"))?;
    stored_epoch(scope, epoch)
}

fn store_error(error: sqlx::Error) -> Error {
    Error::store(BACKEND, error)
}

/// SQLSTATE `lock_not_available`: the statement ran out of its `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn has_code(error: &sqlx::Error, sqlstate: &str) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == sqlstate)
}

/// A serialization failure or deadlock: the statement had no effect and may simply run again.
fn is_transient(error: &sqlx::Error) -> bool {
    has_code(error, "40001") || has_code(error, "40P01")
}

/// The columns of the schema: name, type as `format_type` spells it, type as the schema
/// writes it, and whether it is `NOT NULL`. `migrate` creates the table from this list and
/// checks an existing one against it.
const COLUMNS: [(&str, &str, &str, bool); 9] = [
    ("scope", "bytea", "bytea", true),
    ("key", "bytea", "bytea", true),
    ("state", "text", "text", true),
    ("owner", "bytea", "bytea", false),
    ("epoch", "bigint", "bigint", true),
    ("fingerprint", "bytea", "bytea", true),
    (
        "lease_until",
        "timestamp with time zone",
        "timestamptz",
        false,
    ),
    (
        "expires_at",
        "timestamp with time zone",
        "timestamptz",
        true,
    ),
    ("payload", "bytea", "bytea", false),
];

/// A column of an existing table, as the catalog describes it.
struct FoundColumn {
    name: String,
    type_name: String,
    not_null: bool,
    /// A default, an identity or a generated column: inserts need not name it.
    filled_by_server: bool,
}

impl FoundColumn {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(FoundColumn {
            name: row.try_get(0)?,
            type_name: row.try_get(1)?,
            not_null: row.try_get(2)?,
            filled_by_server: row.try_get(3)?,
        })
    }
}

/// How an existing table differs from the schema the store needs; empty when it fits.
fn shape_differences(found: &[FoundColumn], has_unique_key: bool) -> Vec<String> {
    let nullability = |not_null: bool| if not_null { "NOT NULL" } else { "nullable" };
    let mut differences = Vec::new();
    for (name, type_name, _, not_null) in COLUMNS {
        match found.iter().find(|column| column.name == name) {
            None => differences.push(format!("column `{name}` is missing")),
            Some(column) => {
                if column.type_name != type_name {
                    differences.push(format!(
                        "column `{name}` is {}, expected {type_name}",
                        column.type_name
                    ));
                }
                if column.not_null != not_null {
                    differences.push(format!(
                        "column `{name}` is {}, expected {}",
                        nullability(column.not_null),
                        nullability(not_null)
                    ));
                }
            }
        }
    }
    for column in found {
        let known = COLUMNS.iter().any(|(name, ..)| *name == column.name);
        if !known && column.not_null && !column.filled_by_server {
            differences.push(format!(
                "column `{}` is NOT NULL without a default, and the store never writes it",
                column.name
            ));
        }
    }
    if !has_unique_key {
        differences.push(String::from(
            "no primary key or unique index on exactly (scope, key)",
        ));
    }
    differences
}

/// A duration as a PostgreSQL interval of whole microseconds, capped at "forever".
fn interval(duration: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: micros(duration),
    }
}

/// A statement string for sqlx. Only ever called with the statements built in
/// [`Statements::new`], whose one dynamic part is a validated, quoted table name.
fn sql(statement: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(statement))
}

/// A validated table name and its PostgreSQL spellings.
struct PgTable {
    /// As configured: `table` or `schema.table`.
    display: String,
    /// Quoted for SQL: `"table"` or `"schema"."table"`.
    quoted: String,
    /// The name of the expiry index (unqualified: it lives in the table's schema).
    index: String,
}

impl PgTable {
    fn default_table() -> Self {
        PgTable::new(&TableName {
            schema: None,
            table: DEFAULT_TABLE.to_owned(),
        })
    }

    /// Validates `name` (see [`TableName`]; PostgreSQL takes `schema.table` too).
    fn parse(name: &str) -> Result<Self, Error> {
        TableName::parse(name, true).map(|name| PgTable::new(&name))
    }

    fn new(name: &TableName) -> Self {
        let table = &name.table;
        let (display, quoted) = match &name.schema {
            Some(schema) => (
                format!("{schema}.{table}"),
                format!("\"{schema}\".\"{table}\""),
            ),
            None => (table.clone(), format!("\"{table}\"")),
        };
        const SUFFIX: &str = "_expires_at_idx";
        let index = if table.len() + SUFFIX.len() <= MAX_IDENTIFIER_LEN {
            format!("{table}{SUFFIX}")
        } else {
            // PostgreSQL would truncate a longer name, and two long table names sharing a
            // prefix would then share an index name; a digest of the full name keeps them
            // apart.
            let digest = Sha256::digest(table.as_bytes());
            let tag: String = digest[..4]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            format!(
                "{}_{tag}{SUFFIX}",
                &table[..MAX_IDENTIFIER_LEN - SUFFIX.len() - 9]
            )
        };
        PgTable {
            display,
            quoted,
            index,
        }
    }
}

/// What a stored row must hold to be read, and what is wrong with one that does not: each a
/// condition on the row `r` (`{r}` in the text) and the reason it fails.
const ROW_CHECKS: [(&str, &str); 9] = [
    ("{r}.epoch >= 0", "negative epoch"),
    // The next claim adds one; none comes after the largest bigint.
    (
        "{r}.epoch < 9223372036854775807",
        "epoch at its maximum (no later epoch exists)",
    ),
    (
        "{r}.state IN ('in_progress', 'completed', 'released')",
        "unknown state",
    ),
    (
        "octet_length({r}.fingerprint) = 32",
        "fingerprint is not 32 bytes",
    ),
    (
        "{r}.owner IS NULL OR octet_length({r}.owner) = 16",
        "owner is not 16 bytes",
    ),
    (
        "{r}.state <> 'in_progress' OR {r}.owner IS NOT NULL",
        "in-progress record without owner",
    ),
    (
        "{r}.state <> 'in_progress' OR {r}.lease_until IS NOT NULL",
        "in-progress record without lease deadline",
    ),
    (
        "{r}.state <> 'completed' OR {r}.payload IS NOT NULL",
        "completed record without payload",
    ),
    ("{r}.expires_at IS NOT NULL", "record without expiry"),
];

/// `lock_timeout` as the claim sets it: whole milliseconds, rounded up, at least 1 (0 would
/// mean "wait forever") and at most what PostgreSQL accepts.
fn lock_timeout_setting(timeout: Duration) -> String {
    let millis = timeout
        .as_nanos()
        .div_ceil(1_000_000)
        .clamp(1, i32::MAX as u128);
    format!("{millis}ms")
}

impl Statements {
    fn new(table: &PgTable, lock_timeout: Duration) -> Self {
        let t = &table.quoted;
        let now = "statement_timestamp()";
        let checks = |r: &str| ROW_CHECKS.map(|(check, reason)| (check.replace("{r}", r), reason));
        // Whether row `r` can be read. NULL counts as a failed check, so this is never NULL.
        let readable = |r: &str| {
            checks(r)
                .map(|(check, _)| format!("({check}) IS TRUE"))
                .join(" AND ")
        };
        // Why row `r` cannot be read; NULL when it can.
        let unreadable_because = |r: &str| {
            let cases: Vec<String> = checks(r)
                .iter()
                .map(|(check, reason)| format!("WHEN ({check}) IS NOT TRUE THEN '{reason}'"))
                .collect();
            format!("CASE {} END", cases.join(" "))
        };
        // Whether the stored row `r`, if it can be read, may be claimed by owner `owner`: past
        // its ttl, released, or in progress by that owner (a retried claim) or with an expired
        // lease.
        let takeable = |r: &str, owner: &str| {
            format!(
                "({r}.expires_at <= {now} OR {r}.state = 'released' \
                 OR ({r}.state = 'in_progress' AND ({r}.owner = {owner} OR {r}.lease_until <= {now})))"
            )
        };
        // The owner's own live claim, renewed without a new epoch (NULL: a takeover).
        let own_live = format!(
            "r.state = 'in_progress' AND r.owner = excluded.owner AND r.expires_at > {now}"
        );
        let cas = "scope = $1 AND key = $2 AND state = 'in_progress' AND owner = $3 AND epoch = $4";
        // The server clock in microseconds since the Unix epoch: a new epoch is at least this,
        // so a key's epochs never repeat once its row is purged.
        let clock_micros = format!("CAST(FLOOR(EXTRACT(EPOCH FROM {now}) * 1000000) AS bigint)");

        let columns: String = COLUMNS
            .iter()
            .map(|(name, _, declared, not_null)| {
                let line = format!(
                    "    {name:<11} {declared:<11} {}",
                    if *not_null { "NOT NULL" } else { "" }
                );
                format!("{},\n", line.trim_end())
            })
            .collect();
        let create_table =
            format!("CREATE TABLE IF NOT EXISTS {t} (\n{columns}    PRIMARY KEY (scope, key)\n)");
        // The table's columns, resolved like the other statements' table name (`$1`: quoted).
        let columns =
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                 a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' \
             FROM pg_attribute AS a \
             WHERE a.attrelid = CAST($1::text AS regclass) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum"
                .to_owned();
        // A unique index `ON CONFLICT (scope, key)` can use: immediate, not partial, on
        // exactly those two columns (in either order).
        let unique_key = "SELECT EXISTS (SELECT 1 FROM pg_index AS i \
                 WHERE i.indrelid = CAST($1::text AS regclass) AND i.indisunique AND i.indimmediate \
                     AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 2 \
                     AND ARRAY(SELECT a.attname::text FROM pg_attribute AS a \
                         WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:1]) \
                         ORDER BY 1) = ARRAY['key', 'scope'])"
            .to_owned();
        let create_index = format!(
            "CREATE INDEX IF NOT EXISTS \"{}\" ON {t} (expires_at)",
            table.index
        );
        // `set_config(..., true)` holds for the rest of the statement's own transaction (a
        // claim runs in autocommit), and PostgreSQL reads `lock_timeout` when a lock wait
        // begins: evaluated in the insert's `WHERE`, it bounds the upsert's wait for the row
        // lock, and nothing else the connection runs.
        let lock_timeout = lock_timeout_setting(lock_timeout);
        let claim = format!(
            "WITH cur AS (\
                 SELECT epoch, state, fingerprint = $3 AS same_fingerprint, payload, lease_until, \
                     expires_at, {cur_takeable} AS takeable, {cur_unreadable} AS unreadable \
                 FROM {t} AS c WHERE scope = $1 AND key = $2\
             ), up AS (\
                 INSERT INTO {t} AS r \
                     (scope, key, state, owner, epoch, fingerprint, lease_until, expires_at, payload) \
                 SELECT $1, $2, 'in_progress', $4, {clock_micros}, $3, {now} + $5, {now} + $6, NULL \
                 WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.unreadable IS NOT NULL OR NOT cur.takeable) \
                     AND set_config('lock_timeout', '{lock_timeout}', true) IS NOT NULL \
                 ON CONFLICT (scope, key) DO UPDATE SET \
                     epoch = CASE WHEN {own_live} THEN r.epoch \
                         ELSE GREATEST(r.epoch + 1, {clock_micros}) END, \
                     state = 'in_progress', owner = excluded.owner, \
                     fingerprint = excluded.fingerprint, lease_until = excluded.lease_until, \
                     expires_at = GREATEST(r.expires_at, excluded.expires_at), payload = NULL \
                 WHERE {r_readable} AND {r_takeable} \
                 RETURNING r.epoch\
             ) \
             SELECT (SELECT epoch FROM up), cur.epoch, cur.state, cur.same_fingerprint, cur.payload, \
                 cur.lease_until - {now}, cur.takeable, cur.expires_at - {now}, cur.unreadable \
             FROM (SELECT) AS one LEFT JOIN cur ON true",
            cur_takeable = takeable("c", "$4"),
            cur_unreadable = unreadable_because("c"),
            // Checked on the row the upsert locked, before the `SET` computes anything from it:
            // the new epoch comes from the old one, and a corrupt one would quietly be replaced.
            // So an unreadable row stays as it is, and every claim reports it.
            r_readable = readable("r"),
            r_takeable = takeable("r", "excluded.owner"),
        );
        // Also matches this lease's own completed row (a retried completion), which it leaves
        // as it is.
        let complete = format!(
            "UPDATE {t} SET state = 'completed', lease_until = NULL, \
                 payload = CASE WHEN state = 'completed' THEN payload ELSE $5 END, \
                 expires_at = CASE WHEN state = 'completed' THEN expires_at ELSE {now} + $6 END \
             WHERE scope = $1 AND key = $2 AND owner = $3 AND epoch = $4 \
                 AND state IN ('in_progress', 'completed')"
        );
        let release = format!(
            "UPDATE {t} SET state = 'released', lease_until = NULL, payload = NULL WHERE {cas}"
        );
        let extend = format!(
            "UPDATE {t} SET lease_until = {now} + $5, \
             expires_at = GREATEST(expires_at, {now} + $5) WHERE {cas}"
        );
        // Rows claimed right now are skipped (SKIP LOCKED), and the expiry is checked again on
        // the row version the delete sees, so a record taken over meanwhile is kept.
        let purge = format!(
            "DELETE FROM {t} WHERE ctid = ANY(ARRAY(\
                 SELECT ctid FROM {t} WHERE expires_at <= {now} LIMIT $1 FOR UPDATE SKIP LOCKED\
             )) AND expires_at <= {now}"
        );
        Statements {
            create_table: create_table.into(),
            create_index: create_index.into(),
            columns: columns.into(),
            unique_key: unique_key.into(),
            claim: claim.into(),
            complete: complete.into(),
            release: release.into(),
            extend: extend.into(),
            purge: purge.into(),
        }
    }
}

/// A call whose body runs inside a PostgreSQL transaction that also records its result
/// (transactional mode), made with [`PostgresStore::transactional`].
///
/// ```no_run
/// use idempotent_core::{Error, PostgresStore};
/// use idempotent_core::key::Fingerprint;
/// use idempotent_core::stores::postgres::sqlx;
///
/// # async fn run(store: PostgresStore) -> Result<(), Error> {
/// let shipment = store
///     .transactional("orders.ship", "order-17")
///     .fingerprint(Fingerprint::builder().field("carrier", "ups").finish())
///     .run(async |tx| {
///         sqlx::query("INSERT INTO shipments (order_id, carrier) VALUES (17, 'ups')")
///             .execute(&mut *tx)
///             .await
///             .map_err(|error| Error::store("postgres", error))?;
///         Ok::<_, Error>(String::from("shipment-17"))
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// What happens:
/// 1. The key is claimed on the pool, outside the transaction (autocommit), so concurrent
///    duplicates see the claim at once and wait or are rejected, as with [`Call`]. A completed
///    record is replayed without opening a transaction.
/// 2. A transaction is begun on the pool and the body runs with it. The claim is heartbeated
///    on another connection while the body runs, as with [`Call`].
/// 3. On `Ok`, the result is written with the compare-and-set update
///    ([`PostgresStore::complete_in`]) inside the same transaction, which then commits. If the
///    claim was taken over meanwhile, the update matches no row, the call fails with
///    [`Error::LeaseLost`] and the transaction rolls back. On `Err`, the transaction rolls
///    back and the key is released, so a retry runs again. A cancelled or panicking body
///    drops the transaction (rolled back) and releases the key.
///
/// What is guaranteed, while the record lives (its ttl):
/// - The body's writes through the transaction and the completed record commit together or
///   not at all. Once they commit, no duplicate runs the body again; every duplicate replays
///   the result. So the body's database effects happen exactly once, even across crashes and
///   lease takeovers: a worker that was taken over (paused past its lease) can still run its
///   body, but its commit is refused and its writes are rolled back.
/// - Two workers can run the body at the same time only after a takeover; at most one of them
///   commits. Their writes may still contend for locks while they run.
///
/// What is not:
/// - Effects outside this transaction (HTTP calls, other databases, writes on other
///   connections) are at-least-once, as with [`Call`].
/// - If the connection fails during `COMMIT`, the outcome is unknown to the client: the call
///   fails with [`Error::Store`], and the record is either completed (the commit happened;
///   retries replay) or still claimed (it did not; a retry runs the body after the lease
///   expires). Either way the effects happened at most once.
/// - The call always fails closed: [`OnStoreError::FailOpen`] is ignored, since a result that
///   could not be recorded would also have been rolled back.
/// - The body's transaction holds one pool connection while the body runs.
/// - The transaction uses the pool's default isolation level; see
///   [`PostgresStore::complete_in`] for why it should be `READ COMMITTED`.
#[derive(Clone, Copy)]
pub struct TransactionalCall<'a> {
    store: &'a PostgresStore,
    /// The call on the store; only where its result is recorded differs.
    call: Call<'a>,
}

impl fmt::Debug for TransactionalCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalCall")
            .field("table", &self.store.table())
            .field("call", &self.call)
            .finish()
    }
}

impl<'a> TransactionalCall<'a> {
    /// The request fingerprint: a retry with a different one fails with
    /// [`Error::PayloadMismatch`].
    pub fn fingerprint(mut self, fingerprint: Fingerprint) -> Self {
        self.call = self.call.fingerprint(fingerprint);
        self
    }

    /// Replaces the options (ttl, lease, waiting). Errors are never cached and the call always
    /// fails closed, whatever the options say.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.call = self.call.options(options);
        self
    }

    /// Runs `body` with an open transaction at most once per key (see the type's docs), or
    /// replays the stored value of the call that ran it.
    pub async fn run<T, E, F>(self, body: F) -> Result<Outcome<T>, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        T: Serialize + DeserializeOwned,
        E: From<Error>,
    {
        let TransactionalCall { store, call } = self;
        let recorder = InTransaction {
            store,
            pending: Mutex::new(None),
        };
        // A result that could not be recorded was rolled back with its transaction, so there
        // is nothing for fail-open to return. And `run`, never `run_caching_errors`: an `Err`
        // rolls the body's writes back, so it must not be replayed as if they had happened.
        let options = call.options.on_store_error(OnStoreError::FailClosed);
        call.options(options)
            .recorder(&recorder)
            .run(async {
                let mut tx = store
                    .bounded("transaction begin", async {
                        store.inner.pool.begin().await.map_err(store_error)
                    })
                    .await?;
                match body(&mut tx).await {
                    Ok(value) => {
                        // Committed by the recorder, together with the record.
                        recorder.hold(tx);
                        Ok(value)
                    }
                    Err(error) => {
                        rollback(store, tx).await;
                        Err(error)
                    }
                }
            })
            .await
    }
}

type PgTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// Where a transactional call records its result: in the body's transaction, which it then
/// commits. Claims, heartbeats and releases go to the store's pool as for any call.
struct InTransaction<'a> {
    store: &'a PostgresStore,
    /// The body's transaction, between the body's `Ok` and the record phase. Dropped with
    /// the recorder (a cancelled or panicking call), it rolls back.
    pending: Mutex<Option<PgTransaction>>,
}

impl InTransaction<'_> {
    fn hold(&self, tx: PgTransaction) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    }

    fn take(&self) -> Option<PgTransaction> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[async_trait]
impl Recorder for InTransaction<'_> {
    /// `complete_in` and commit, once: a transaction cannot be tried again, so unlike the
    /// store's own recorder this one does not retry a store error.
    async fn record(
        &self,
        _store: &dyn IdempotencyStore,
        lease: &Lease,
        payload: Bytes,
        ttl: Duration,
    ) -> Result<(), Error> {
        let Some(mut tx) = self.take() else {
            return Err(Error::store(
                BACKEND,
                "no open transaction to record the result in",
            ));
        };
        match self.store.complete_in(&mut tx, lease, payload, ttl).await {
            Ok(()) => {
                self.store
                    .bounded("commit", async { tx.commit().await.map_err(store_error) })
                    .await
            }
            Err(error) => {
                rollback(self.store, tx).await;
                Err(error)
            }
        }
    }

    /// Rolls the body's writes back, then releases the claim so a retry runs again.
    async fn discard(&self, store: &dyn IdempotencyStore, lease: &Lease) {
        if let Some(tx) = self.take() {
            rollback(self.store, tx).await;
        }
        release_quietly(store, lease).await;
    }
}

/// Rolls back within the store's timeout. If that fails, the server rolls the transaction back
/// on its own when the connection ends (or sqlx does, before it reuses the connection).
async fn rollback(store: &PostgresStore, tx: PgTransaction) {
    let rolled_back = store
        .bounded("rollback", async {
            tx.rollback().await.map_err(store_error)
        })
        .await;
    if let Err(error) = rolled_back {
        tracing::debug!(%error, "rollback failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_table_names_get_distinct_short_index_names() {
        let name = |schema: Option<&str>, table: String| {
            PgTable::new(&TableName {
                schema: schema.map(str::to_owned),
                table,
            })
        };
        let a = name(None, format!("{}a", "x".repeat(62)));
        let b = name(None, format!("{}b", "x".repeat(62)));
        assert!(a.index.len() <= MAX_IDENTIFIER_LEN);
        assert_ne!(a.index, b.index);
        let short = name(Some("s"), "t".to_owned());
        assert_eq!(short.index, "t_expires_at_idx");
        assert_eq!(short.quoted, "\"s\".\"t\"");
    }

    #[test]
    fn the_table_is_created_as_the_docs_show() {
        let sql = Statements::new(&PgTable::default_table(), DEFAULT_LOCK_TIMEOUT);
        assert_eq!(
            &*sql.create_table,
            "CREATE TABLE IF NOT EXISTS \"idempotency_records\" (\n\
             \x20   scope       bytea       NOT NULL,\n\
             \x20   key         bytea       NOT NULL,\n\
             \x20   state       text        NOT NULL,\n\
             \x20   owner       bytea,\n\
             \x20   epoch       bigint      NOT NULL,\n\
             \x20   fingerprint bytea       NOT NULL,\n\
             \x20   lease_until timestamptz,\n\
             \x20   expires_at  timestamptz NOT NULL,\n\
             \x20   payload     bytea,\n\
             \x20   PRIMARY KEY (scope, key)\n\
             )"
        );
        assert!(
            sql.claim
                .contains("set_config('lock_timeout', '100ms', true)")
        );
    }

    #[test]
    fn lock_timeouts_are_whole_milliseconds_and_never_zero() {
        assert_eq!(lock_timeout_setting(Duration::from_millis(100)), "100ms");
        assert_eq!(lock_timeout_setting(Duration::from_micros(1500)), "2ms");
        assert_eq!(lock_timeout_setting(Duration::ZERO), "1ms");
        assert_eq!(lock_timeout_setting(Duration::MAX), "2147483647ms");
    }

    #[test]
    fn shape_differences_name_each_column() {
        let schema = || {
            COLUMNS
                .iter()
                .map(|(name, type_name, _, not_null)| FoundColumn {
                    name: (*name).to_owned(),
                    type_name: (*type_name).to_owned(),
                    not_null: *not_null,
                    filled_by_server: false,
                })
                .collect::<Vec<_>>()
        };
        assert!(shape_differences(&schema(), true).is_empty());

        let mut columns = schema();
        columns.retain(|column| column.name != "payload");
        columns[4].type_name = "integer".to_owned(); // epoch
        columns[3].not_null = true; // owner
        columns.push(FoundColumn {
            name: "tenant".to_owned(),
            type_name: "text".to_owned(),
            not_null: true,
            filled_by_server: false,
        });
        columns.push(FoundColumn {
            name: "created_at".to_owned(),
            type_name: "timestamp with time zone".to_owned(),
            not_null: true,
            filled_by_server: true,
        });
        assert_eq!(
            shape_differences(&columns, false),
            [
                "column `owner` is NOT NULL, expected nullable",
                "column `epoch` is integer, expected bigint",
                "column `payload` is missing",
                "column `tenant` is NOT NULL without a default, and the store never writes it",
                "no primary key or unique index on exactly (scope, key)",
            ]
        );
    }
}
