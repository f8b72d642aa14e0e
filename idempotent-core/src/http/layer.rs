//! [`IdempotencyLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use tower_layer::Layer;

use super::policy::{StorePolicy, SuccessOnly};
use super::scope::{AuthorizationHeader, ExtractPrincipal};
use super::service::IdempotencyService;
use super::stored::{DEFAULT_REPLAYED_HEADERS, is_never_replayed};
use crate::engine::{CallOptions, OnInFlight, OnStoreError};
use crate::error::Error;
use crate::store::IdempotencyStore;

/// The default limit on a request body the layer reads to fingerprint it: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The default limit on a response body the layer stores for replay: 1 MiB.
pub const DEFAULT_MAX_STORED_BODY: usize = 1024 * 1024;

/// What every service of one layer shares.
pub(crate) struct Config {
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) methods: Vec<Method>,
    pub(crate) require_key: bool,
    pub(crate) scope: String,
    pub(crate) principal: Box<dyn ExtractPrincipal>,
    pub(crate) policy: Box<dyn StorePolicy>,
    pub(crate) options: CallOptions,
    pub(crate) max_request_body: usize,
    pub(crate) max_stored_body: usize,
    pub(crate) replayed_headers: Vec<HeaderName>,
}

/// A tower [`Layer`] that makes requests carrying an `Idempotency-Key` header safe to retry:
/// the first request with a key runs, and every retry gets its stored response. See the
/// [module docs](super) for the behaviour and an example.
#[derive(Clone)]
pub struct IdempotencyLayer {
    config: Arc<Config>,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("methods", &self.config.methods)
            .field("require_key", &self.config.require_key)
            .field("options", &self.config.options)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer with the defaults (see [`IdempotencyLayerBuilder`]) on `store`.
    pub fn new(store: impl IdempotencyStore + 'static) -> Self {
        Self::from_shared(Arc::new(store))
    }

    /// A layer with the defaults on a store already behind an `Arc`.
    pub fn from_shared(store: Arc<dyn IdempotencyStore>) -> Self {
        IdempotencyLayerBuilder::new(store).build_unchecked()
    }

    /// A builder on `store`.
    pub fn builder(store: impl IdempotencyStore + 'static) -> IdempotencyLayerBuilder {
        IdempotencyLayerBuilder::new(Arc::new(store))
    }

    /// A builder on a store already behind an `Arc`.
    pub fn builder_shared(store: Arc<dyn IdempotencyStore>) -> IdempotencyLayerBuilder {
        IdempotencyLayerBuilder::new(store)
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(inner, self.config.clone())
    }
}

/// Options of an [`IdempotencyLayer`].
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use idempotent_core::MemoryStore;
/// use idempotent_core::http::IdempotencyLayer;
///
/// let layer = IdempotencyLayer::builder(MemoryStore::new())
///     .methods([Method::POST, Method::PUT])
///     .require_key(true)
///     .ttl(Duration::from_secs(24 * 60 * 60))
///     .wait_for_in_flight(Duration::from_secs(10))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), idempotent_core::Error>(())
/// ```
pub struct IdempotencyLayerBuilder {
    config: Config,
    refused_header: Option<HeaderName>,
}

