//! Building a [`TieredStore`]: the cache prefix, timeout and bypass.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::authority::Authority;
use super::{Inner, TieredStore};
use crate::error::Error;
use crate::stores::postgres::PostgresStore;
use crate::stores::redis_connection::{Connection, Settings, Source, check_prefix};

/// Builder for [`TieredStore`].
#[derive(Debug, Clone)]
pub struct TieredStoreBuilder {
    prefix: String,
    timeout: Duration,
    bypass: Duration,
}

impl Default for TieredStoreBuilder {
    fn default() -> Self {
        TieredStoreBuilder {
            prefix: "idem-cache".to_owned(),
            timeout: Duration::from_millis(100),
            bypass: Duration::from_secs(1),
        }
    }
}

impl TieredStoreBuilder {
    /// The prefix of every cache key (default `idem-cache`). Must not contain `{` or `}`.
    ///
    /// Stores over different PostgreSQL tables may share a prefix: cache keys also name the
    /// table (see the [module docs](super)).
    pub fn cache_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a cache read or write may take before it is abandoned (default 100 ms). Keep
    /// it short: a slow cache should cost little more than no cache.
    pub fn cache_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the cache is bypassed after it fails (default 1 s).
    pub fn cache_bypass(mut self, bypass: Duration) -> Self {
        self.bypass = bypass;
        self
    }

    /// Builds the store on `durable`, caching in the Redis server at `redis_url`
    /// (`rediss://` for TLS with the `redis-tls` feature, as for
    /// [`RedisStoreBuilder::connect`](crate::RedisStoreBuilder::connect)).
    ///
    /// Both servers must answer once here: PostgreSQL tells which server, database and table
    /// the cache keys name (see the [module docs](super)), and connecting to Redis fails loudly
    /// for a wrong URL. Afterwards a Redis outage only makes the store slower.
    pub async fn connect(
        self,
        durable: PostgresStore,
        redis_url: &str,
    ) -> Result<TieredStore, Error> {
        self.finish(durable, Source::Url(redis_url)).await
    }

    /// Like [`connect`](Self::connect), caching through a Redis client you built (TLS
    /// certificates, credentials); the store opens its own connection from it, bounded by
    /// [`cache_timeout`](Self::cache_timeout).
    pub async fn connect_with_client(
        self,
        durable: PostgresStore,
        client: ::redis::Client,
    ) -> Result<TieredStore, Error> {
        self.finish(durable, Source::Client(Box::new(client))).await
    }

    /// Like [`connect`](Self::connect), caching through a connection manager you already
    /// have. It keeps its own reconnection settings; every cache operation is still bounded
    /// by [`cache_timeout`](Self::cache_timeout), so a slow cache only costs that.
    pub async fn connect_with_manager(
        self,
        durable: PostgresStore,
        manager: ::redis::aio::ConnectionManager,
    ) -> Result<TieredStore, Error> {
        self.finish(durable, Source::Manager(manager)).await
    }

    async fn finish(
        self,
        durable: PostgresStore,
        source: Source<'_>,
    ) -> Result<TieredStore, Error> {
        check_prefix("cache prefix", &self.prefix)?;
        let authority = Authority::read(&durable).await?;
        tracing::debug!(
            server = authority.server,
            database = authority.database,
            table = authority.table,
            "tiered cache keys name this PostgreSQL table"
        );
        let cache = Connection::open(
            source,
            Settings {
                timeout: self.timeout,
                retries: 1,
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
                connect_timeout: self.timeout.saturating_mul(4).max(Duration::from_secs(2)),
            },
        )
        .await?;
        Ok(TieredStore {
            inner: Arc::new(Inner {
                durable,
                key_hasher: authority.key_hasher(),
                authority,
                cache,
                prefix: self.prefix,
                bypass: self.bypass,
                bypass_until_ms: AtomicU64::new(0),
                started: Instant::now(),
            }),
        })
    }
}
