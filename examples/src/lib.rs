//! What the runnable examples in `examples/` share: where the servers are, a clear line when one
//! is not there, and the tour each store example runs; [`orders`] is the service of the `server`
//! example.

pub mod orders;

use std::sync::atomic::{AtomicU32, Ordering};

use idempotent_core::key::{Fingerprint, IdempotencyKey};
use std::time::Duration;

use idempotent_core::{Call, CallOptions, Error, IdempotencyStore};

/// The PostgreSQL the examples use: `IDEMPOTENT_POSTGRES_URL`, else the local server.
pub fn postgres_url() -> String {
    std::env::var("IDEMPOTENT_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The Redis the examples use: `IDEMPOTENT_REDIS_URL`, else the local server.
pub fn redis_url() -> String {
    std::env::var("IDEMPOTENT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Says, in one line, that the example cannot run here and why; the example then exits
/// cleanly.
pub fn unreachable(what: &str, url: &str, error: &Error) {
    let cause =
        std::error::Error::source(error).map_or_else(String::new, |source| format!(": {source}"));
    println!(
        "skipped: {what} is not reachable at {url} ({error}{cause}); start it, or set the URL"
    );
}

/// A name no other run uses, for tables and key prefixes the example removes afterwards.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// One refund run through `store` three times: it runs once, the retry replays it, and a retry
/// with another amount is refused. Prints each step. The record's ttl is a minute, so shared
/// servers are not left with it.
pub async fn tour(store: &dyn IdempotencyStore) -> Result<(), Error> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let key = IdempotencyKey::builder("examples.refund")
        .part("order-1042")
        .finish();
    let refund = |amount: u64| {
        let call = Call::new(store, "examples.refund", key.as_str())
            .options(CallOptions::new().ttl(Duration::from_secs(60)))
            .fingerprint(Fingerprint::builder().field("amount", &amount).finish());
        async move {
            call.run(async {
                let run = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<_, Error>(format!("refund #{run} of {amount} cents"))
            })
            .await
        }
    };

    let first = refund(2_500).await?;
    println!("  first call:  ran       -> {}", first.value);
    let retry = refund(2_500).await?;
    println!(
        "  retry:       {} -> {}",
        if retry.is_replayed() {
            "replayed "
        } else {
            "ran again"
        },
        retry.value
    );
    match refund(9_999).await {
        Err(Error::PayloadMismatch { .. }) => {
            println!("  other amount: refused, payload mismatch (HTTP would answer 422)")
        }
        other => println!("  other amount: unexpected {other:?}"),
    }
    println!(
        "  the refund body ran {} time(s)",
        RUNS.load(Ordering::SeqCst)
    );
    Ok(())
}
