//! [`PostgresStoreBuilder`]: the table, the timeouts and the pool, and the two ways to a
//! store (a new pool from a URL, or a pool of the caller's).

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::PostgresStore;
use super::connection::store_error;
use super::table::{DEFAULT_TABLE, PgTable};
use crate::error::Error;
#[cfg(doc)]
use crate::store::IdempotencyStore;

const DEFAULT_MAX_CONNECTIONS: u32 = 16;
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one store operation may take, waiting for a connection included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a claim waits for a row lock another transaction holds.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_millis(100);

/// Builder for [`PostgresStore`]: the table name, the timeouts and, for
/// [`connect`](Self::connect), the pool settings.
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    table: String,
    pub(super) timeout: Duration,
    pub(super) lock_timeout: Duration,
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
