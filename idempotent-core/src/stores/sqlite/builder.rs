//! Opening a [`SqliteStore`]: the table, the pool, durability.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::pool::PoolConnectionMetadata;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use super::statements::{Statements, query};
use super::{BACKEND, SqliteStore, store_error};
use crate::error::Error;
use crate::store::OwnerId;
use crate::stores::table_name::TableName;

const DEFAULT_TABLE: &str = "idempotency_records";
const DEFAULT_POOL_SIZE: u32 = 4;
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// A lowercase identifier matching `^[a-z_][a-z0-9_]{0,62}$`, not starting with `sqlite_`
    /// (reserved by SQLite), the same rule as `PostgresStore`'s
    /// tables. Anything else fails at [`open`](Self::open) with [`Error::InvalidInput`]. The
    /// table's index is named `idx_<table>_expires_at`.
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
        let table = TableName::parse(&self.table, false)?.table;
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

    /// Builds the store on a pool you already have, creating the table if it is missing.
    ///
    /// The pool serves the store's reads and writes alike and keeps its own connection
    /// settings, so [`pool_size`](Self::pool_size), [`busy_timeout`](Self::busy_timeout) and
    /// [`fsync_on_commit`](Self::fsync_on_commit) do not apply: set them on the pool's
    /// `SqliteConnectOptions` (WAL journal mode lets reads proceed beside a write; the busy
    /// timeout decides how long a write waits for another writer before [`Error::Store`]).
    /// Each claim decides under SQLite's write lock (one insert that the primary key
    /// decides, or a `BEGIN IMMEDIATE` transaction), so any number of connections, and other
    /// processes on the same file, decide each key once.
    ///
    /// Each connection of an in-memory pool (`sqlite::memory:`) has a database of its own:
    /// use [`open_in_memory`](Self::open_in_memory) for that instead.
    ///
    /// ```no_run
    /// use idempotent_core::SqliteStore;
    /// use idempotent_core::stores::sqlite::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let options = SqliteConnectOptions::new()
    ///     .filename("app.db")
    ///     .create_if_missing(true)
    ///     .journal_mode(SqliteJournalMode::Wal);
    /// let pool = SqlitePool::connect_with(options).await?;
    /// // The application's own tables and the store's records share the pool.
    /// let store = SqliteStore::builder().build(pool.clone()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build(self, pool: SqlitePool) -> Result<SqliteStore, Error> {
        let table = TableName::parse(&self.table, false)?.table;
        migrate(&pool, &table).await?;
        let location = pool.connect_options().get_filename().display().to_string();
        let size = pool.options().get_max_connections();
        Ok(SqliteStore::assemble(
            pool.clone(),
            pool,
            table,
            location,
            size,
            None,
        ))
    }

    /// Opens a private in-memory database: nothing survives the store. For tests and
    /// examples; prefer [`MemoryStore`](crate::MemoryStore) otherwise, which is faster.
    pub async fn open_in_memory(self) -> Result<SqliteStore, Error> {
        let table = TableName::parse(&self.table, false)?.table;
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
    let sql = Statements::new(table);
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(store_error)?;
    for statement in sql.schema.iter().chain([&sql.columns]) {
        query(statement).execute(&mut *tx).await.map_err(|source| {
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
