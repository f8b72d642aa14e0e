//! One multiplexed connection to a Redis server, with every command bounded in time: shared by
//! the Redis store and the tiered store's cache.

use std::io;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, ScriptInvocation, Value};

use crate::error::Error;

const BACKEND: &str = "redis";

/// How a connection retries after a failure, and how long a command may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The longest one command may take, including waiting for a reconnection.
    pub(crate) timeout: Duration,
    /// Reconnection attempts per failure before a waiting command gets the error.
    pub(crate) retries: usize,
    /// The pause before the first reconnection attempt, and the longest.
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
    /// The longest the first connection may take.
    pub(crate) connect_timeout: Duration,
}

/// A `ConnectionManager` (reconnected automatically after a failure, shared by clones) whose
/// every command fails with `Error::Store` after the timeout instead of hanging.
#[derive(Clone)]
pub(crate) struct Connection {
    manager: ConnectionManager,
    timeout: Duration,
}

impl Connection {
    /// Connects to `url`; the first connection must succeed within the connect timeout.
    pub(crate) async fn open(url: &str, settings: Settings) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(settings.retries)
            .set_min_delay(settings.min_delay)
            .set_max_delay(settings.max_delay);
        let bound = settings.connect_timeout;
        let manager =
            tokio::time::timeout(bound, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| timed_out(bound))?
                .map_err(store_error)?;
        Ok(Connection {
            manager,
            timeout: settings.timeout,
        })
    }

    /// Runs a command within the timeout.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, Error> {
        let mut manager = self.manager.clone();
        tokio::time::timeout(self.timeout, command.query_async::<T>(&mut manager))
            .await
            .map_err(|_| timed_out(self.timeout))?
            .map_err(store_error)
    }

    /// Runs a pipeline within the timeout.
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, Error> {
        let mut manager = self.manager.clone();
        tokio::time::timeout(self.timeout, pipeline.query_async::<T>(&mut manager))
            .await
            .map_err(|_| timed_out(self.timeout))?
            .map_err(store_error)
    }

    /// Runs a script (`EVALSHA`, loading it again if the server answers `NOSCRIPT`) within the
    /// timeout.
    pub(crate) async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, Error> {
        let mut manager = self.manager.clone();
        tokio::time::timeout(self.timeout, invocation.invoke_async::<Value>(&mut manager))
            .await
            .map_err(|_| timed_out(self.timeout))?
            .map_err(store_error)
    }
}

pub(crate) fn store_error(error: impl Into<crate::error::BoxError>) -> Error {
    Error::store(BACKEND, error)
}

pub(crate) fn timed_out(after: Duration) -> Error {
    store_error(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("redis operation timed out after {after:?}"),
    ))
}
