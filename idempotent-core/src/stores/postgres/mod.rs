//! The PostgreSQL store (feature `postgres`): shared, durable, and transactional.
//!
//! [`PostgresStore`] keeps one row per `(scope, key)` in a table it can create itself
//! ([`PostgresStore::migrate`]). Queries are built at run time (sqlx `query`, never `query!`),
//! so building a program that uses this store needs no database.
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
//! # Guarantees
//!
//! - Every claim is decided by one SQL statement, an upsert that locks the record's row,
//!   never check-then-act: two processes cannot both acquire a key, nor both take over a
//!   lapsed claim. `complete`, `release` and `extend` are one compare-and-set `UPDATE` on the
//!   lease's owner and epoch; no row updated is [`Error::LeaseLost`]. A fresh call costs two
//!   statements (claim, complete) and a replay one, which writes nothing.
//! - Deadlines are computed on the server's clock (`statement_timestamp()`), not the
//!   callers'. A new epoch is at least that clock in microseconds, so a key's epochs never
//!   repeat, even after its row was purged.
//! - A row that cannot be read is an error, never "absent". The claim checks the row before it
//!   decides anything: a negative epoch (or one at `bigint`'s maximum, after which no epoch
//!   exists), an unknown `state`, a fingerprint that is not 32 bytes, an owner that is not 16,
//!   an in-progress row without owner or lease deadline, a completed row without payload.
//!   Such a row makes every claim fail with [`Error::Decode`], and the claim never writes over
//!   it, not even past its ttl: taking it for absent would run the body a second time, and a
//!   takeover would compute the new epoch from a corrupt one. Repair or delete the row;
//!   [`purge_expired`](IdempotencyStore::purge_expired) deletes it like any other once its
//!   ttl has passed.
//! - Every operation is bounded in time ([Timeouts](#timeouts)): a server that stops
//!   answering is an [`Error::Store`], and the call fails closed.
//!
//! # Schema (a persisted format)
//!
//! [`PostgresStore::migrate`] creates the table and its index if they are missing, where
//! `{table}` is the table's quoted name (`"idempotency_records"` unless
//! [`PostgresStoreBuilder::table`] says otherwise; `"billing"."idempotency"` for
//! `billing.idempotency`) and `{index}` the index's, in the table's schema (the table name
//! followed by `_expires_at_idx`, shortened with a digest of the name where PostgreSQL's
//! 63-byte limit would cut it):
//!
//! ```sql
#![doc = include_str!("schema.sql")]
//! ```
//!
//! Scope and key are `bytea` rather than `text` because keys may hold any string, including
//! NUL, which PostgreSQL `text` rejects (`convert_from(key, 'UTF8')` shows them in `psql`).
//! Both sit in the primary key, whose entries PostgreSQL caps at about 2.7 KB, so a claim whose
//! scope and key together exceed 2,048 bytes fails with [`Error::InvalidInput`]. The payload is
//! opaque to the store; calls write it in the [`payload`](crate::payload) format. A released
//! row is a tombstone that keeps the epoch counting until it expires; expired rows are deleted
//! by [`purge_expired`](IdempotencyStore::purge_expired), 1,000 per statement.
//!
//! [`PostgresStore::migrate`] refuses a table that exists with another shape (a column
//! missing, of another type or nullability, an extra `NOT NULL` column without a default, no
//! unique key on `(scope, key)`) with [`Error::InvalidInput`] naming each difference. Extra
//! columns the store never has to write (nullable, or with a default) are fine. To create the
//! table with your own migrations, use the schema above.
//!
//! # Configuration
//!
//! [`PostgresStoreBuilder`] sets the table ([`table`](PostgresStoreBuilder::table), default
//! `idempotency_records`, optionally `schema.table`), the bound on every operation
//! ([`timeout`](PostgresStoreBuilder::timeout), default 5 s) and on a claim's wait for a row
//! lock ([`lock_timeout`](PostgresStoreBuilder::lock_timeout), default 100 ms), and for a pool
//! it opens itself ([`connect`](PostgresStoreBuilder::connect)) the pool's size
//! ([`max_connections`](PostgresStoreBuilder::max_connections), default 16) and its wait for
//! a connection ([`acquire_timeout`](PostgresStoreBuilder::acquire_timeout), default 5 s).
//! [`build`](PostgresStoreBuilder::build) takes a pool of yours as it is.
//!
//! ## Timeouts
//!
//! Every operation is bounded by [`PostgresStoreBuilder::timeout`] (default 5 s), counted from
//! its start, waiting for a pool connection included: a claim (with its retries), a
//! completion (and the statement of [`PostgresStore::complete_in`]), a release, an extension,
//! each batch of [`purge_expired`](IdempotencyStore::purge_expired),
//! [`migrate`](PostgresStore::migrate), and the `BEGIN`, `COMMIT` and `ROLLBACK` of
//! transactional mode. A server that stops answering (a network partition, a stopped process)
//! makes the operation fail with [`Error::Store`] whose source is an
//! [`io::ErrorKind::TimedOut`](std::io::ErrorKind::TimedOut) error, and the call fails closed.
//! The connection is then closed rather than returned to the pool, whose next connection is a
//! fresh one. A claim or completion that timed out may still have been applied by the server:
//! a completion is harmless to repeat; a claim that was granted is held until its lease
//! expires. The default is far above a healthy round trip, even on a loaded server, and short
//! enough that a call fails well within the default 30 s lease, while a heartbeat (every
//! third of the lease) that timed out still leaves the next one time to land.
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
//! ## Connections
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
//!
//! # Transactional mode
//!
//! When the body's effects are writes to the same database, the result can be recorded in the
//! same transaction as those writes: they commit together or not at all. On an annotated
//! function, `transaction = "tx"` gives the body that transaction as `tx`, with the
//! attribute's key, fingerprint and scope:
//!
//! ```no_run
//! use idempotent_core::stores::postgres::sqlx;
//! use idempotent_core::{BoxError, PostgresStore, idempotent};
//!
//! // A failed statement stays a `sqlx::Error` inside your error type (here a boxed error).
//! #[idempotent(key = "order_id", store = store, transaction = "tx")]
//! async fn ship(store: &PostgresStore, order_id: i64) -> Result<u64, BoxError> {
//!     let inserted = sqlx::query("INSERT INTO shipments (order_id) VALUES ($1)")
//!         .bind(order_id)
//!         .execute(&mut *tx)
//!         .await?;
//!     Ok(inserted.rows_affected())
//! }
//! # fn main() {}
//! ```
//!
//! Without the attribute, [`PostgresStore::transactional`] makes the same call (or
//! [`PostgresStore::complete_in`] a hand-rolled flow). See [`TransactionalCall`] for exactly
//! what that guarantees.

