//! Redis behind a store's back (feature `redis`): a connection of the tests' own for raw
//! commands, clean-up of a key prefix, server statistics, and a store whose connection goes
//! through a proxy the test controls.
//!
//! The product crate has no hook for raw commands: tests and benches reach the server with the
//! `redis` crate directly, on connections of their own, and never on a store's.

mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Value};
use idempotent_core::{Error, RedisStore, RedisStoreBuilder};

use crate::tcp_proxy::SilentProxy;
pub use stats::Commands;

/// A server reply as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawReply {
    /// No value.
    Nil,
    /// An integer (also a RESP3 boolean, as 0 or 1).
    Int(i64),
    /// A bulk string.
    Data(Vec<u8>),
    /// A status or other simple reply, as text.
    Status(String),
    /// An array (maps and sets are flattened into one).
    Array(Vec<RawReply>),
}

impl RawReply {
    fn from_value(value: Value) -> RawReply {
        match value {
            Value::Nil => RawReply::Nil,
            Value::Int(n) => RawReply::Int(n),
            Value::BulkString(data) => RawReply::Data(data),
            Value::SimpleString(text) => RawReply::Status(text),
            Value::Okay => RawReply::Status("OK".to_owned()),
            Value::VerbatimString { text, .. } => RawReply::Data(text.into_bytes()),
            Value::Array(items) | Value::Set(items) => {
                RawReply::Array(items.into_iter().map(RawReply::from_value).collect())
            }
            Value::Map(pairs) => RawReply::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [RawReply::from_value(k), RawReply::from_value(v)])
                    .collect(),
            ),
            Value::Boolean(b) => RawReply::Int(i64::from(b)),
            other => RawReply::Status(format!("{other:?}")),
        }
    }

    /// The text of a bulk string or status reply; panics on any other reply.
    pub fn text(&self) -> String {
        match self {
            RawReply::Data(data) => String::from_utf8_lossy(data).into_owned(),
            RawReply::Status(text) => text.clone(),
            other => panic!("expected a text reply, got {other:?}"),
        }
    }
}

/// A connection of its own to a Redis server, for raw commands: the same client library and
/// connection type as the store's (a multiplexed `ConnectionManager`), but never the store's
/// connection. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RawRedis {
    connection: ConnectionManager,
}

impl RawRedis {
    /// Connects to the test server ([`redis_url`](crate::redis_url)); when it cannot be
    /// reached, reports it (see [`unavailable`](crate::unavailable)) and returns `None`.
    pub async fn connect() -> Option<RawRedis> {
        let url = crate::redis_url();
        match RawRedis::connect_to(&url).await {
            Ok(redis) => Some(redis),
            Err(error) => crate::unavailable("Redis", &url, error),
        }
    }

    /// Connects to the server at `url`.
    pub async fn connect_to(url: &str) -> Result<RawRedis, Error> {
        let client = Client::open(url).map_err(redis_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(redis_error)?;
        Ok(RawRedis { connection })
    }

    /// Sends one command (`args[0]` is its name) and returns the reply.
    pub async fn try_command(&self, args: &[&[u8]]) -> Result<RawReply, Error> {
        let Some((name, rest)) = args.split_first() else {
            return Err(Error::InvalidInput {
                reason: "an empty command".to_owned(),
            });
        };
        let name = std::str::from_utf8(name).map_err(|error| Error::InvalidInput {
            reason: format!("command name: {error}"),
        })?;
        let mut command = ::redis::cmd(name);
        for arg in rest {
            command.arg(*arg);
        }
        let mut connection = self.connection.clone();
        command
            .query_async::<Value>(&mut connection)
            .await
            .map(RawReply::from_value)
            .map_err(redis_error)
    }

    /// Like [`try_command`](RawRedis::try_command), for tests: panics if the command fails.
    pub async fn command(&self, args: &[&[u8]]) -> RawReply {
        match self.try_command(args).await {
            Ok(reply) => reply,
            Err(error) => panic!(
                "raw command {:?} failed: {error} ({error:?})",
                args.first().map(|name| String::from_utf8_lossy(name))
            ),
        }
    }

    /// Deletes every key under `prefix` (`{prefix}:*`, by `SCAN` and one `DEL` per batch,
    /// bounded in steps) and returns how many it deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, Error> {
        let pattern = format!("{prefix}:*");
        let mut cursor = b"0".to_vec();
        let mut deleted = 0;
        for _ in 0..100_000 {
            let reply = self
                .try_command(&[
                    b"SCAN",
                    &cursor,
                    b"MATCH",
                    pattern.as_bytes(),
                    b"COUNT",
                    b"1000",
                ])
                .await?;
            let unexpected = || Error::store("redis", format!("unexpected SCAN reply {reply:?}"));
            let RawReply::Array(parts) = &reply else {
                return Err(unexpected());
            };
            let [RawReply::Data(next), RawReply::Array(keys)] = &parts[..] else {
                return Err(unexpected());
            };
            let mut command: Vec<&[u8]> = vec![b"DEL"];
            command.extend(keys.iter().filter_map(|key| match key {
                RawReply::Data(key) => Some(key.as_slice()),
                _ => None,
            }));
            if command.len() > 1 {
                deleted += command.len() - 1;
                self.try_command(&command).await?;
            }
            if next.as_slice() == b"0" {
                break;
            }
            cursor = next.clone();
        }
        Ok(deleted)
    }
}

