//! Shared helpers for tests that need a live service (PostgreSQL, Redis).
//!
//! A test reads the service URL from the environment (`IDEMPOTENT_POSTGRES_URL`,
//! `IDEMPOTENT_REDIS_URL`, with local defaults). When the service cannot be reached, the test
//! prints one line and skips, unless `IDEMPOTENT_REQUIRE_SERVICES=1` (set by `.ci/run`), in
//! which case a missing service fails the test.

#![allow(dead_code, unreachable_pub)]

#[cfg(any(feature = "rabbitmq", feature = "nats"))]
pub mod brokers;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_data;
pub mod redis_server;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod tcp_proxy;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::store::{Claim, ClaimRequest, Lease};
use idempotent_core::{Error, IdempotencyStore};

/// A store that keeps a clean-up guard (dropping test tables, deleting keys) alive for as
/// long as the store, so the conformance suite's stores clean up after themselves.
pub struct Guarded<S> {
    store: S,
    _guard: Box<dyn Send + Sync>,
}

impl<S> Guarded<S> {
    /// Wraps `store`; `guard` is dropped with it.
    pub fn new(store: S, guard: impl Send + Sync + 'static) -> Self {
        Guarded {
            store,
            _guard: Box::new(guard),
        }
    }
}

#[async_trait]
impl<S: IdempotencyStore> IdempotencyStore for Guarded<S> {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.store.claim(request).await
    }
    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        self.store.complete(lease, payload, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.store.release(lease).await
    }
    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.store.extend(lease, lease_for).await
    }
    fn release_in_background(&self, lease: Lease) {
        self.store.release_in_background(lease);
    }
    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        self.store.abandon_claim_in_background(request);
    }
    async fn purge_expired(&self) -> Result<u64, Error> {
        self.store.purge_expired().await
    }
    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        self.store.wait_for_change(scope, key, max_wait).await;
    }
}

/// The default PostgreSQL URL: the local server with trust auth.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// `IDEMPOTENT_<NAME>_URL`, or `default`.
pub fn service_url(name: &str, default: &str) -> String {
    std::env::var(format!("IDEMPOTENT_{name}_URL")).unwrap_or_else(|_| default.to_owned())
}

/// The PostgreSQL URL tests use.
pub fn postgres_url() -> String {
    service_url("POSTGRES", DEFAULT_POSTGRES_URL)
}

/// The Redis URL tests use.
pub fn redis_url() -> String {
    service_url("REDIS", DEFAULT_REDIS_URL)
}

/// Whether a missing service is a failure (`IDEMPOTENT_REQUIRE_SERVICES=1`) or a skip.
pub fn services_required() -> bool {
    std::env::var("IDEMPOTENT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Reports a service that could not be reached: panics when services are required, else
/// prints one line (once per test binary and service) and returns `None` so the caller skips.
pub fn unavailable<T>(
    service: &str,
    url: &str,
    error: impl Into<Box<dyn std::error::Error>>,
) -> Option<T> {
    // The error and its causes, such as "store `redis` failed: Connection refused".
    let error = error.into();
    let mut error_text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        error_text.push_str(": ");
        error_text.push_str(&inner.to_string());
        cause = inner.source();
    }
    let error = error_text;
    if services_required() {
        panic!(
            "{service} is required (IDEMPOTENT_REQUIRE_SERVICES=1) but unreachable at {url}: {error}"
        );
    }
    static REPORTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !reported.iter().any(|name| name == service) {
        reported.push(service.to_owned());
        // Written to stderr directly, not with `eprintln!`, which the test harness captures:
        // a skip must be visible in a normal `cargo test` run.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipping {service} tests: not reachable at {url} ({error}); set IDEMPOTENT_REQUIRE_SERVICES=1 to fail instead"
        );
    }
    None
}

/// Prints why a test skips, visibly: `eprintln!` output is captured by the test harness.
pub fn skip(reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipping: {reason}");
}

/// CPU time of every thread of this process so far (`/proc/self/task/*/schedstat`, in ns);
/// zero where that is not available. For benchmarks that report CPU per operation.
pub fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// A name unique to this test run, for table names and key prefixes, so runs can repeat and
/// overlap against one server.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
