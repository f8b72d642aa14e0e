//! The SQLite store (feature `sqlite`): embedded and durable, for a single node.
//!
//! [`SqliteStore`] keeps records in one table of a SQLite database file, so completed results
//! survive a process restart (and, with the default [`fsync_on_commit`], a power loss). Several
//! processes on the same machine may share the file; machines may not (SQLite's locks do not
//! work over network file systems), so use a shared store when more than one node serves the
//! same keys.
//!
//! # Schema (a persisted format)
//!
//! [`SqliteStore::open`] creates the table and its index if they are missing (table name
//! `idempotency_records` unless [`SqliteStoreBuilder::table`] says otherwise):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "idempotency_records" (
//!     scope          TEXT    NOT NULL,  -- ClaimRequest::scope, as given
//!     "key"          TEXT    NOT NULL,  -- ClaimRequest::key, as given
//!     state          TEXT    NOT NULL,  -- 'in_progress' | 'completed' | 'released'
//!     owner          BLOB,              -- OwnerId, 16 bytes big-endian (last claimant)
//!     epoch          INTEGER NOT NULL,  -- fencing token, 1 for a new record
//!     fingerprint    BLOB    NOT NULL,  -- request fingerprint, 32 bytes
//!     lease_until_ms INTEGER,           -- 'in_progress' only: Unix ms the lease ends
//!     expires_at_ms  INTEGER NOT NULL,  -- Unix ms the record expires (purge deletes it)
//!     payload        BLOB,              -- 'completed' only: the stored result, opaque
//!     PRIMARY KEY (scope, "key")
//! );
//! CREATE INDEX IF NOT EXISTS "idx_idempotency_records_expires_at"
//!     ON "idempotency_records" (expires_at_ms);
//! ```
//!
//! Why this shape:
//! - The primary key is what makes a claim unique: one row per `(scope, key)`.
//! - A rowid table (not `WITHOUT ROWID`), because a row can hold a payload of a megabyte or
//!   more, which SQLite stores on overflow pages; `WITHOUT ROWID` is meant for small rows.
//! - No `CHECK` constraints: SQLite cannot alter them without rebuilding the table, and a later
//!   version may add states. Every row is validated when it is read instead: a row that does
//!   not decode (an unknown state, a completed row without payload, a fingerprint that is not
//!   32 bytes, an in-progress row without owner or lease) is reported as [`Error::Decode`] and
//!   never treated as absent, so it cannot cause a second execution.
//! - Released rows are tombstones that keep the epoch, so fencing tokens keep growing; they are
//!   deleted with the rest when they expire.
//! - The expiry index lets [`purge_expired`](IdempotencyStore::purge_expired) delete in batches
//!   without scanning the table.
//!
//! The columns are checked when the store opens; an existing table without them is an error.
//!
//! # Transactions
//!
//! A claim (the table in [`IdempotencyStore::claim`]) takes up to three steps, each atomic on
//! its own; the first that can decide, does:
//!
//! 1. A read on a read connection, outside any write transaction (WAL gives it a consistent
//!    snapshot, and the writer never blocks it). If the row decides the claim without a write
//!    (a completed record to replay, a live claim in flight, a payload mismatch), that is the
//!    answer: the state the store held at that instant. Duplicates and waiters therefore never
//!    queue for the writer. A row that does not decode is an error already here.
//! 2. No row: `INSERT ... ON CONFLICT DO NOTHING` at epoch 1. The primary key decides; if the
//!    row was inserted, the claim is acquired.
//! 3. Otherwise (a record to take over, released or expired, the owner's own claim retried, or
//!    the insert lost a race): one `BEGIN IMMEDIATE` transaction reads the row again, decides
//!    in Rust and writes. The write lock is taken before the read, so no other writer (in this
//!    process or another) can change the row in between.
//!
//! The transaction is an sqlx `Transaction`, which rolls back when dropped: a claim cancelled at
//! any await point leaves no transaction open (the rollback is queued on the connection ahead
//! of the ping that returns it to the pool, and, as a second guard, the pool closes rather than
//! hands out a connection that is still in a transaction).
//!
//! `complete`, `release` and `extend` are single compare-and-set `UPDATE` statements on
//! `(owner, epoch, state = 'in_progress')`; no row updated means [`Error::LeaseLost`]. A single
//! write statement takes the write lock before it reads, like `BEGIN IMMEDIATE`.
//! `purge_expired` deletes expired rows 1,000 per statement, so claims get the write lock
//! between batches.
//!
//! # Concurrency
//!
//! SQLite allows one writer at a time. The store writes through exactly one connection (a pool
//! of one), so writers in this process wait in a fair queue for it (up to the pool's 30 s
//! acquire timeout) instead of contending for the file lock, where SQLite's busy handler
//! sleeps and retries and gives up after the busy timeout. The busy timeout (default 5 s) then
//! only has to cover other processes sharing the file and checkpoints. Reads use the other
//! connections of the pool ([`SqliteStoreBuilder::pool_size`]), which in WAL mode run
//! alongside the writer.
//!
//! # Clock
//!
//! Deadlines are Unix milliseconds from the system clock. On a single node the process's clock
//! and SQLite's (`unixepoch()`) are the same clock, so the store reads it in Rust, once per
//! operation, and binds it into the statements. It is wall-clock time rather than a monotonic
//! clock because deadlines are persisted and must mean the same after a restart; a clock step
//! shortens or lengthens live leases and ttls by the size of the step. Deadlines do not follow
//! tokio's paused test clock.
//!
//! [`fsync_on_commit`]: SqliteStoreBuilder::fsync_on_commit

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row, Sqlite};
use tokio::sync::Notify;

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{
    Claim, ClaimRequest, IdempotencyStore, Lease, OwnerId, Record, next_epoch, system_clock_micros,
};

