//! The bodies the layer hands on: the request body its inner service reads, and the response
//! body its caller reads. Each is the original body passed through frame by frame, or bytes
//! the layer buffered (a fingerprinted request, a stored or replayed response).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The request body the inner service receives: the client's body as it streams in, or,
    /// on requests the layer handled, the bytes it read to fingerprint them.
    pub struct RequestBody<B> {
        #[pin]
        kind: RequestKind<B>,
    }
}

pin_project! {
    #[project = RequestKindProj]
    enum RequestKind<B> {
        Streaming { #[pin] body: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
    }
}

impl<B> RequestBody<B> {
    /// The client's body, passed through untouched.
    pub fn new(body: B) -> Self {
        RequestBody {
            kind: RequestKind::Streaming { body },
        }
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        RequestBody {
            kind: RequestKind::Buffered {
                data: Some(data).filter(|data| !data.is_empty()),
                trailers,
            },
        }
    }
}

impl<B> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            RequestKind::Streaming { .. } => "RequestBody::Streaming",
            RequestKind::Buffered { .. } => "RequestBody::Buffered",
        })
    }
}

/// Frames of `Data` as `Bytes`: free when `Data` is `Bytes`, one copy otherwise.
fn into_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B: Body> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            RequestKindProj::Streaming { body } => {
                Poll::Ready(ready!(body.poll_frame(cx)).map(|frame| frame.map(into_bytes)))
            }
            RequestKindProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Streaming { body } => body.is_end_stream(),
            RequestKind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Streaming { body } => body.size_hint(),
            RequestKind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}

pin_project! {
    /// The response body the layer returns: the inner service's body passed through, or a
    /// buffered one (a response the layer stored, a replay, a problem+json error).
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: ResponseKind<B>,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B: Body> {
        Streaming { #[pin] body: B },
        // Bytes the layer read, then what comes after them: the rest of a body too large
        // to store, the error that stopped reading it, or its trailers.
        Buffered {
            data: Option<Bytes>,
            rest: Option<Pin<Box<B>>>,
            error: Option<B::Error>,
            trailers: Option<HeaderMap>,
        },
    }
}

impl<B: Body> ResponseBody<B> {
    /// The inner service's body, passed through untouched.
    pub fn new(body: B) -> Self {
        ResponseBody {
            kind: ResponseKind::Streaming { body },
        }
    }

    /// A complete body of `data`.
    pub fn full(data: Bytes) -> Self {
        Self::buffered(data, None, None, None)
    }

    pub(crate) fn buffered(
        data: Bytes,
        rest: Option<Pin<Box<B>>>,
        error: Option<B::Error>,
        trailers: Option<HeaderMap>,
    ) -> Self {
        ResponseBody {
            kind: ResponseKind::Buffered {
                data: Some(data).filter(|data| !data.is_empty()),
                rest,
                error,
                trailers,
            },
        }
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ResponseKind::Streaming { .. } => "ResponseBody::Streaming",
            ResponseKind::Buffered { .. } => "ResponseBody::Buffered",
        })
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            ResponseKindProj::Streaming { body } => {
                Poll::Ready(ready!(body.poll_frame(cx)).map(|frame| frame.map(into_bytes)))
            }
            ResponseKindProj::Buffered {
                data,
                rest,
                error,
                trailers,
            } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                if let Some(body) = rest {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(frame) => return Poll::Ready(Some(frame.map(into_bytes))),
                        None => *rest = None,
                    }
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(
                    trailers
                        .take()
                        .map(|trailers| Ok(Frame::trailers(trailers))),
                )
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Streaming { body } => body.is_end_stream(),
            ResponseKind::Buffered {
                data,
                rest,
                error,
                trailers,
            } => {
                data.is_none()
                    && rest.as_ref().is_none_or(|body| body.is_end_stream())
                    && error.is_none()
                    && trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Streaming { body } => body.size_hint(),
            ResponseKind::Buffered {
                data,
                rest,
                error,
                trailers,
            } => {
                let len = data.as_ref().map_or(0, |data| data.len() as u64);
                match rest {
                    Some(body) => SizeHint::with_exact(len) + body.size_hint(),
                    // Exact only when nothing follows: a server that knows the length
                    // would stop before an error or trailers.
                    None if error.is_none() && trailers.is_none() => SizeHint::with_exact(len),
                    None => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(len);
                        hint
                    }
                }
            }
        }
    }
}
