//! [`ResponseFuture`]: the future of [`IdempotencyService`](super::IdempotencyService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::ResponseBody;

/// The idempotent path: read the body, claim, run, store or replay. Boxed, because it is an
/// `async` block around the engine's call, and its one allocation is small beside the store
/// round trips the path makes anyway; requests the layer does not handle never take it.
pub(crate) type BoxedPath<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// The response future of [`IdempotencyService`](super::IdempotencyService).
    ///
    /// Requests the layer does not handle (no key, other methods) poll the inner service's
    /// future in place, without an allocation; refusals the layer decides at once (an invalid
    /// key) are ready; requests it handles run a boxed future.
    pub struct ResponseFuture<F, B: Body, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B: Body, E> {
        Passthrough { #[pin] future: F },
        Ready { response: Option<Response<ResponseBody<B>>> },
        Idempotent { future: BoxedPath<B, E> },
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    pub(crate) fn passthrough(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn ready(response: Response<ResponseBody<B>>) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn idempotent(future: BoxedPath<B, E>) -> Self {
        ResponseFuture {
            kind: Kind::Idempotent { future },
        }
    }
}

impl<F, B: Body, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Passthrough { .. } => "ResponseFuture::Passthrough",
            Kind::Ready { .. } => "ResponseFuture::Ready",
            Kind::Idempotent { .. } => "ResponseFuture::Idempotent",
        })
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => {
                Poll::Ready(ready!(future.poll(cx)).map(|response| response.map(ResponseBody::new)))
            }
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after completion"),
            },
            KindProj::Idempotent { future } => future.as_mut().poll(cx),
        }
    }
}
