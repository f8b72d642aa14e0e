//! Where the test servers are, and what a test does when one cannot be reached.

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
    let error = error_chain(&*error.into());
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

/// An error and its sources, as one line: "store `redis` failed: Connection refused".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Prints why a test skips, visibly: `eprintln!` output is captured by the test harness.
pub fn skip(reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipping: {reason}");
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
