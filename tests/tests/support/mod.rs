//! Shared helpers for tests that need a live service (PostgreSQL, Redis).
//!
//! A test reads the service URL from the environment (`IDEMPOTENT_POSTGRES_URL`,
//! `IDEMPOTENT_REDIS_URL`, with local defaults). When the service cannot be reached, the test
//! prints one line and skips, unless `IDEMPOTENT_REQUIRE_SERVICES=1` (set by `.ci/run`), in
//! which case a missing service fails the test.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Display;

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
/// prints one line and returns `None` so the caller skips.
pub fn unavailable<T>(service: &str, url: &str, error: impl Display) -> Option<T> {
    if services_required() {
        panic!(
            "{service} is required (IDEMPOTENT_REQUIRE_SERVICES=1) but unreachable at {url}: {error}"
        );
    }
    eprintln!(
        "skipping: {service} not reachable at {url} ({error}); set IDEMPOTENT_REQUIRE_SERVICES=1 to fail instead"
    );
    None
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
