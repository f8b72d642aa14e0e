//! What a call tells the outside world about itself: a `tracing` span per call, with its scope,
//! epoch and disposition, and (feature `metrics`) counters and histograms through the `metrics`
//! facade. Neither ever carries a key, a key part, a payload or a principal.
//!
//! Metrics (all prefixed `idempotent_`):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `idempotent_calls_total` | counter | `disposition` |
//! | `idempotent_waits_total` | counter | |
//! | `idempotent_store_operation_seconds` | histogram | `store`, `operation` |
//! | `idempotent_store_errors_total` | counter | `store`, `operation` |

use tracing::Span;

use crate::error::Error;
use crate::store::IdempotencyStore;

/// How a call ended, as spans and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The body ran under a claim.
    Executed,
    /// A stored result was replayed at once.
    Replayed,
    /// The call waited for an in-flight duplicate, then replayed its result.
    Waited,
    /// The store failed and the body ran without a claim (fail-open).
    Unprotected,
    /// Another call held the key: `Error::InFlight`.
    Rejected,
    /// `Error::PayloadMismatch`.
    Mismatch,
    /// `Error::Store`.
    StoreError,
    /// Any other error (a lost lease, an unreadable record, refused options or input).
    Failed,
}

impl Seen {
    fn label(self) -> &'static str {
        match self {
            Seen::Executed => "executed",
            Seen::Replayed => "replayed",
            Seen::Waited => "waited",
            Seen::Unprotected => "unprotected",
            Seen::Rejected => "rejected",
            Seen::Mismatch => "mismatch",
            Seen::StoreError => "store_error",
            Seen::Failed => "failed",
        }
    }

    /// How a call that ended with `error` is counted.
    pub(crate) fn of(error: &Error) -> Seen {
        match error {
            Error::InFlight { .. } => Seen::Rejected,
            Error::PayloadMismatch { .. } => Seen::Mismatch,
            Error::Store { .. } => Seen::StoreError,
            _ => Seen::Failed,
        }
    }
}

/// The span of one call: `idempotent.call` at debug level, with the scope; the epoch and the
/// disposition are recorded as they become known.
pub(crate) fn call_span(scope: &str) -> Span {
    tracing::debug_span!(
        target: "idempotent",
        "idempotent.call",
        scope,
        epoch = tracing::field::Empty,
        disposition = tracing::field::Empty,
    )
}

/// Records how the call ended, on its span and in the metrics.
pub(crate) fn finish(span: &Span, seen: Seen) {
    span.record("disposition", seen.label());
    tracing::debug!(target: "idempotent", parent: span, disposition = seen.label(), "call finished");
    #[cfg(feature = "metrics")]
    metrics::counter!("idempotent_calls_total", "disposition" => seen.label()).increment(1);
}

/// A call that waits for an in-flight duplicate.
pub(crate) fn waiting(retry_after: std::time::Duration) {
    tracing::debug!(target: "idempotent", ?retry_after, "waiting for an in-flight duplicate");
    #[cfg(feature = "metrics")]
    metrics::counter!("idempotent_waits_total").increment(1);
}

/// Runs one store operation, timing it for the metrics (feature `metrics`).
pub(crate) async fn store_op<T>(
    store: &dyn IdempotencyStore,
    operation: &'static str,
    run: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let result = run.await;
    #[cfg(feature = "metrics")]
    {
        let name = store.backend_name();
        metrics::histogram!(
            "idempotent_store_operation_seconds",
            "store" => name,
            "operation" => operation,
        )
        .record(started.elapsed().as_secs_f64());
        if let Err(Error::Store { .. }) = &result {
            metrics::counter!(
                "idempotent_store_errors_total",
                "store" => name,
                "operation" => operation,
            )
            .increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (store, operation);
    result
}