impl fmt::Debug for IdempotencyLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("methods", &self.config.methods)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayerBuilder {
    fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        IdempotencyLayerBuilder {
            config: Config {
                store,
                methods: vec![Method::POST, Method::PATCH],
                require_key: false,
                scope: String::new(),
                principal: Box::new(AuthorizationHeader),
                policy: Box::new(SuccessOnly),
                options: CallOptions::new().on_in_flight(OnInFlight::Reject),
                max_request_body: DEFAULT_MAX_REQUEST_BODY,
                max_stored_body: DEFAULT_MAX_STORED_BODY,
                replayed_headers: DEFAULT_REPLAYED_HEADERS.to_vec(),
            },
            refused_header: None,
        }
    }

    /// The methods the layer handles; requests with other methods pass through. Default
    /// `POST` and `PATCH`; add `PUT` or `DELETE` where their handlers are not idempotent by
    /// themselves.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.methods = methods.into_iter().collect();
        self
    }

    /// Whether a request without an `Idempotency-Key` is refused with 400 (`true`) or passed
    /// through untouched (`false`, the default). For one route, add a layer that requires it
    /// with `route_layer`: a request is handled by the outermost layer that finds a key.
    pub fn require_key(mut self, required: bool) -> Self {
        self.config.require_key = required;
        self
    }

    /// A name this layer's scopes are made from (with the principal, method and path), so
    /// that services sharing one store never share records
    /// even on the same paths. Default: empty.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.config.scope = scope.into();
        self
    }

    /// How the principal of a request is found. Default: [`AuthorizationHeader`].
    pub fn principal(mut self, extractor: impl ExtractPrincipal) -> Self {
        self.config.principal = Box::new(extractor);
        self
    }

    /// Which responses are stored. Default: [`SuccessOnly`]. 1xx and 5xx never are.
    pub fn store_policy(mut self, policy: impl StorePolicy) -> Self {
        self.config.policy = Box::new(policy);
        self
    }

    /// How long a stored response is replayed. Default 24 hours.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.options = self.config.options.ttl(ttl);
        self
    }

    /// How long a claim holds without a heartbeat (see [`CallOptions::lease`]). Default 30
    /// seconds; at least [`MIN_LEASE`](crate::MIN_LEASE).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.options = self.config.options.lease(lease);
        self
    }

    /// A duplicate that arrives while the first request runs waits up to `wait` for its
    /// response and replays it, instead of the default 409. After `wait`, 409.
    pub fn wait_for_in_flight(mut self, wait: Duration) -> Self {
        self.config.options = self
            .config
            .options
            .on_in_flight(OnInFlight::Wait)
            .wait_timeout(wait);
        self
    }

    /// Answer duplicates that arrive while the first request runs with 409 and
    /// `Retry-After` (the default).
    pub fn reject_in_flight(mut self) -> Self {
        self.config.options = self.config.options.on_in_flight(OnInFlight::Reject);
        self
    }

    /// When the store is unavailable, run requests unprotected (`true`) instead of answering
    /// 503 (`false`, the default). Duplicates then run twice during an outage.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        let policy = if fail_open {
            OnStoreError::FailOpen
        } else {
            OnStoreError::FailClosed
        };
        self.config.options = self.config.options.on_store_error(policy);
        self
    }

    /// The largest request body the layer reads to fingerprint; larger ones get 413 with
    /// nothing claimed. Default [`DEFAULT_MAX_REQUEST_BODY`].
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config.max_request_body = bytes;
        self
    }

    /// The largest response body stored for replay. A larger one is delivered to the first
    /// caller and recorded as not replayable: duplicates get 410, never a second run.
    /// Default [`DEFAULT_MAX_STORED_BODY`].
    pub fn max_stored_body(mut self, bytes: usize) -> Self {
        self.config.max_stored_body = bytes;
        self
    }

    /// Also replays response header `name`, beside [`DEFAULT_REPLAYED_HEADERS`]. Headers that
    /// belong to one response or connection (see
    /// [`is_never_replayed`](super::stored::is_never_replayed)) are refused by
    /// [`build`](Self::build).
    pub fn replay_header(mut self, name: HeaderName) -> Self {
        if is_never_replayed(&name) {
            self.refused_header.get_or_insert(name);
        } else if !self.config.replayed_headers.contains(&name) {
            self.config.replayed_headers.push(name);
        }
        self
    }

    /// The layer. Fails with [`Error::LeaseTooShort`] for a lease under
    /// [`MIN_LEASE`](crate::MIN_LEASE) and [`Error::InvalidInput`] for a header that may
    /// never be replayed.
    pub fn build(self) -> Result<IdempotencyLayer, Error> {
        self.config.options.validate()?;
        if let Some(name) = &self.refused_header {
            return Err(Error::InvalidInput {
                reason: format!("response header `{name}` is never replayed"),
            });
        }
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> IdempotencyLayer {
        IdempotencyLayer {
            config: Arc::new(self.config),
        }
    }
}
