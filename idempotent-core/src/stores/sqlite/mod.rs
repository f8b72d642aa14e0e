//! The SQLite store (feature `sqlite`): embedded and durable, for a single node.
//!
//! [`SqliteStore`] keeps records in one table of a SQLite database file, so completed results
//! survive a process restart (and, with the default [`fsync_on_commit`], a power loss). Several
//! processes on the same machine may share the file; machines may not (SQLite's locks do not
//! work over network file systems), so use a shared store when more than one node serves the
//! same keys.
//!
//! # Guarantees
//!
//! - Every claim is decided under SQLite's write lock (or by the primary key of a single
//!   insert), never check-then-act, so two processes sharing the file cannot both run a key.
//! - A row that does not decode (an unknown state, a completed row without payload, a
//!   fingerprint that is not 32 bytes, an in-progress row without owner or lease) is reported
//!   as [`Error::Decode`] and never treated as absent, so it cannot cause a second execution.
//! - Deadlines are Unix milliseconds from the system clock, persisted, so they mean the same
//!   after a restart; a clock step shortens or lengthens live leases and ttls by its size.
//!   They do not follow tokio's paused test clock.
//!
//! # Schema (a persisted format)
//!
//! [`SqliteStore::open`] creates the table and its index if they are missing, where `{table}`
//! is the table name (`idempotency_records` unless [`SqliteStoreBuilder::table`] says
//! otherwise); an existing table without these columns is an error at open:
//!
//! ```sql
#![doc = include_str!("schema.sql")]
//! ```
//!
//! A released row keeps its epoch until it expires; expired rows are deleted by
//! [`purge_expired`](IdempotencyStore::purge_expired), 1,000 per statement.
//!
//! # Configuration
//!
//! One connection does every write (SQLite allows one writer at a time); the others of the
//! pool ([`SqliteStoreBuilder::pool_size`], default 4) serve the read before each claim,
//! alongside the writer in WAL mode. [`SqliteStoreBuilder::busy_timeout`] (default 5 s)
//! bounds waits for locks held by other processes; [`fsync_on_commit`] (default on) trades a
//! `fsync` per write for surviving a power loss.
//!
//! An application with a pool of its own can hand it to [`SqliteStoreBuilder::build`]: the
//! records then share its connections and its settings.
//!
//! [`fsync_on_commit`]: SqliteStoreBuilder::fsync_on_commit

mod builder;
mod statements;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool};

pub use builder::SqliteStoreBuilder;
/// The sqlx crate this store is built with, so that the [`SqlitePool`] a caller passes to
/// [`SqliteStoreBuilder::build`] is the one it expects.
pub use sqlx;
use statements::{Statements, query};

use crate::error::Error;
use crate::store::decision::{Decision, decide};
use crate::store::encoding::{lease_column_epoch, new_column_epoch, owner_bytes};
use crate::store::notify::Changes;
use crate::store::records::{ForgetStep, forget_step, state_of};
use crate::store::time::{millis_until, unix_millis_after, unix_millis_now};
use crate::store::{
    Claim, ClaimRequest, Forget, IdempotencyStore, Lease, Record, RecordState, system_clock_micros,
};
use crate::stores::sql_rows::{DeadlineNames, StoredRow, decode_row};

const BACKEND: &str = "sqlite";
/// The deadline columns, Unix milliseconds.
const DEADLINES: DeadlineNames = ("lease_until_ms", "expires_at_ms");
/// Rows deleted per purge statement: each batch holds the write lock briefly, so claims
/// interleave with a large purge.
const PURGE_BATCH: i64 = 1000;

