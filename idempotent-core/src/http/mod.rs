//! A tower layer that makes HTTP requests with an `Idempotency-Key` header safe to retry: the
//! first request with a key runs, and every retry gets its stored response.
//!
//! ```
//! use axum::{Router, routing::post};
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use idempotent_core::MemoryStore;
//! use idempotent_core::http::IdempotencyLayer;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Router::new()
//!     .route("/payments", post(|| async { (StatusCode::CREATED, "payment 1") }))
//!     .layer(IdempotencyLayer::new(MemoryStore::new()));
//!
//! let pay = || {
//!     Request::post("/payments")
//!         .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
//!         .body(axum::body::Body::from(r#"{"amount":100}"#))
//! };
//! let first = app.clone().oneshot(pay()?).await?;
//! assert_eq!(first.status(), StatusCode::CREATED);
//! let retry = app.oneshot(pay()?).await?; // not run again: replayed
//! assert_eq!(retry.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! assert_eq!(retry.into_body().collect().await?.to_bytes(), "payment 1");
//! # Ok(())
//! # }
//! ```
//!
//! Every request the layer handles goes through the same engine as `#[idempotent]` functions
//! (a [`Call`](crate::Call) on the layer's [`IdempotencyStore`](crate::IdempotencyStore)), so
//! any store works, and the rules are the same: one atomic claim decides who runs, a heartbeat
//! keeps a long request's claim, a cancelled or panicking request gives the claim up.
//!
//! # Behaviour
//!
//! - **Which requests.** `POST` and `PATCH` with an `Idempotency-Key` header
//!   ([`key_header`]: a structured-field string or a bare value). Other methods, and requests
//!   without the header, pass through untouched, unless the layer
//!   [requires the key](IdempotencyLayerBuilder::require_key) (400).
//! - **Scope.** The key is stored under the principal that sent it, the method and the path
//!   ([`scope`]), so one tenant never receives another tenant's response. The default
//!   principal is the `Authorization` header, hashed.
//! - **Fingerprint.** Method, path, query and body ([`fingerprint`]): the same key with another
//!   request is 422. The body is read (up to a limit, 413 above it) before anything is claimed.
//! - **Concurrent duplicates.** 409 with `Retry-After` while the first request runs, or wait
//!   for it and replay ([`wait_for_in_flight`](IdempotencyLayerBuilder::wait_for_in_flight)).
//! - **Replays.** The stored status, body and an allow-list of headers
//!   ([`DEFAULT_REPLAYED_HEADERS`]: never `set-cookie`, `date`, hop-by-hop or rate-limit
//!   headers), plus `Idempotent-Replayed: true`.
//! - **What is stored.** 2xx responses, or what a [`StorePolicy`] says (1xx and 5xx never).
//!   Responses that are not stored, errors of the inner service, panics and requests dropped
//!   because the client went away release the key, so a retry runs again. A response body
//!   over the storage limit is delivered once and recorded as not replayable (410 for
//!   duplicates, never a second run). The layer buffers a response it stores, up to that limit,
//!   before sending it.
//! - **Store outage.** 503 (fail closed), or [fail open](IdempotencyLayerBuilder::fail_open).
//! - **Errors.** Every error the layer produces is `application/problem+json` ([`problem`]);
//!   the inner service's own responses pass through untouched. The same mapping is public
//!   for handlers that call `#[idempotent]` functions.
//! - **Logs.** `tracing` events for claims, replays, conflicts and mismatches name the method,
//!   path and status, never the key, the principal or body content.
//!
//! Layers inside this one see the buffered request body; a request that one idempotency
//! layer handles passes through any other inside it.

mod body;
pub mod fingerprint;
mod future;
mod handle;
pub mod key_header;
mod layer;
mod policy;
pub mod problem;
pub mod scope;
mod service;
pub mod stored;

use http::HeaderName;

pub use body::{RequestBody, ResponseBody};
pub use future::ResponseFuture;
pub use layer::{
    DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_STORED_BODY, IdempotencyLayer, IdempotencyLayerBuilder,
};
pub use policy::{StorePolicy, SuccessOnly};
pub use problem::Problem;
pub use scope::{AuthorizationHeader, ExtractPrincipal, Principal};
pub use service::IdempotencyService;
pub use stored::{DEFAULT_REPLAYED_HEADERS, StoredFormatError, StoredResponse};

/// The `Idempotency-Key` request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The `Idempotent-Replayed` response header, `true` on replayed responses.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

const IDEMPOTENT_REPLAYED_TRUE: &str = "true";
