//! Which responses are stored and replayed: a small trait with a closure impl.

use http::response::Parts;

/// Decides whether a response is stored and replayed to retries, or delivered once while the
/// key is released so that a retry runs the request again.
///
/// Asked only for final responses below 500: 1xx and 5xx responses are never stored, since a
/// server error is exactly what a client retries. The default, [`SuccessOnly`], stores 2xx.
/// Closures work, for example to store final client errors too, as Stripe does:
///
/// ```
/// use http::StatusCode;
/// use http::response::Parts;
/// use idempotent_core::http::StorePolicy;
///
/// let store_2xx_and_4xx = |parts: &Parts| {
///     parts.status.is_success()
///         || (parts.status.is_client_error() && parts.status != StatusCode::TOO_MANY_REQUESTS)
/// };
/// let policy: &dyn StorePolicy = &store_2xx_and_4xx;
/// # let _ = policy;
/// ```
pub trait StorePolicy: Send + Sync + 'static {
    /// Whether to store the response with these status and headers.
    fn should_store(&self, response: &Parts) -> bool;
}

impl<F> StorePolicy for F
where
    F: Fn(&Parts) -> bool + Send + Sync + 'static,
{
    fn should_store(&self, response: &Parts) -> bool {
        self(response)
    }
}

/// The default policy: store 2xx responses only.
#[derive(Debug, Clone, Copy, Default)]
pub struct SuccessOnly;

impl StorePolicy for SuccessOnly {
    fn should_store(&self, response: &Parts) -> bool {
        response.status.is_success()
    }
}
