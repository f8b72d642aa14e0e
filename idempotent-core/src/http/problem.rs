//! Errors as HTTP responses: `application/problem+json` (RFC 9457) for every error the layer
//! produces, and the same mapping for [`Error`]s returned by `#[idempotent]` functions called
//! from your own handlers.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Response, StatusCode};
//! use idempotent_core::Error;
//! use idempotent_core::http::problem::{self, Problem};
//!
//! let error = Error::InFlight { retry_after: Duration::from_secs(12) };
//! assert_eq!(problem::status_of(&error), StatusCode::CONFLICT);
//! let response: Response<Bytes> = Problem::from_error(&error).to_response();
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! assert_eq!(response.headers()["retry-after"], "1");
//! ```
//!
//! With the `axum` feature, [`Error`] and [`Problem`] implement `IntoResponse`, so a handler
//! can return `Result<Json<T>, idempotent_core::Error>` directly.
//!
//! Every body has the members RFC 9457 defines (`type`, `title`, `status`, `detail`) and a
//! `link` to its documentation (`{"rel": "describedby", "href": ...}`, as the examples of
//! draft-ietf-httpapi-idempotency-key-header have it). `type` is the address of the section
//! below that describes the problem. Bodies never hold the client's key, its principal or
//! anything from the request body.
//!
//! Retryable errors (in flight, lease lost, store unavailable) carry `Retry-After: 1`. The
//! lease time an in-flight claim has left is only the bound for an owner that crashed; a
//! request still running usually finishes far sooner, so the header says when a retry may
//! first succeed, not when it will.
//!
//! # Problems
//!
//! ## missing-key
//! 400: the route requires an `Idempotency-Key` header and the request has none. Send one: a
//! unique value (such as a UUID) per operation, the same on every retry of it.
//!
//! ## invalid-key
//! 400: the `Idempotency-Key` header is empty, longer than 255 characters, holds characters
//! other than visible ASCII, is a malformed structured-field string, or was sent twice.
//!
//! ## body-too-large
//! 413: the request body is over the layer's limit. Nothing was claimed or stored.
//!
//! ## body-unreadable
//! 400: the request body ended early or could not be read. Nothing was claimed or stored.
//!
//! ## payload-mismatch
//! 422: the key was used before for a request with another method, path, query or body. A
//! retry must send the same request as the first attempt; a new request needs a new key.
//!
//! ## in-flight
//! 409: a request with this key is still being processed. Retry later: once it finishes, the
//! retry gets its response.
//!
//! ## lease-lost
//! 409: while this request ran, another request with the same key took its claim over (the
//! claim's lease had run out). Its response was not stored; a retry gets the other's.
//!
//! ## not-replayable
//! 410: the key's first response was delivered but was too large to store, so it cannot be
//! replayed, and the request is not run a second time. 410 rather than a 5xx or 409, which
//! clients retry: retrying cannot help.
//!
//! ## store-unavailable
//! 503: the idempotency store could not be reached, so the request was not run (the layer
//! fails closed). Retry later.
//!
//! ## store-full
//! 503: the idempotency store is at capacity and refused new keys.
//!
//! ## unreadable-record
//! 500: the key's stored record cannot be read. The request is not run again, since it may
//! already have taken effect.
//!
//! ## internal
//! 500: the idempotency machinery failed in a way that is not the client's doing (a result that
//! cannot be stored, a misconfiguration).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::key_header::KeyHeaderError;
use crate::error::Error;

/// Where the problem types are documented: this module's page.
pub const DOCUMENTATION: &str =
    "https://docs.rs/idempotent-core/latest/idempotent_core/http/problem/index.html";

/// The media type of every body this module writes.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem+json response: what went wrong, for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    retry_after: Option<Duration>,
}

impl Problem {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Self {
        Problem {
            status,
            slug,
            title,
            detail,
            retry_after: None,
        }
    }

    fn retry_after_secs(mut self, secs: u64) -> Self {
        self.retry_after = Some(Duration::from_secs(secs));
        self
    }