const BACKEND: &str = "sqlite";
const DEFAULT_TABLE: &str = "idempotency_records";
const DEFAULT_POOL_SIZE: u32 = 4;
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest table name accepted (PostgreSQL's identifier limit, so names port).
const MAX_TABLE_NAME: usize = 63;
/// Rows deleted per purge statement: each batch holds the write lock briefly, so claims
/// interleave with a large purge.
const PURGE_BATCH: i64 = 1000;
/// Independent wake-up channels for `wait_for_change`, so completing one key wakes few
/// waiters of other keys.
const NOTIFY_SHARDS: usize = 64;

const STATE_IN_PROGRESS: &str = "in_progress";
const STATE_COMPLETED: &str = "completed";
const STATE_RELEASED: &str = "released";

/// A durable [`IdempotencyStore`] in a SQLite database file, for a single node.
///
/// Cheap to clone (clones share the connections). See the [module docs](crate::stores::sqlite)
/// for the schema, the transaction design, concurrency and the clock.
///
/// ```
/// use idempotent_core::{Call, Error, SqliteStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let store = SqliteStore::in_memory().await?;
/// let first = Call::new(&store, "docs", "k").run(async { Ok::<_, Error>(7) }).await?;
/// let again = Call::new(&store, "docs", "k").run(async { Ok::<_, Error>(8) }).await?;
/// assert_eq!((first.value, again.value), (7, 7));
/// assert!(again.is_replayed());
/// # Ok(())
/// # }
/// ```
///
/// A file, as the process-wide default store:
///
/// ```no_run
/// use std::sync::Arc;
/// use idempotent_core::{Error, IdempotencyStore, SqliteStore, set_default_store};
///
/// # async fn example() -> Result<(), Error> {
/// let store = SqliteStore::open("/var/lib/my-service/idempotency.db").await?;
/// set_default_store(Arc::new(store));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Exactly one connection: every write goes through it.
    writer: SqlitePool,
    /// Read-only connections for the snapshot read before a claim; the writer pool itself
    /// when the store has a single connection.
    readers: SqlitePool,
    sql: Statements,
    table: String,
    location: String,
    pool_size: u32,
    changed: Box<[Notify]>,
    shard_hasher: RandomState,
    /// Keeps a named in-memory database alive while pool connections come and go.
    _anchor: Option<Mutex<SqliteConnection>>,
}

/// Builder for [`SqliteStore`].
///
/// ```no_run
/// use std::time::Duration;
/// use idempotent_core::SqliteStore;
///
/// # async fn example() -> Result<(), idempotent_core::Error> {
/// let store = SqliteStore::builder()
///     .table("payments_idempotency")
///     .pool_size(8)
///     .busy_timeout(Duration::from_secs(10))
///     .open("payments.db")
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    table: String,
    pool_size: u32,
    busy_timeout: Duration,
    fsync_on_commit: bool,
}

impl Default for SqliteStoreBuilder {
    fn default() -> Self {
        SqliteStoreBuilder {
            table: DEFAULT_TABLE.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            fsync_on_commit: true,
        }
    }
}

impl SqliteStoreBuilder {
    /// The table that holds the records. Default `idempotency_records`.
    ///
    /// ASCII letters, digits and `_`, starting with a letter or `_`, at most 63 characters,
    /// and not starting with `sqlite_` (reserved by SQLite). Anything else fails at
    /// [`open`](Self::open) with [`Error::InvalidInput`]. The table's index is named
    /// `idx_<table>_expires_at`.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The most connections the store opens. Default 4.
    ///
    /// One connection does every write (SQLite allows one writer at a time, and queueing on
    /// one connection is fairer and cheaper than contending for the file lock); the others
    /// serve the read that precedes each claim, alongside the writer. With 1, the single
    /// connection does both. Values below 1 count as 1. An in-memory store always uses one.
    pub fn pool_size(mut self, connections: u32) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// How long a statement waits for a lock held by another connection (another process
    /// sharing the file, or a checkpoint) before failing with [`Error::Store`]. Default 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Whether every commit waits for the write-ahead log to reach the disk
    /// (`PRAGMA synchronous = FULL`, the default) or not (`NORMAL`).
    ///
    /// With `NORMAL`, a process crash loses nothing, but an operating-system crash or a power
    /// loss can lose the last commits, including completed records: after the reboot those
    /// keys run their body again. That is the failure this store exists to prevent, so the
    /// default pays one `fsync` per write. Choose `false` when the body's effect would not
    /// survive a power loss either, or when throughput matters more.
    pub fn fsync_on_commit(mut self, fsync: bool) -> Self {
        self.fsync_on_commit = fsync;
        self
    }

    /// Opens (creating if missing) the database file at `path` and the table in it.
    ///
    /// The directory must exist. Sets WAL journal mode, which is persistent in the file.
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SqliteStore, Error> {
        let path = path.as_ref();
        let table = validate_table(&self.table)?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(self.busy_timeout)
            .synchronous(if self.fsync_on_commit {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            });
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = pool_options(1)
            .connect_with(writer_options)
            .await
            .map_err(store_error)?;
        migrate(&writer, &table).await?;
        let readers = if self.pool_size > 1 {
            // `query_only`: a read connection cannot write, even by mistake.
            let reader_options = base.pragma("query_only", "ON");
            pool_options(self.pool_size - 1).connect_lazy_with(reader_options)
        } else {
            writer.clone()
        };
        Ok(SqliteStore::assemble(
            writer,
            readers,
            table,
            path.display().to_string(),
            self.pool_size,
            None,
        ))
    }

