//! Running the store's operations on the pool, each bounded by the store's timeout, and what
//! the server's errors mean.

use std::future::Future;
use std::io;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnection;
use tokio::time::Instant;

use super::{BACKEND, PostgresStore};
use crate::error::Error;
use crate::store::time::capped;

impl PostgresStore {
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
    pub(super) async fn bounded<T>(
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
    pub(super) async fn on_connection<T>(
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

pub(super) fn store_error(error: sqlx::Error) -> Error {
    Error::store(BACKEND, error)
}

/// SQLSTATE `lock_not_available`: the statement ran out of its `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The statement ran out of its `lock_timeout`: another transaction holds a lock it needs.
pub(super) fn is_lock_timeout(error: &sqlx::Error) -> bool {
    has_code(error, LOCK_NOT_AVAILABLE)
}

fn has_code(error: &sqlx::Error, sqlstate: &str) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == sqlstate)
}

/// A serialization failure or deadlock: the statement had no effect and may simply run again.
pub(super) fn is_transient(error: &sqlx::Error) -> bool {
    has_code(error, "40001") || has_code(error, "40P01")
}