    /// The problem an [`Error`] is for a client.
    pub fn from_error(error: &Error) -> Self {
        let problem = match error {
            Error::PayloadMismatch { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "payload-mismatch",
                "Idempotency-Key reused with a different request",
                "this key was first used with another method, path, query or body; \
                 a retry must repeat the original request, a new request needs a new key"
                    .to_owned(),
            ),
            Error::InFlight { .. } => Problem::new(
                StatusCode::CONFLICT,
                "in-flight",
                "A request with this Idempotency-Key is still being processed",
                "retry later to receive the response of the first request".to_owned(),
            ),
            Error::LeaseLost => Problem::new(
                StatusCode::CONFLICT,
                "lease-lost",
                "Another request with this Idempotency-Key took over",
                "this request's claim on the key ran out and another request took it; \
                 retry to receive that request's response"
                    .to_owned(),
            ),
            Error::Store { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "The idempotency store is unavailable",
                "the request was not processed; retry later".to_owned(),
            ),
            Error::CapacityExceeded { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-full",
                "The idempotency store is full",
                "the request was not processed; retry later".to_owned(),
            ),
            Error::Decode { .. } => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable-record",
                "The stored result for this Idempotency-Key cannot be read",
                "the request is not processed again, because it may already have taken effect"
                    .to_owned(),
            ),
            _ => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "The request could not be processed idempotently",
                "the server's idempotency handling failed".to_owned(),
            ),
        };
        if error.is_retryable() {
            problem.retry_after_secs(1)
        } else {
            problem
        }
    }

    pub(crate) fn missing_key() -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "missing-key",
            "Idempotency-Key header required",
            "this endpoint requires an Idempotency-Key header: a unique value per operation, \
             the same on every retry"
                .to_owned(),
        )
    }

    pub(crate) fn invalid_key(error: KeyHeaderError) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-key",
            "Invalid Idempotency-Key header",
            error.to_string(),
        )
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("requests with an Idempotency-Key may have at most {limit} bytes of body"),
        )
    }

    pub(crate) fn body_unreadable() -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "body-unreadable",
            "Request body could not be read",
            "the request body ended early or could not be read; nothing was processed".to_owned(),
        )
    }

    pub(crate) fn not_replayable(original: StatusCode) -> Self {
        Problem::new(
            StatusCode::GONE,
            "not-replayable",
            "The response for this Idempotency-Key cannot be replayed",
            format!(
                "the request was processed (status {}) but its response was too large to \
                 store; it is not processed again",
                original.as_u16()
            ),
        )
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` member: the address of this problem's documentation.
    pub fn type_uri(&self) -> String {
        format!("{DOCUMENTATION}#{}", self.slug)
    }

    /// The `title` member: the same for every occurrence of the problem.
    pub fn title(&self) -> &str {
        self.title
    }

    /// The `detail` member: what this occurrence means for the client.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The `Retry-After` the response carries, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The problem+json body.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Link<'a> {
            rel: &'a str,
            href: &'a str,
        }
        // A struct, so the members come in the order RFC 9457 lists them.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            type_uri: &'a str,
            title: &'a str,
            status: u16,
            detail: &'a str,
            link: Link<'a>,
        }
        let type_uri = self.type_uri();
        let body = Body {
            type_uri: &type_uri,
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            link: Link {
                rel: "describedby",
                href: &type_uri,
            },
        };
        // Strings and a number: serializing cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// The response: status, `Content-Type: application/problem+json`, `Retry-After` where it
    /// applies, and the body. `B` is any body that can be made from bytes (`Bytes`,
    /// `http_body_util::Full<Bytes>`, `axum::body::Body`).
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut response = Response::new(B::from(Bytes::from(self.to_json())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        response
    }
}

/// The status code an [`Error`] maps to: 422 for a payload mismatch, 409 for a request in
/// flight or a lost lease, 503 for a store that is unavailable or full, 500 otherwise.
pub fn status_of(error: &Error) -> StatusCode {
    Problem::from_error(error).status()
}

/// The `Retry-After` an [`Error`] maps to: one second for retryable errors, else `None`.
pub fn retry_after_of(error: &Error) -> Option<Duration> {
    Problem::from_error(error).retry_after()
}

/// The problem+json response for an [`Error`].
pub fn error_response<B: From<Bytes>>(error: &Error) -> Response<B> {
    Problem::from_error(error).to_response()
}

#[cfg(feature = "axum")]
mod axum_impls {
    use axum::response::{IntoResponse, Response};

    use super::Problem;
    use crate::error::Error;

    impl IntoResponse for Problem {
        fn into_response(self) -> Response {
            self.to_response()
        }
    }

    /// The problem+json response of [`Problem::from_error`].
    impl IntoResponse for Error {
        fn into_response(self) -> Response {
            Problem::from_error(&self).to_response()
        }
    }
}
