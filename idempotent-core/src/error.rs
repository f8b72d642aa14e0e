//! The public error type.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A boxed error from a store backend or a codec, kept as the `source()` of an [`Error`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can stop an idempotent call from running its body or returning its result.
///
/// Functions annotated with `#[idempotent]` return `Result<T, E>` with `E: From<Error>`, so these
/// variants reach the caller through the function's own error type.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The key was used before with a different request fingerprint: a retry must send the same
    /// payload as the first attempt. HTTP layers answer 422.
    PayloadMismatch {
        /// The scope the key lives in.
        scope: String,
    },
    /// Another call holds a live claim on the key. Returned in reject mode, or in wait mode when
    /// the wait budget runs out. HTTP layers answer 409 with `Retry-After`.
    InFlight {
        /// How long until the current claim expires unless its owner extends it.
        retry_after: Duration,
    },
    /// This call's claim was taken over after its lease expired; its result was not recorded and
    /// nothing it attempted to write changed the store.
    LeaseLost,
    /// The store is at capacity and holds no expired record to make room: the claim was
    /// rejected rather than evicting a live record.
    CapacityExceeded {
        /// The configured record limit.
        capacity: usize,
    },
    /// A stored record exists but cannot be decoded. It is reported rather than treated as
    /// absent, because treating it as absent would run the body a second time.
    Decode {
        /// The scope of the unreadable record.
        scope: String,
        /// What failed to decode.
        source: BoxError,
    },
    /// The body's result could not be serialized for storage. The claim was released.
    Encode {
        /// The serializer's error.
        source: BoxError,
    },
    /// The call's lease is shorter than [`MIN_LEASE`](crate::MIN_LEASE): the heartbeat could
    /// not keep the claim alive on a loaded machine, and a duplicate would take over while the
    /// body still runs. Nothing was claimed.
    LeaseTooShort {
        /// The lease the call asked for.
        lease: Duration,
        /// The shortest lease a call accepts.
        minimum: Duration,
    },
    /// The caller passed input the store cannot hold (for example an over-long key).
    InvalidInput {
        /// What is wrong with it.
        reason: String,
    },
    /// The store backend failed (connection lost, timeout, server error). Calls fail closed:
    /// the body does not run unprotected unless fail-open was chosen.
    Store {
        /// Which backend failed, such as `"memory"` or `"redis"`.
        backend: &'static str,
        /// The backend's error.
        source: BoxError,
    },
}

impl Error {
    /// Wraps a backend failure.
    pub fn store(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Store {
            backend,
            source: source.into(),
        }
    }

    /// A stored record in `scope` that cannot be read, and why.
    pub fn decode(scope: &str, reason: impl Into<BoxError>) -> Self {
        Error::Decode {
            scope: scope.to_owned(),
            source: reason.into(),
        }
    }

    /// Whether retrying the same call later may succeed (in flight, lease lost, store outage).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::InFlight { .. } | Error::LeaseLost | Error::Store { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PayloadMismatch { scope } => write!(
                f,
                "idempotency key in scope `{scope}` was first used with a different payload"
            ),
            Error::InFlight { retry_after } => write!(
                f,
                "a call with this idempotency key is still in flight; retry after {retry_after:?}"
            ),
            Error::LeaseLost => f.write_str(
                "the claim on this idempotency key was taken over after its lease expired",
            ),
            Error::CapacityExceeded { capacity } => write!(
                f,
                "idempotency store is full ({capacity} records) and holds no expired record"
            ),
            Error::Decode { scope, .. } => {
                write!(
                    f,
                    "stored idempotency record in scope `{scope}` cannot be decoded"
                )
            }
            Error::Encode { .. } => {
                f.write_str("result cannot be encoded for the idempotency store")
            }
            Error::LeaseTooShort { lease, minimum } => write!(
                f,
                "a lease of {lease:?} is too short for the heartbeat to hold; use at least {minimum:?}"
            ),
            Error::InvalidInput { reason } => write!(f, "invalid idempotency input: {reason}"),
            Error::Store { backend, .. } => write!(f, "idempotency store `{backend}` failed"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Decode { source, .. }
            | Error::Encode { source }
            | Error::Store { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