/// A durable [`IdempotencyStore`] in a SQLite database file, for a single node.
///
/// Cheap to clone (clones share the connections). See the [module docs](crate::stores::sqlite)
/// for the schema and configuration.
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
    /// Exactly one connection: every write goes through it. Writers in this process queue
    /// fairly for it (up to the pool's acquire timeout) instead of contending for the file
    /// lock, where SQLite's busy handler sleeps and retries; the busy timeout then only has to
    /// cover other processes sharing the file and checkpoints.
    writer: SqlitePool,
    /// Read-only connections for the snapshot read before a claim; the writer pool itself
    /// when the store has a single connection.
    readers: SqlitePool,
    sql: Statements,
    table: String,
    location: String,
    pool_size: u32,
    changed: Changes,
    /// Keeps a named in-memory database alive while pool connections come and go.
    _anchor: Option<Mutex<SqliteConnection>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` with default settings: table
    /// `idempotency_records`, 4 connections, 5 s busy timeout, `fsync` on every commit.
    pub async fn open(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
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
                changed: Changes::new(),
                _anchor: anchor,
            }),
        }
    }

    // A claim (the table in `IdempotencyStore::claim`) takes up to three steps, each atomic on
    // its own; the first that can decide, does:
    //
    // 1. A read on a read connection, outside any write transaction (WAL gives it a consistent
    //    snapshot, and the writer never blocks it). If the row decides the claim without a
    //    write (a completed record to replay, a live claim in flight, a payload mismatch), that
    //    is the answer: the state the store held at that instant. Duplicates and waiters never
    //    queue for the writer. A row that does not decode is an error already here.
    // 2. No row: `INSERT ... ON CONFLICT DO NOTHING`. The primary key decides; if the row was
    //    inserted, the claim is acquired.
    // 3. Otherwise (a record to take over, the owner's own claim retried, or the insert lost a
    //    race): one `BEGIN IMMEDIATE` transaction reads the row again, decides and writes. The
    //    write lock is taken before the read, so no other writer can change the row between.
    //
    // The transaction is an sqlx `Transaction`, which rolls back when dropped: a claim
    // cancelled at any await point leaves no transaction open (the rollback is queued on the
    // connection ahead of the ping that returns it to the pool, and, as a second guard, the
    // pool closes rather than hands out a connection still in a transaction).
    //
    // Deadlines are read from the system clock in Rust once per operation, after the writer
    // is ours (so queueing for it does not shorten a lease): on a single node the process's
    // clock and SQLite's are the same clock.

    /// Step 1: decides from a snapshot read when no write is needed.
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
        let row = decode_row(&row, request.scope, DEADLINES)?;
        let now = now_ms()?;
        Ok(match decide_row(&row, request, now)? {
            Decision::Acquire { .. } | Decision::Renew => Snapshot::MustWrite,
            decision => Snapshot::Decided(answer(decision, row)),
        })
    }

    /// Step 2: inserts a new record if the key has none. Returns its epoch if it inserted.
    async fn insert_new(&self, request: &ClaimRequest<'_>) -> Result<Option<u64>, Error> {
        let mut writer = self.inner.writer.acquire().await.map_err(store_error)?;
        let now = now_ms()?;
        // No row: an earlier record of this key, if any, was purged; the clock keeps the new
        // epoch above its epochs.
        let Decision::Acquire { epoch } =
            decide::<i64>(None, request, now, |_| Duration::ZERO, system_clock_micros)?
        else {
            return Ok(None);
        };
        let inserted = query(&self.inner.sql.insert_new)
            .bind(request.scope)
            .bind(request.key)
            .bind(&owner_bytes(request.owner)[..])
            .bind(&request.fingerprint.as_bytes()[..])
            .bind(unix_millis_after(now, request.lease))
            .bind(unix_millis_after(now, request.ttl.max(request.lease)))
            .bind(new_column_epoch(request.scope, epoch)?)
            .execute(&mut *writer)
            .await
            .map_err(store_error)?
            .rows_affected();
        Ok((inserted == 1).then_some(epoch))
    }

    /// Step 3: reads, decides and writes in one `BEGIN IMMEDIATE` transaction. Any early
    /// return drops the transaction, which rolls it back.
    async fn claim_with_write_lock(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let sql = &self.inner.sql;
        let (mut tx, row, now) = self.lock_row(request.scope, request.key).await?;
        let decision = match &row {
            Some(row) => decide_row(row, request, now)?,
            None => decide::<i64>(None, request, now, |_| Duration::ZERO, system_clock_micros)?,
        };
        let lease_until = unix_millis_after(now, request.lease);
        let claim = match (decision, row) {
            (Decision::Acquire { epoch }, _) => {
                query(&sql.acquire)
                    .bind(request.scope)
                    .bind(request.key)
                    .bind(&owner_bytes(request.owner)[..])
                    .bind(new_column_epoch(request.scope, epoch)?)
                    .bind(&request.fingerprint.as_bytes()[..])
                    .bind(lease_until)
                    .bind(unix_millis_after(now, request.ttl.max(request.lease)))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                acquired(request, epoch)
            }
            (Decision::Renew, Some(row)) => {
                query(&sql.renew)
                    .bind(lease_until)
                    .bind(request.scope)
                    .bind(request.key)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                acquired(request, row.stored.epoch)
            }
            (decision, Some(row)) => answer(decision, row),
            // `decide` renews and answers only for a row that exists.
            (_, None) => {
                return Err(Error::store(
                    BACKEND,
                    "the claim decision does not fit the stored row",
                ));
            }
        };
        tx.commit().await.map_err(store_error)?;
        Ok(claim)
    }

    /// Opens a `BEGIN IMMEDIATE` transaction (the write lock is taken before the read, so no
    /// other writer can change the row until it ends) and reads the row in it, at `now`.
    async fn lock_row(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<(sqlx::Transaction<'static, Sqlite>, Option<StoredRow>, i64), Error> {
        let mut tx = self
            .inner
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let now = now_ms()?;
        let row = query(&self.inner.sql.select)
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let row = row
            .map(|row| decode_row(&row, scope, DEADLINES))
            .transpose()?;
        Ok((tx, row, now))
    }

    /// Runs the compare-and-set statement `build` makes from the current time, binding its
    /// last four parameters (scope, key, owner, epoch); no row changed means the lease was
    /// lost, and so does an epoch no row can hold.
    async fn compare_and_set(
        &self,
        lease: &Lease,
        build: impl FnOnce(i64) -> sqlx::query::Query<'static, Sqlite, SqliteArguments>,
    ) -> Result<(), Error> {
        let epoch = lease_column_epoch(lease.epoch()).ok_or(Error::LeaseLost)?;
        let mut writer = self.inner.writer.acquire().await.map_err(store_error)?;
        // Deadlines count from when the writer is ours, not from when we queued for it.
        let now = now_ms()?;
        let result = build(now)
            .bind(lease.scope())
            .bind(lease.key())
            .bind(&owner_bytes(lease.owner())[..])
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
        self.compare_and_set(lease, |now| statement.bind(unix_millis_after(now, ttl)))
            .await?;
        self.inner.changed.notify(lease.scope(), lease.key());
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let statement = query(&self.inner.sql.release);
        self.compare_and_set(lease, |_| statement).await?;
        self.inner.changed.notify(lease.scope(), lease.key());
        Ok(())
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        let statement = query(&self.inner.sql.extend);
        self.compare_and_set(lease, |now| {
            statement.bind(unix_millis_after(now, lease_for))
        })
        .await
    }

    crate::store::spawned_background_work!();

    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        let row = query(&self.inner.sql.select)
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.inner.readers)
            .await
            .map_err(store_error)?;
        match row {
            Some(row) => row_state(scope, decode_row(&row, scope, DEADLINES)?, now_ms()?),
            None => Ok(RecordState::Absent),
        }
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        // Read, decide and write under the write lock, like a claim that writes; an early
        // return rolls the transaction back.
        let (mut tx, row, now) = self.lock_row(scope, key).await?;
        let state = match row {
            Some(row) => row_state(scope, row, now)?,
            None => RecordState::Absent,
        };
        if forget_step(&state, mode)? == ForgetStep::Forget {
            // The row stays, released, so the next claim's epoch is above its epoch.
            query(&self.inner.sql.forget)
                .bind(scope)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            tx.commit().await.map_err(store_error)?;
            self.inner.changed.notify(scope, key);
        }
        Ok(state)
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
        self.inner.changed.wait(scope, key, max_wait).await;
    }
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

fn decide_row(row: &StoredRow, request: &ClaimRequest<'_>, now: i64) -> Result<Decision, Error> {
    decide(
        Some(&row.stored),
        request,
        now,
        |deadline| millis_until(now, deadline),
        system_clock_micros,
    )
}

/// A decoded row as [`IdempotencyStore::inspect`] reports it at `now`.
fn row_state(scope: &str, row: StoredRow, now: i64) -> Result<RecordState, Error> {
    state_of(
        scope,
        &row.stored,
        row.payload.map(Bytes::from),
        now,
        |deadline| millis_until(now, deadline),
    )
}

/// The claim for a decision that writes nothing.
fn answer(decision: Decision, row: StoredRow) -> Claim {
    match decision {
        Decision::InFlight { retry_after } => Claim::InFlight { retry_after },
        Decision::Mismatch => Claim::PayloadMismatch,
        Decision::Replay { expires_in } => Claim::Completed(Record {
            // A completed row always has a payload: `decode_row` refuses one without.
            payload: Bytes::from(row.payload.unwrap_or_default()),
            epoch: row.stored.epoch,
            expires_in: Some(expires_in),
        }),
        Decision::Acquire { .. } | Decision::Renew => Claim::InFlight {
            retry_after: Duration::ZERO,
        },
    }
}

fn acquired(request: &ClaimRequest<'_>, epoch: u64) -> Claim {
    Claim::Acquired(Lease::new(request.scope, request.key, request.owner, epoch))
}

fn store_error(error: sqlx::Error) -> Error {
    Error::store(BACKEND, error)
}

/// Now, in Unix milliseconds (see the notes above the claim steps).
fn now_ms() -> Result<i64, Error> {
    unix_millis_now().ok_or_else(|| Error::store(BACKEND, "the system clock is before 1970"))
}