    /// Opens a private in-memory database: nothing survives the store. For tests and
    /// examples; prefer [`MemoryStore`](crate::MemoryStore) otherwise, which is faster.
    pub async fn open_in_memory(self) -> Result<SqliteStore, Error> {
        let table = validate_table(&self.table)?;
        // A named in-memory database in shared-cache mode lives as long as one connection to
        // it does: the anchor keeps it while the pool's connection is opened and replaced.
        // Only the pool's single connection is ever used, so shared-cache table locks never
        // conflict.
        let name = format!("file:idempotent-sqlite-{}", OwnerId::new());
        let options = SqliteConnectOptions::new()
            .filename(&name)
            .in_memory(true)
            .shared_cache(true)
            .busy_timeout(self.busy_timeout);
        let anchor = options.connect().await.map_err(store_error)?;
        let pool = pool_options(1)
            .connect_with(options)
            .await
            .map_err(store_error)?;
        migrate(&pool, &table).await?;
        Ok(SqliteStore::assemble(
            pool.clone(),
            pool,
            table,
            ":memory:".to_owned(),
            1,
            Some(Mutex::new(anchor)),
        ))
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` with default settings: table
    /// `idempotency_records`, 4 connections, 5 s busy timeout, `fsync` on every commit.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        SqliteStoreBuilder::default().open(path).await
    }

    /// A store in a private in-memory database, with default settings. Records do not survive
    /// the store; see [`SqliteStoreBuilder::open_in_memory`].
    pub async fn in_memory() -> Result<Self, Error> {
        SqliteStoreBuilder::default().open_in_memory().await
    }

    /// Configures the table, the pool and durability.
    pub fn builder() -> SqliteStoreBuilder {
        SqliteStoreBuilder::default()
    }

    /// The table holding the records.
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// Closes the store's connections, waiting for them to finish. Every clone is closed;
    /// later operations fail with [`Error::Store`]. Dropping the last clone also closes the
    /// connections, without waiting.
    pub async fn close(&self) {
        self.inner.readers.close().await;
        self.inner.writer.close().await;
    }

    fn assemble(
        writer: SqlitePool,
        readers: SqlitePool,
        table: String,
        location: String,
        pool_size: u32,
        anchor: Option<Mutex<SqliteConnection>>,
    ) -> Self {
        SqliteStore {
            inner: Arc::new(Inner {
                writer,
                readers,
                sql: Statements::new(&table),
                table,
                location,
                pool_size,
                changed: (0..NOTIFY_SHARDS).map(|_| Notify::new()).collect(),
                shard_hasher: RandomState::new(),
                _anchor: anchor,
            }),
        }
    }

    fn changed(&self, scope: &str, key: &str) -> &Notify {
        let hash = self.inner.shard_hasher.hash_one((scope, key));
        // NOTIFY_SHARDS is a power of two; the mask keeps the index in range.
        &self.inner.changed[(hash as usize) & (NOTIFY_SHARDS - 1)]
    }

    /// Reads the row outside any write transaction and decides from that snapshot when no
    /// write is needed.
    async fn claim_from_snapshot(&self, request: &ClaimRequest<'_>) -> Result<Snapshot, Error> {
        let row = query(&self.inner.sql.select)
            .bind(request.scope)
            .bind(request.key)
            .fetch_optional(&self.inner.readers)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(Snapshot::Absent);
        };
        let record = decode_row(&row, request.scope)?;
        Ok(
            match decide(Some(record), request, now_ms()?, system_clock_micros())? {
                Decision::Answer(claim) => Snapshot::Decided(claim),
                Decision::Acquire { .. } | Decision::Renew { .. } => Snapshot::MustWrite,
            },
        )
    }

    /// Inserts a new record if the key has none: one statement, atomic on the primary key.
    /// Returns the new record's epoch if it inserted.
    async fn insert_new(&self, request: &ClaimRequest<'_>) -> Result<Option<u64>, Error> {
        let mut writer = self.inner.writer.acquire().await.map_err(store_error)?;
        // Deadlines count from when the writer is ours, not from when we queued for it.
        let now = now_ms()?;
        // No row: an earlier record of this key, if any, was purged; the clock keeps the new
        // epoch above its epochs.
        let epoch = next_epoch(None, system_clock_micros()).unwrap_or(1);
        let inserted = query(&self.inner.sql.insert_new)
            .bind(request.scope)
            .bind(request.key)
            .bind(owner_bytes(request.owner))
            .bind(&request.fingerprint.as_bytes()[..])
            .bind(deadline(now, request.lease))
            .bind(deadline(now, request.ttl.max(request.lease)))
            .bind(to_sql_epoch(epoch)?)
            .execute(&mut *writer)
            .await
            .map_err(store_error)?
            .rows_affected();
        Ok((inserted == 1).then_some(epoch))
    }

    /// Decides a claim under the write lock: read, decide and write in one `BEGIN IMMEDIATE`
    /// transaction. Any early return drops the transaction, which rolls it back.
    async fn claim_with_write_lock(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let sql = &self.inner.sql;
        let mut tx = self
            .inner
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        // Read the clock once the lock is held, so time spent waiting for it does not shorten
        // the lease.
        let now = now_ms()?;
        let row = query(&sql.select)
            .bind(request.scope)
            .bind(request.key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let record = row.map(|row| decode_row(&row, request.scope)).transpose()?;
        let lease_until = deadline(now, request.lease);
        let claim = match decide(record, request, now, system_clock_micros())? {
            Decision::Answer(claim) => claim,
            Decision::Acquire { epoch } => {
                query(&sql.acquire)
                    .bind(request.scope)
                    .bind(request.key)
                    .bind(owner_bytes(request.owner))
                    .bind(to_sql_epoch(epoch)?)
                    .bind(&request.fingerprint.as_bytes()[..])
                    .bind(lease_until)
                    .bind(deadline(now, request.ttl.max(request.lease)))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                acquired(request, epoch)
            }
            Decision::Renew { epoch } => {
                query(&sql.renew)
                    .bind(lease_until)
                    .bind(request.scope)
                    .bind(request.key)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                acquired(request, epoch)
            }
        };
        tx.commit().await.map_err(store_error)?;
        Ok(claim)
    }

    /// Runs the compare-and-set statement `build` makes from the current time, binding its
    /// last four parameters (scope, key, owner, epoch); no row changed means the lease was
    /// lost.
    async fn compare_and_set(
        &self,
        lease: &Lease,
        build: impl FnOnce(i64) -> sqlx::query::Query<'static, Sqlite, SqliteArguments>,
    ) -> Result<(), Error> {
        let epoch = to_sql_epoch(lease.epoch())?;
        let mut writer = self.inner.writer.acquire().await.map_err(store_error)?;
        // Deadlines count from when the writer is ours, not from when we queued for it.
        let now = now_ms()?;
        let result = build(now)
            .bind(lease.scope())
            .bind(lease.key())
            .bind(owner_bytes(lease.owner()))
            .bind(epoch)
            .execute(&mut *writer)
            .await
            .map_err(store_error)?;
        if result.rows_affected() == 0 {
            Err(Error::LeaseLost)
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.location)
            .field("table", &self.inner.table)
            .field("pool_size", &self.inner.pool_size)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        match self.claim_from_snapshot(request).await? {
            Snapshot::Decided(claim) => return Ok(claim),
            // The common case for a new key: one insert, no transaction. If another claimer
            // inserted first, decide under the write lock like any existing record.
            Snapshot::Absent => {
                if let Some(epoch) = self.insert_new(request).await? {
                    return Ok(acquired(request, epoch));
                }
            }
            Snapshot::MustWrite => {}
        }
        self.claim_with_write_lock(request).await
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        let statement = query(&self.inner.sql.complete).bind(Vec::from(payload));
        self.compare_and_set(lease, |now| statement.bind(deadline(now, ttl)))
            .await?;
        self.changed(lease.scope(), lease.key()).notify_waiters();
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let statement = query(&self.inner.sql.release);
        self.compare_and_set(lease, |_| statement).await?;
        self.changed(lease.scope(), lease.key()).notify_waiters();
        Ok(())
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        let statement = query(&self.inner.sql.extend);
        self.compare_and_set(lease, |now| statement.bind(deadline(now, lease_for)))
            .await
    }

    fn release_in_background(&self, lease: Lease) {
        crate::store::spawn_release(self.clone(), lease);
    }

    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        crate::store::spawn_abandon(self.clone(), request);
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        let now = now_ms()?;
        let mut removed = 0u64;
        loop {
            // One statement per batch, each its own transaction, so claims get the write
            // lock between batches.
            let deleted = query(&self.inner.sql.purge)
                .bind(now)
                .bind(PURGE_BATCH)
                .execute(&self.inner.writer)
                .await
                .map_err(store_error)?
                .rows_affected();
            removed += deleted;
            if deleted < PURGE_BATCH.unsigned_abs() {
                return Ok(removed);
            }
        }
    }

    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        // Wakes on completions and releases made through this process's stores; changes made
        // by another process are seen when `max_wait` runs out.
        let notified = self.changed(scope, key).notified();
        let _ = tokio::time::timeout(max_wait, notified).await;
    }
}

/// The SQL, built once per store for its table.
struct Statements {
    select: Arc<str>,
    insert_new: Arc<str>,
    acquire: Arc<str>,
    renew: Arc<str>,
    complete: Arc<str>,
    release: Arc<str>,
    extend: Arc<str>,
    purge: Arc<str>,
}

impl Statements {
    fn new(table: &str) -> Self {
        // `table` is validated (letters, digits, `_`), so quoting it is enough.
        let t = table;
        // The compare-and-set condition; its four parameters follow the statement's own.
        let cas = |first: usize| {
            format!(
                r#"WHERE scope = ?{} AND "key" = ?{} AND state = '{STATE_IN_PROGRESS}'
                       AND owner = ?{} AND epoch = ?{}"#,
                first,
                first + 1,
                first + 2,
                first + 3
            )
        };
        Statements {
            select: format!(
                r#"SELECT state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload
                   FROM "{t}" WHERE scope = ?1 AND "key" = ?2"#
            )
            .into(),
            insert_new: format!(
                r#"INSERT INTO "{t}"
                       (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
                   VALUES (?1, ?2, '{STATE_IN_PROGRESS}', ?3, ?7, ?4, ?5, ?6, NULL)
                   ON CONFLICT (scope, "key") DO NOTHING"#
            )
            .into(),
            acquire: format!(
                r#"INSERT INTO "{t}"
                       (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
                   VALUES (?1, ?2, '{STATE_IN_PROGRESS}', ?3, ?4, ?5, ?6, ?7, NULL)
                   ON CONFLICT (scope, "key") DO UPDATE SET
                       state = excluded.state, owner = excluded.owner, epoch = excluded.epoch,
                       fingerprint = excluded.fingerprint, lease_until_ms = excluded.lease_until_ms,
                       expires_at_ms = excluded.expires_at_ms, payload = NULL"#
            )
            .into(),
            renew: format!(
                r#"UPDATE "{t}" SET lease_until_ms = ?1, expires_at_ms = MAX(expires_at_ms, ?1)
                   WHERE scope = ?2 AND "key" = ?3"#
            )
            .into(),
            // Also matches this lease's own completed record (a retried completion), which it
            // leaves as it is.
            complete: format!(
                r#"UPDATE "{t}" SET state = '{STATE_COMPLETED}',
                       payload = CASE WHEN state = '{STATE_COMPLETED}' THEN payload ELSE ?1 END,
                       expires_at_ms = CASE WHEN state = '{STATE_COMPLETED}' THEN expires_at_ms ELSE ?2 END,
                       lease_until_ms = NULL
                   WHERE scope = ?3 AND "key" = ?4 AND owner = ?5 AND epoch = ?6
                       AND state IN ('{STATE_IN_PROGRESS}', '{STATE_COMPLETED}')"#
            )
            .into(),
            release: format!(
                r#"UPDATE "{t}" SET state = '{STATE_RELEASED}', lease_until_ms = NULL, payload = NULL
                   {}"#,
                cas(1)
            )
            .into(),
            extend: format!(
                r#"UPDATE "{t}" SET lease_until_ms = ?1, expires_at_ms = MAX(expires_at_ms, ?1)
                   {}"#,
                cas(2)
            )
            .into(),
            purge: format!(
                r#"DELETE FROM "{t}" WHERE rowid IN
                       (SELECT rowid FROM "{t}" WHERE expires_at_ms <= ?1 LIMIT ?2)"#
            )
            .into(),
        }
    }
}

fn query(sql: &Arc<str>) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    sqlx::query(AssertSqlSafe(sql.clone()))
}

fn pool_options(connections: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(connections)
        // Local connections: keep them; a reconnect costs more than an idle file handle.
        .idle_timeout(None)
        .max_lifetime(None)
        // A returned connection is pinged already (after any rollback it queued); a second
        // ping on acquire only adds a round trip.
        .test_before_acquire(false)
        .before_acquire(refuse_open_transaction)
}

/// Defence in depth: a connection still inside a transaction is closed (rolling it back)
/// rather than handed out.
fn refuse_open_transaction(
    connection: &mut SqliteConnection,
    _: PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    let usable = !connection.is_in_transaction();
    Box::pin(async move { Ok(usable) })
}

/// Creates the table and index if missing and checks that the table has the columns the
/// store reads and writes.
async fn migrate(pool: &SqlitePool, table: &str) -> Result<(), Error> {
    let t = table;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(store_error)?;
    let ddl = [
        format!(
            r#"CREATE TABLE IF NOT EXISTS "{t}" (
                scope          TEXT    NOT NULL,
                "key"          TEXT    NOT NULL,
                state          TEXT    NOT NULL,
                owner          BLOB,
                epoch          INTEGER NOT NULL,
                fingerprint    BLOB    NOT NULL,
                lease_until_ms INTEGER,
                expires_at_ms  INTEGER NOT NULL,
                payload        BLOB,
                PRIMARY KEY (scope, "key")
            )"#
        ),
        format!(r#"CREATE INDEX IF NOT EXISTS "idx_{t}_expires_at" ON "{t}" (expires_at_ms)"#),
        format!(
            r#"SELECT scope, "key", state, owner, epoch, fingerprint, lease_until_ms,
                      expires_at_ms, payload
               FROM "{t}" LIMIT 0"#
        ),
    ];
    for statement in ddl {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(|source| {
                Error::store(
                    BACKEND,
                    format!(
                        "cannot prepare table `{table}` (it may exist with other columns): {source}"
                    ),
                )
            })?;
    }
    tx.commit().await.map_err(store_error)
}

fn validate_table(name: &str) -> Result<String, Error> {
    let invalid = |why: &str| Error::InvalidInput {
        reason: format!("SQLite table name {name:?} {why}"),
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(invalid("is empty")),
        Some(first) if !(first.is_ascii_alphabetic() || first == '_') => {
            return Err(invalid("must start with an ASCII letter or `_`"));
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid("may contain only ASCII letters, digits and `_`"));
    }
    if name.len() > MAX_TABLE_NAME {
        return Err(invalid("is longer than 63 characters"));
    }
    if name.len() >= 7 && name[..7].eq_ignore_ascii_case("sqlite_") {
        return Err(invalid("starts with `sqlite_`, which SQLite reserves"));
    }
    Ok(name.to_owned())
}

fn store_error(error: sqlx::Error) -> Error {
    Error::store(BACKEND, error)
}

/// Now, in Unix milliseconds (see "Clock" in the module docs).
fn now_ms() -> Result<i64, Error> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| Error::store(BACKEND, format!("system clock before 1970: {error}")))?;
    Ok(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

/// `now + after` in milliseconds, rounded up (a sub-millisecond lease still lasts), saturating
/// at the end of time rather than overflowing (a ttl of `Duration::MAX` means "forever").
fn deadline(now: i64, after: Duration) -> i64 {
    let millis = after.as_millis() + u128::from(after.subsec_nanos() % 1_000_000 != 0);
    now.saturating_add(i64::try_from(millis).unwrap_or(i64::MAX))
}

fn owner_bytes(owner: OwnerId) -> Vec<u8> {
    owner.as_u128().to_be_bytes().to_vec()
}

fn to_sql_epoch(epoch: u64) -> Result<i64, Error> {
    i64::try_from(epoch).map_err(|_| Error::InvalidInput {
        reason: format!("epoch {epoch} does not fit SQLite's INTEGER"),
    })
}

fn acquired(request: &ClaimRequest<'_>, epoch: u64) -> Claim {
    Claim::Acquired(Lease::new(request.scope, request.key, request.owner, epoch))
}

/// A row, decoded and validated.
struct StoredRecord {
    state: StoredState,
    epoch: u64,
    fingerprint: Fingerprint,
    expires_at_ms: i64,
}

enum StoredState {
    InProgress { owner: OwnerId, lease_until_ms: i64 },
    Completed { payload: Vec<u8> },
    Released,
}

/// Column positions in `Statements::select`.
const COL_STATE: usize = 0;
const COL_OWNER: usize = 1;
const COL_EPOCH: usize = 2;
const COL_FINGERPRINT: usize = 3;
const COL_LEASE_UNTIL: usize = 4;
const COL_EXPIRES_AT: usize = 5;
const COL_PAYLOAD: usize = 6;

fn decode_row(row: &SqliteRow, scope: &str) -> Result<StoredRecord, Error> {
    /// A non-NULL column. Decoded through `Option`, because sqlx decodes a NULL as the type's
    /// empty value (0, "", no bytes), which would make a damaged row look like a valid one.
    fn column<'r, T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>>(
        row: &'r SqliteRow,
        index: usize,
        name: &str,
        scope: &str,
    ) -> Result<T, Error> {
        match row.try_get::<Option<T>, _>(index) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(Error::decode(scope, format!("column `{name}` is NULL"))),
            Err(source) => Err(Error::decode(scope, format!("column `{name}`: {source}"))),
        }
    }

    let state: String = column(row, COL_STATE, "state", scope)?;
    let epoch: i64 = column(row, COL_EPOCH, "epoch", scope)?;
    let epoch = u64::try_from(epoch)
        .map_err(|_| Error::decode(scope, format!("column `epoch`: negative ({epoch})")))?;
    let fingerprint: Vec<u8> = column(row, COL_FINGERPRINT, "fingerprint", scope)?;
    let fingerprint = <[u8; 32]>::try_from(fingerprint.as_slice()).map_err(|_| {
        Error::decode(
            scope,
            format!(
                "column `fingerprint`: {} bytes, expected 32",
                fingerprint.len()
            ),
        )
    })?;
    let expires_at_ms: i64 = column(row, COL_EXPIRES_AT, "expires_at_ms", scope)?;
    let state = match state.as_str() {
        STATE_IN_PROGRESS => {
            let owner: Vec<u8> = column(row, COL_OWNER, "owner", scope)?;
            let owner = <[u8; 16]>::try_from(owner.as_slice()).map_err(|_| {
                Error::decode(
                    scope,
                    format!("column `owner`: {} bytes, expected 16", owner.len()),
                )
            })?;
            StoredState::InProgress {
                owner: OwnerId::from_u128(u128::from_be_bytes(owner)),
                lease_until_ms: column(row, COL_LEASE_UNTIL, "lease_until_ms", scope)?,
            }
        }
        STATE_COMPLETED => StoredState::Completed {
            payload: column(row, COL_PAYLOAD, "payload", scope)?,
        },
        STATE_RELEASED => StoredState::Released,
        other => {
            return Err(Error::decode(
                scope,
                format!("column `state`: unknown state {other:?}"),
            ));
        }
    };
    Ok(StoredRecord {
        state,
        epoch,
        fingerprint: Fingerprint::from_bytes(fingerprint),
        expires_at_ms,
    })
}

/// What the snapshot read before a claim found.
enum Snapshot {
    /// No record: try inserting one.
    Absent,
    /// The record decides the claim without a write.
    Decided(Claim),
    /// The claim writes to an existing record: decide again under the write lock.
    MustWrite,
}

/// What a claim does, given the stored record.
enum Decision {
    /// Answer without writing.
    Answer(Claim),
    /// Write a fresh in-progress record with this epoch.
    Acquire { epoch: u64 },
    /// The same owner's claim, retried: renew its lease, keep its epoch.
    Renew { epoch: u64 },
}

/// The decision table of [`IdempotencyStore::claim`], in the same order as `MemoryStore`.
fn decide(
    record: Option<StoredRecord>,
    request: &ClaimRequest<'_>,
    now: i64,
    clock_micros: u64,
) -> Result<Decision, Error> {
    let Some(record) = record else {
        return Ok(Decision::Acquire {
            epoch: next_epoch(None, clock_micros).unwrap_or(1),
        });
    };
    let next_epoch = next_epoch(Some(record.epoch), clock_micros)
        .map(|epoch| Decision::Acquire { epoch })
        .ok_or_else(|| Error::decode(request.scope, "column `epoch`: at its maximum"));
    // Past its ttl, or released: as good as absent, but the epoch keeps counting.
    if record.expires_at_ms <= now {
        return next_epoch;
    }
    let same_fingerprint = record.fingerprint == request.fingerprint;
    match record.state {
        StoredState::Released => next_epoch,
        // Our own claim, retried (the first answer was lost): same epoch, fresh lease.
        StoredState::InProgress { owner, .. } if owner == request.owner => Ok(Decision::Renew {
            epoch: record.epoch,
        }),
        StoredState::InProgress { lease_until_ms, .. } if lease_until_ms > now => {
            Ok(Decision::Answer(if same_fingerprint {
                Claim::InFlight {
                    retry_after: Duration::from_millis((lease_until_ms - now).unsigned_abs()),
                }
            } else {
                Claim::PayloadMismatch
            }))
        }
        // The owner stopped heartbeating: take over with a higher epoch.
        StoredState::InProgress { .. } => next_epoch,
        StoredState::Completed { payload } => Ok(Decision::Answer(if same_fingerprint {
            Claim::Completed(Record {
                payload: Bytes::from(payload),
                epoch: record.epoch,
                expires_in: Some(Duration::from_millis(
                    (record.expires_at_ms - now).unsigned_abs(),
                )),
            })
        } else {
            Claim::PayloadMismatch
        })),
    }
}

#[cfg(test)]
mod tests {
    //! Tests that need a raw connection to the database file: the persisted row format and
    //! rows the store did not write.

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::Call;

    struct TempDb(PathBuf);

    impl TempDb {
        fn new(label: &str) -> Self {
            TempDb(std::env::temp_dir().join(format!(
                "idempotent-sqlite-unit-{label}-{}-{}.db",
                std::process::id(),
                OwnerId::new()
            )))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut name = self.0.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }

    async fn raw(db: &TempDb) -> SqliteConnection {
        SqliteConnectOptions::new()
            .filename(&db.0)
            .busy_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("raw connection")
    }

    fn request<'a>(scope: &'a str, key: &'a str, owner: OwnerId) -> ClaimRequest<'a> {
        ClaimRequest {
            scope,
            key,
            fingerprint: Fingerprint::of_bytes(b"request"),
            owner,
            lease: Duration::from_secs(30),
            ttl: Duration::from_secs(60),
        }
    }

    /// A row written behind the store's back, and why it must not decode.
    #[derive(Clone)]
    struct BadRow {
        key: &'static str,
        state: &'static str,
        owner: Option<Vec<u8>>,
        epoch: &'static str,
        fingerprint: Vec<u8>,
        lease_until_ms: Option<i64>,
        payload: Option<Vec<u8>>,
        reason: &'static str,
    }

    /// A far-future deadline for hand-written rows.
    const LATER: i64 = 4_102_444_800_000; // 2100-01-01

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_are_written_in_the_documented_format() {
        let db = TempDb::new("format-write");
        let store = SqliteStore::open(&db.0).await.expect("open");
        let mut raw = raw(&db).await;
        let owner = OwnerId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        let before = now_ms().expect("clock");

        let Claim::Acquired(lease) = store
            .claim(&request("fmt", "k", owner))
            .await
            .expect("claim")
        else {
            panic!("expected to acquire");
        };
        let row = sqlx::query(
            r#"SELECT state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload
               FROM "idempotency_records" WHERE scope = 'fmt' AND "key" = 'k'"#,
        )
        .fetch_one(&mut raw)
        .await
        .expect("row");
        assert_eq!(row.get::<String, _>(0), "in_progress");
        assert_eq!(
            row.get::<Vec<u8>, _>(1),
            (1u8..=16).collect::<Vec<u8>>(),
            "owner: 16 bytes, big-endian"
        );
        assert_eq!(
            row.get::<i64, _>(2),
            i64::try_from(lease.epoch()).expect("epoch fits")
        );
        assert!(
            lease.epoch() >= u64::try_from(before).expect("after 1970") * 1000,
            "a new record's epoch is at least the clock in microseconds"
        );
        assert_eq!(
            row.get::<Vec<u8>, _>(3),
            Fingerprint::of_bytes(b"request").as_bytes().to_vec()
        );
        let lease_until: i64 = row.get(4);
        assert!((before + 30_000..before + 32_000).contains(&lease_until));
        let expires_at: i64 = row.get(5);
        assert!((before + 60_000..before + 62_000).contains(&expires_at));
        assert_eq!(row.get::<Option<Vec<u8>>, _>(6), None);

        store
            .complete(
                &lease,
                Bytes::from_static(b"\x01\"ok\""),
                Duration::from_secs(3600),
            )
            .await
            .expect("complete");
        let row = sqlx::query(
            r#"SELECT state, epoch, lease_until_ms, expires_at_ms, payload
               FROM "idempotency_records" WHERE scope = 'fmt' AND "key" = 'k'"#,
        )
        .fetch_one(&mut raw)
        .await
        .expect("row");
        assert_eq!(row.get::<String, _>(0), "completed");
        assert_eq!(
            row.get::<i64, _>(1),
            i64::try_from(lease.epoch()).expect("epoch fits")
        );
        assert_eq!(row.get::<Option<i64>, _>(2), None);
        let expires_at: i64 = row.get(3);
        assert!((before + 3_600_000..before + 3_602_000).contains(&expires_at));
        assert_eq!(row.get::<Vec<u8>, _>(4), b"\x01\"ok\"".to_vec());

        let Claim::Acquired(lease) = store
            .claim(&request("fmt", "released", owner))
            .await
            .expect("claim")
        else {
            panic!("expected to acquire");
        };
        store.release(&lease).await.expect("release");
        let row = sqlx::query(
            r#"SELECT state, epoch, lease_until_ms FROM "idempotency_records"
               WHERE scope = 'fmt' AND "key" = 'released'"#,
        )
        .fetch_one(&mut raw)
        .await
        .expect("row");
        assert_eq!(row.get::<String, _>(0), "released");
        assert_eq!(
            row.get::<i64, _>(1),
            i64::try_from(lease.epoch()).expect("epoch fits"),
            "a tombstone keeps its epoch"
        );
        assert_eq!(row.get::<Option<i64>, _>(2), None);

        // The schema itself: columns, types, nullability, key order; the index; WAL.
        let columns: Vec<(String, String, i64, i64)> =
            sqlx::query(r#"PRAGMA table_info("idempotency_records")"#)
                .fetch_all(&mut raw)
                .await
                .expect("table_info")
                .iter()
                .map(|row| (row.get(1), row.get(2), row.get(3), row.get(5)))
                .collect();
        let expected = [
            ("scope", "TEXT", 1, 1),
            ("key", "TEXT", 1, 2),
            ("state", "TEXT", 1, 0),
            ("owner", "BLOB", 0, 0),
            ("epoch", "INTEGER", 1, 0),
            ("fingerprint", "BLOB", 1, 0),
            ("lease_until_ms", "INTEGER", 0, 0),
            ("expires_at_ms", "INTEGER", 1, 0),
            ("payload", "BLOB", 0, 0),
        ]
        .map(|(name, ty, not_null, pk)| (name.to_owned(), ty.to_owned(), not_null, pk));
        assert_eq!(columns, expected);
        let index: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'idx_idempotency_records_expires_at'",
        )
        .fetch_one(&mut raw)
        .await
        .expect("expiry index");
        assert!(index.contains("(expires_at_ms)"), "{index}");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut raw)
            .await
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_in_the_documented_format_are_read() {
        let db = TempDb::new("format-read");
        let store = SqliteStore::open(&db.0).await.expect("open");
        let mut raw = raw(&db).await;
        let fingerprint = Fingerprint::of_bytes(b"request");
        let owner = OwnerId::new();
        let insert = r#"INSERT INTO "idempotency_records"
            (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"#;
        sqlx::query(insert)
            .bind("golden")
            .bind("completed")
            .bind("completed")
            .bind(Option::<Vec<u8>>::None)
            .bind(7_i64)
            .bind(&fingerprint.as_bytes()[..])
            .bind(Option::<i64>::None)
            .bind(LATER)
            .bind(&b"\x01{\"amount\":5}"[..])
            .execute(&mut raw)
            .await
            .expect("insert completed");
        sqlx::query(insert)
            .bind("golden")
            .bind("in_progress")
            .bind("in_progress")
            .bind(owner.as_u128().to_be_bytes().to_vec())
            .bind(3_i64)
            .bind(&fingerprint.as_bytes()[..])
            .bind(LATER)
            .bind(LATER)
            .bind(Option::<Vec<u8>>::None)
            .execute(&mut raw)
            .await
            .expect("insert in progress");
        sqlx::query(insert)
            .bind("golden")
            .bind("released")
            .bind("released")
            .bind(Option::<Vec<u8>>::None)
            .bind(4_i64)
            .bind(&fingerprint.as_bytes()[..])
            .bind(Option::<i64>::None)
            .bind(LATER)
            .bind(Option::<Vec<u8>>::None)
            .execute(&mut raw)
            .await
            .expect("insert released");

        match store
            .claim(&request("golden", "completed", OwnerId::new()))
            .await
        {
            Ok(Claim::Completed(record)) => {
                assert_eq!(&record.payload[..], b"\x01{\"amount\":5}");
                assert_eq!(record.epoch, 7);
            }
            other => panic!("expected the hand-written record, got {other:?}"),
        }
        // The owner column decodes to the same owner: its retried claim keeps the epoch.
        match store.claim(&request("golden", "in_progress", owner)).await {
            Ok(Claim::Acquired(lease)) => assert_eq!(lease.epoch(), 3),
            other => panic!("expected the owner's own claim, got {other:?}"),
        }
        match store
            .claim(&request("golden", "in_progress", OwnerId::new()))
            .await
        {
            Ok(Claim::InFlight { .. }) => {}
            other => panic!("expected in flight, got {other:?}"),
        }
        match store
            .claim(&request("golden", "released", OwnerId::new()))
            .await
        {
            // Above the tombstone's epoch 4, and at least the clock in microseconds.
            Ok(Claim::Acquired(lease)) => assert!(lease.epoch() > 1_700_000_000_000_000),
            other => panic!("expected to acquire the tombstone, got {other:?}"),
        }
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_rows_are_errors_and_the_body_does_not_run() {
        let db = TempDb::new("corrupt");
        let store = SqliteStore::open(&db.0).await.expect("open");
        let mut raw = raw(&db).await;
        let valid = BadRow {
            key: "",
            state: "completed",
            owner: None,
            epoch: "1",
            fingerprint: Fingerprint::of_bytes(b"request").as_bytes().to_vec(),
            lease_until_ms: None,
            payload: Some(b"\x011".to_vec()),
            reason: "",
        };
        let owner = OwnerId::new().as_u128().to_be_bytes().to_vec();
        let rows = [
            BadRow {
                key: "unknown-state",
                state: "exploded",
                reason: "unknown state \"exploded\"",
                ..valid.clone()
            },
            BadRow {
                key: "completed-null-payload",
                payload: None,
                reason: "column `payload` is NULL",
                ..valid.clone()
            },
            BadRow {
                key: "short-fingerprint",
                fingerprint: vec![1, 2, 3],
                reason: "column `fingerprint`: 3 bytes",
                ..valid.clone()
            },
            BadRow {
                key: "in-progress-no-owner",
                state: "in_progress",
                lease_until_ms: Some(LATER),
                payload: None,
                reason: "column `owner` is NULL",
                ..valid.clone()
            },
            BadRow {
                key: "in-progress-no-lease",
                state: "in_progress",
                owner: Some(owner.clone()),
                payload: None,
                reason: "column `lease_until_ms` is NULL",
                ..valid.clone()
            },
            BadRow {
                key: "owner-wrong-size",
                state: "in_progress",
                owner: Some(vec![1; 8]),
                lease_until_ms: Some(LATER),
                payload: None,
                reason: "column `owner`: 8 bytes",
                ..valid.clone()
            },
            BadRow {
                key: "text-epoch",
                epoch: "one",
                reason: "not compatible with SQL type `TEXT`",
                ..valid.clone()
            },
            BadRow {
                key: "negative-epoch",
                epoch: "-1",
                reason: "column `epoch`: negative",
                ..valid.clone()
            },
        ];
        for row in &rows {
            // `CAST` only where the text is a number, so "one" stays text in the INTEGER column.
            sqlx::query(
                r#"INSERT INTO "idempotency_records"
                   (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
                   VALUES ('corrupt', ?1, ?2, ?3,
                           CASE WHEN ?4 GLOB '*[0-9]' THEN CAST(?4 AS INTEGER) ELSE ?4 END,
                           ?5, ?6, ?7, ?8)"#,
            )
            .bind(row.key)
            .bind(row.state)
            .bind(row.owner.clone())
            .bind(row.epoch)
            .bind(row.fingerprint.clone())
            .bind(row.lease_until_ms)
            .bind(LATER)
            .bind(row.payload.clone())
            .execute(&mut raw)
            .await
            .expect("insert a bad row");
        }

        for BadRow { key, reason, .. } in &rows {
            match store.claim(&request("corrupt", key, OwnerId::new())).await {
                Err(Error::Decode { scope, source }) => {
                    assert_eq!(scope, "corrupt");
                    assert!(
                        source.to_string().contains(reason),
                        "row {key:?}: {source} (expected {reason:?})"
                    );
                }
                other => panic!("row {key:?} must be a decode error, got {other:?}"),
            }
            let runs = AtomicUsize::new(0);
            let result = Call::new(&store, "corrupt", key)
                .fingerprint(Fingerprint::of_bytes(b"request"))
                .run(async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, Error>(1)
                })
                .await;
            assert!(
                matches!(result, Err(Error::Decode { .. })),
                "row {key:?}: {result:?}"
            );
            assert_eq!(runs.load(Ordering::SeqCst), 0, "row {key:?}: the body ran");
        }

        // Purging does not decode: an expired bad row is deleted like any other, and the key
        // is usable again.
        sqlx::query(
            r#"UPDATE "idempotency_records" SET expires_at_ms = 0 WHERE "key" = 'unknown-state'"#,
        )
        .execute(&mut raw)
        .await
        .expect("expire a bad row");
        assert_eq!(store.purge_expired().await.expect("purge"), 1);
        assert!(matches!(
            store
                .claim(&request("corrupt", "unknown-state", OwnerId::new()))
                .await,
            Ok(Claim::Acquired(_))
        ));
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_with_other_columns_is_refused_at_open() {
        let db = TempDb::new("foreign-table");
        {
            let mut raw = SqliteConnectOptions::new()
                .filename(&db.0)
                .create_if_missing(true)
                .connect()
                .await
                .expect("raw connection");
            sqlx::query(
                r#"CREATE TABLE "idempotency_records" (id INTEGER PRIMARY KEY, body TEXT)"#,
            )
            .execute(&mut raw)
            .await
            .expect("create a foreign table");
            raw.close().await.expect("close");
        }
        match SqliteStore::open(&db.0).await {
            Err(Error::Store { backend, source }) => {
                assert_eq!(backend, "sqlite");
                assert!(
                    source.to_string().contains("idempotency_records"),
                    "{source}"
                );
            }
            other => panic!("expected a store error, got {other:?}"),
        }
    }

    #[test]
    fn deadlines_round_up_and_saturate() {
        assert_eq!(deadline(1_000, Duration::from_millis(300)), 1_300);
        assert_eq!(deadline(1_000, Duration::from_micros(1)), 1_001);
        assert_eq!(deadline(1_000, Duration::MAX), i64::MAX);
        assert_eq!(deadline(i64::MAX - 1, Duration::from_secs(1)), i64::MAX);
    }
}