fn redis_error(error: ::redis::RedisError) -> Error {
    Error::store("redis", error)
}

/// Deletes the keys under a prefix (`{prefix}:*`) from the test server when the test ends,
/// passed or failed: on a thread, a runtime and a connection of its own, so that it works
/// whatever runtime (if any) it is dropped on. Never panics.
pub struct DeleteKeys(
    /// The prefix whose keys go.
    pub String,
);

impl Drop for DeleteKeys {
    fn drop(&mut self) {
        let prefix = std::mem::take(&mut self.0);
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(redis) = RawRedis::connect_to(&crate::redis_url()).await {
                    let _ = redis.delete_prefix(&prefix).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A store from `builder` whose connection reaches the test server through a
/// [`SilentProxy`], so that a test can hold back what the store sends
/// ([`go_silent`](SilentProxy::go_silent)) or find the store's connection on the server
/// ([`upstream_addresses`](SilentProxy::upstream_addresses)). When the server cannot be reached,
/// or its URL is not a plain `redis://host:port` one the proxy can stand in for, reports it (see
/// [`unavailable`](crate::unavailable)) and returns `None`.
pub async fn connect_through_proxy(
    builder: RedisStoreBuilder,
) -> Option<(RedisStore, SilentProxy)> {
    let url = crate::redis_url();
    // Reachable directly first, so that a missing server is reported as such.
    RawRedis::connect().await?;
    let parsed = ::redis::parse_redis_url(&url).filter(|parsed| parsed.scheme() == "redis");
    let Some(host) = parsed.as_ref().and_then(|parsed| parsed.host_str()) else {
        return crate::unavailable("Redis through a proxy", &url, "not a redis://host URL");
    };
    let port = parsed
        .as_ref()
        .and_then(|parsed| parsed.port())
        .unwrap_or(6379);
    let upstream: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .expect("resolve the Redis host")
        .next()
        .expect("an address for the Redis host");
    let proxy = SilentProxy::start(upstream).await.expect("start the proxy");
    let mut proxied = parsed.expect("parsed above");
    proxied.set_host(Some("127.0.0.1")).expect("a host");
    proxied
        .set_port(Some(proxy.address().port()))
        .expect("a port");
    match builder.connect(proxied.as_str()).await {
        Ok(store) => Some((store, proxy)),
        Err(error) => crate::unavailable("Redis through a proxy", &url, error),
    }
}

/// Raw access to a [`RedisStore`]'s records for the conformance checks of damaged records
/// (`store_conformance_tests!(.., with_raw_records, ..)`): commands on a connection of its own.
pub struct RawRecordFields {
    store: RedisStore,
    redis: RawRedis,
}

impl RawRecordFields {
    /// The records of `store`, written through `redis`.
    pub fn new(store: RedisStore, redis: RawRedis) -> Self {
        RawRecordFields { store, redis }
    }
}

#[async_trait::async_trait]
impl idempotent_core::testing::RawRecords for RawRecordFields {
    async fn set_epoch(&self, scope: &str, key: &str, epoch: i64) {
        let record = self.store.record_key(scope, key);
        let exists = self.redis.command(&[b"EXISTS", record.as_bytes()]).await;
        assert_eq!(
            exists,
            RawReply::Int(1),
            "no record for ({scope:?}, {key:?})"
        );
        let epoch = epoch.to_string();
        self.redis
            .command(&[b"HSET", record.as_bytes(), b"epoch", epoch.as_bytes()])
            .await;
    }

    fn max_epoch(&self) -> i64 {
        // Lua numbers are doubles: epochs are exact integers below 2^53.
        (1 << 53) - 1
    }
}
