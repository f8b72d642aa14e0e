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

/// Where a store's connection comes from.
pub(crate) enum Source<'a> {
    /// A URL: a new client and manager with the store's [`Settings`].
    Url(&'a str),
    /// The caller's client (for example one built with TLS certificates): a new manager with
    /// the store's [`Settings`].
    Client(Box<redis::Client>),
    /// The caller's manager, with its own reconnection settings; only the store's command
    /// timeout applies.
    Manager(ConnectionManager),
}

impl Connection {
    /// Opens the connection; a new one must succeed within the connect timeout.
    pub(crate) async fn open(source: Source<'_>, settings: Settings) -> Result<Self, Error> {
        let client = match source {
            Source::Url(url) => client_for(url)?,
            Source::Client(client) => *client,
            Source::Manager(manager) => {
                return Ok(Connection {
                    manager,
                    timeout: settings.timeout,
                });
            }
        };
        #[cfg(feature = "redis-tls")]
        ensure_crypto_provider();
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

/// Checks a key-name prefix: not empty, and no `{` or `}` (a key's hash tag must be the first
/// braces in its name). `what` names the setting in the error.
pub(crate) fn check_prefix(what: &str, prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err(Error::InvalidInput {
            reason: format!("{what} {prefix:?} must be non-empty and contain no `{{` or `}}`"),
        });
    }
    Ok(())
}

/// rustls needs a process-wide crypto provider to make a TLS connection: install ring's
/// unless the application installed one (whichever thread installs first wins; any is fine).
#[cfg(feature = "redis-tls")]
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A client for `url`. A URL the `redis` crate cannot use (malformed, or asking for TLS in a
/// build without it) is the caller's mistake: [`Error::InvalidInput`], before any network.
fn client_for(url: &str) -> Result<redis::Client, Error> {
    if let Some(reason) = tls_unavailable(url, cfg!(feature = "redis-tls")) {
        return Err(Error::InvalidInput { reason });
    }
    redis::Client::open(url).map_err(|error| Error::InvalidInput {
        reason: format!("invalid Redis URL: {error}"),
    })
}

/// Why `url` cannot be used when the build has (`tls_built`) or lacks TLS support: a
/// `rediss://` (or `valkeys://`) URL needs the `redis-tls` feature.
fn tls_unavailable(url: &str, tls_built: bool) -> Option<String> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let wants_tls = scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys");
    (wants_tls && !tls_built).then(|| {
        format!(
            "a `{scheme}://` URL connects with TLS, which needs the `redis-tls` feature of \
             idempotent-core (this build has no TLS support)"
        )
    })
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

#[cfg(test)]
mod tests {
    use super::{check_prefix, tls_unavailable};
    use crate::error::Error;

    #[test]
    fn prefixes_must_be_non_empty_and_free_of_braces() {
        for bad in ["", "{idem", "idem}", "a{b}c"] {
            match check_prefix("cache prefix", bad) {
                Err(Error::InvalidInput { reason }) => {
                    assert!(reason.starts_with("cache prefix"), "{reason}")
                }
                other => panic!("{bad:?}: expected InvalidInput, got {other:?}"),
            }
        }
        for good in ["idem", "idem:tenant-1", "a b"] {
            assert!(check_prefix("cache prefix", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_tls_url_without_tls_support_names_the_feature() {
        for url in [
            "rediss://127.0.0.1:6380/",
            "REDISS://host",
            "valkeys://host:1/0",
        ] {
            let reason = tls_unavailable(url, false).expect("refused without TLS");
            assert!(reason.contains("`redis-tls`"), "{reason}");
            assert_eq!(tls_unavailable(url, true), None, "{url} with TLS built in");
        }
    }

    #[test]
    fn plain_urls_never_need_tls() {
        for url in [
            "redis://127.0.0.1:6379/",
            "redis+unix:///tmp/redis.sock",
            "not a url",
        ] {
            assert_eq!(tls_unavailable(url, false), None, "{url}");
        }
    }
}
