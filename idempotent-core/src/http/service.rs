//! [`IdempotencyService`]: decides which requests the layer handles, and hands those to the
//! idempotent path.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use http_body::Body;
use tower_service::Service;

use super::body::{RequestBody, ResponseBody};
use super::future::ResponseFuture;
use super::handle::{Handled, handle};
use super::key_header;
use super::layer::Config;
use super::problem::Problem;

/// The [`Service`] an [`IdempotencyLayer`](super::IdempotencyLayer) wraps around `S`.
///
/// `S` receives `Request<RequestBody<B>>` and its response body is wrapped in
/// [`ResponseBody`]; both have `Bytes` frames, and any `http_body::Body` works on either
/// side. axum's `Router::layer` and `route_layer` accept it as it is.
pub struct IdempotencyService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for IdempotencyService<S> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for IdempotencyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> IdempotencyService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        IdempotencyService { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, ResB> Service<Request<B>> for IdempotencyService<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Send,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let config = &self.config;
        // A request an outer layer already handles passes through inner ones.
        if !config.methods.contains(request.method())
            || request.extensions().get::<Handled>().is_some()
        {
            return ResponseFuture::passthrough(self.inner.call(request.map(RequestBody::new)));
        }
        let key = match key_header::from_headers(request.headers()) {
            Ok(Some(key)) => key,
            Ok(None) if !config.require_key => {
                return ResponseFuture::passthrough(self.inner.call(request.map(RequestBody::new)));
            }
            Ok(None) => return refuse(Problem::missing_key()),
            Err(error) => {
                tracing::debug!(method = %request.method(), path = request.uri().path(), %error, "invalid Idempotency-Key header");
                return refuse(Problem::invalid_key(error));
            }
        };
        if declared_length(&request).is_some_and(|length| length > config.max_request_body as u64)
            || request.body().size_hint().lower() > config.max_request_body as u64
        {
            return refuse(Problem::body_too_large(config.max_request_body));
        }
        // `poll_ready` readied `self.inner`: the call runs on it, and this service keeps a
        // fresh clone for the next request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::idempotent(Box::pin(handle(config.clone(), inner, request, key)))
    }
}

fn refuse<F, B: Body, E>(problem: Problem) -> ResponseFuture<F, B, E> {
    let response: Response<bytes::Bytes> = problem.to_response();
    ResponseFuture::ready(response.map(ResponseBody::full))
}

fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
