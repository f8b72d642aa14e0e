//! Connecting a [`RedisStore`]: key prefix, timeout, retention.

use std::sync::Arc;
use std::time::Duration;

use super::scripts::SCRIPTS;
use super::{Inner, RedisStore};
use crate::error::Error;
#[cfg(doc)]
use crate::store::IdempotencyStore;
use crate::store::time::millis_ceil;
use crate::stores::redis_connection::{Connection, Settings, Source, check_prefix};

const DEFAULT_KEY_PREFIX: &str = "idem";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_RETENTION: Duration = Duration::from_secs(60);
/// Reconnection attempts per failure before a waiting call gets the error; the next call
/// starts a new round.
const RECONNECT_RETRIES: usize = 3;

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

    /// How long a record stays in Redis after its ttl ends (default 60 s), during which
    /// [`purge_expired`](IdempotencyStore::purge_expired) can delete it early; Redis deletes
    /// it at the end of the window by itself. A claim after the ttl treats the record as
    /// absent either way, and its epoch comes from the server clock, so the retention never
    /// decides whether a body runs.
    pub fn expired_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Connects to the server at `url` (`redis://[user:password@]host:port/db`) and loads
    /// the scripts.
    ///
    /// `rediss://` connects with TLS, verifying the server against the system's root
    /// certificates; it needs the `redis-tls` feature, and without it fails here with
    /// [`Error::InvalidInput`]. For a private certificate authority or client certificates,
    /// build a [`redis::Client`](::redis::Client) with `Client::build_with_tls` and pass it to
    /// [`connect_with_client`](Self::connect_with_client). A malformed URL is
    /// [`Error::InvalidInput`]; a server that cannot be reached (or a failed TLS handshake) is
    /// [`Error::Store`].
    pub async fn connect(self, url: &str) -> Result<RedisStore, Error> {
        self.finish(Source::Url(url)).await
    }

    /// Like [`connect`](Self::connect), on a client you built (with TLS certificates, a
    /// username, or any other connection setting of the `redis` crate, re-exported as
    /// [`stores::redis::redis`](crate::stores::redis::redis)). The store opens its own
    /// reconnecting connection from it, bounded by [`timeout`](Self::timeout).
    pub async fn connect_with_client(self, client: ::redis::Client) -> Result<RedisStore, Error> {
        self.finish(Source::Client(Box::new(client))).await
    }

    /// Builds the store on a connection manager you already have, sharing its connection
    /// with the rest of your application, and loads the scripts.
    ///
    /// The manager keeps its own reconnection settings (retries, backoff, its response
    /// timeout); the store's [`timeout`](Self::timeout) still bounds every store operation.
    pub async fn connect_with_manager(
        self,
        manager: ::redis::aio::ConnectionManager,
    ) -> Result<RedisStore, Error> {
        self.finish(Source::Manager(manager)).await
    }

    async fn finish(self, source: Source<'_>) -> Result<RedisStore, Error> {
        check_prefix("redis key prefix", &self.prefix)?;
        let connection = Connection::open(
            source,
            Settings {
                timeout: self.timeout,
                retries: RECONNECT_RETRIES,
                min_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(500),
                // Every reconnection attempt and the first one, each bounded by `timeout`.
                connect_timeout: self
                    .timeout
                    .saturating_mul(u32::try_from(RECONNECT_RETRIES + 1).unwrap_or(u32::MAX)),
            },
        )
        .await?;
        let mut load = redis::pipe();
        for code in &SCRIPTS.all {
            load.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
        }
        connection.pipeline::<()>(&load).await?;
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