mod builder;
mod connection;
mod migrate;
mod records;
mod rows;
mod statements;
mod table;
mod transactional;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::types::PgInterval;
use sqlx::postgres::{PgConnection, PgPool};

pub use builder::PostgresStoreBuilder;
use connection::{is_lock_timeout, is_transient, store_error};
use rows::{Step, decide};
use statements::{Statements, interval, sql};
use table::PgTable;
pub use transactional::TransactionalCall;

use crate::error::Error;
use crate::store::encoding::{lease_column_epoch, owner_bytes};
use crate::store::{Claim, ClaimRequest, Forget, IdempotencyStore, Lease, RecordState};

/// The sqlx crate this store is built with, so that the [`PgPool`] and
/// [`Transaction`](sqlx::Transaction) types a caller passes in are the ones it expects.
pub use sqlx;

const BACKEND: &str = "postgres";
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

    /// The store on `pool`, for `table`, with the builder's timeouts.
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

    /// The compare-and-set completion on `connection`: a pool connection, or the caller's
    /// transaction ([`complete_in`](Self::complete_in)).
    async fn complete_on(
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

    /// Runs a compare-and-set update on the lease's row; no row updated is `LeaseLost`.
    async fn compare_and_set(
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
                Err(error) if is_lock_timeout(&error) => {
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
            self.complete_on(connection, lease, payload, ttl).await
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.compare_and_set("release", &self.inner.sql.release, lease, None)
            .await
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.compare_and_set(
            "lease extension",
            &self.inner.sql.extend,
            lease,
            Some(interval(lease_for)),
        )
        .await
    }

    crate::store::spawned_background_work!();

    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.inspect_record(scope, key).await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.forget_record(scope, key, mode).await
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
