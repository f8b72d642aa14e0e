//! The idempotent path of one request: read and fingerprint the body, then run the inner
//! service through a [`Call`] on the layer's store, with a codec that stores responses in the
//! [`stored`](super::stored) format.
//!
//! Responses that must not be stored (a status the policy refuses, a 5xx, an error of the
//! inner service, a body that fails while it is read) are the `Err` side of the call: the
//! engine releases the key, and the first caller still gets them. A panic or a dropped future
//! (the client went away) is the engine's to clean up: its guards give the claim up.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::{RequestBody, ResponseBody};
use super::fingerprint::fingerprint;
use super::layer::Config;
use super::problem::Problem;
use super::scope::{scope, store_key};
use super::stored::StoredResponse;
use super::{IDEMPOTENT_REPLAYED, IDEMPOTENT_REPLAYED_TRUE};
use crate::engine::{Call, Disposition, Outcome};
use crate::error::Error;
use crate::payload::{self, Codec, Payload};

/// Marks a request one layer handles, so that layers inside it pass it through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handled;

/// What the inner service produced, or what the store replays.
pub(crate) enum Produced<B: Body> {
    /// The response for this caller, and its stored form (the raw payload's content).
    Fresh {
        response: Response<ResponseBody<B>>,
        record: Vec<u8>,
    },
    /// A stored response.
    Stored(StoredResponse),
}

/// Whatever reaches the caller without being stored: the key is released.
///
/// Carries a response by value like [`Produced`] does: it is moved a few times on its way to
/// the caller, which costs less than the allocation boxing it would.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Unstored<B: Body, E> {
    Engine(Error),
    Response(Response<ResponseBody<B>>),
    Service(E),
}

impl<B: Body, E> From<Error> for Unstored<B, E> {
    fn from(error: Error) -> Self {
        Unstored::Engine(error)
    }
}

/// Writes and reads stored responses as raw payloads.
pub(crate) struct ResponseCodec;

// The `Err` side is a response, not a small error: see `Unstored`.
#[allow(clippy::result_large_err)]
impl<B: Body, E> Codec<Produced<B>, Unstored<B, E>> for ResponseCodec {
    fn encode(result: &Result<Produced<B>, Unstored<B, E>>) -> Option<Result<Bytes, Error>> {
        match result {
            Ok(Produced::Fresh { record, .. }) => Some(Ok(payload::encode_raw(record))),
            Ok(Produced::Stored(stored)) => Some(Ok(payload::encode_raw(&stored.encode()))),
            Err(_) => None,
        }
    }

    fn decode(scope: &str, payload: &[u8]) -> Result<Result<Produced<B>, Unstored<B, E>>, Error> {
        match Payload::parse_in(scope, payload)? {
            Payload::Raw(bytes) => StoredResponse::decode(bytes)
                .map(|stored| Ok(Produced::Stored(stored)))
                .map_err(|error| Error::decode(scope, error)),
            _ => Err(Error::decode(
                scope,
                "the record holds a JSON result, not a stored HTTP response",
            )),
        }
    }

    /// The format is this module's own and decodes whatever it encodes: the engine's check
    /// (decode after encode, for JSON's lossy values) would only copy the body once more.
    fn encode_checked(
        result: &Result<Produced<B>, Unstored<B, E>>,
    ) -> Option<Result<Bytes, Error>> {
        <Self as Codec<Produced<B>, Unstored<B, E>>>::encode(result)
    }
}

pub(crate) async fn handle<S, B, ResB>(
    config: Arc<Config>,
    mut inner: S,
    request: Request<B>,
    client_key: String,
) -> Result<Response<ResponseBody<ResB>>, S::Error>
where
    S: Service<Request<RequestBody<B>>, Response = Response<ResB>>,
    B: Body,
    ResB: Body,
{
    let (mut parts, body) = request.into_parts();
    let (body, trailers) = match read_body(body, config.max_request_body).await {
        Ok(read) => read,
        Err(problem) => return Ok(problem_response(&problem)),
    };
    let principal = config.principal.principal(&parts);
    let path = parts.uri.path();
    let scope = scope(&config.scope, &principal, &parts.method, path);
    let key = store_key(&client_key);
    let fingerprint = fingerprint(&parts.method, path, parts.uri.query(), &body);
    let method = parts.method.clone();
    let path = path.to_owned();
    parts.extensions.insert(Handled);
    let request = Request::from_parts(parts, RequestBody::buffered(body, trailers));

    let call = Call::new(&*config.store, &scope, key.as_str())
        .fingerprint(fingerprint)
        .options(config.options);
    let run = async {
        tracing::debug!(%method, path, "idempotency key claimed; running the request");
        let response = inner.call(request).await.map_err(Unstored::Service)?;
        capture(response, &config).await
    };
    let outcome = call.run_with_codec::<_, _, _, ResponseCodec>(run).await;
    match outcome {
        Ok(Outcome {
            value: Produced::Fresh { response, .. },
            disposition,
        }) => {
            debug_assert_eq!(disposition, Disposition::Executed);
            tracing::debug!(%method, path, status = response.status().as_u16(), "request ran; its response is recorded (unless the store was down and the layer fails open)");
            Ok(response)
        }
        Ok(Outcome {
            value: Produced::Stored(stored),
            ..
        }) => Ok(replay(stored, &method, &path)),
        Err(Unstored::Response(response)) => {
            tracing::debug!(%method, path, status = response.status().as_u16(), "response not stored; key released");
            Ok(response)
        }
        Err(Unstored::Service(error)) => {
            tracing::debug!(%method, path, "inner service failed; key released");
            Err(error)
        }
        Err(Unstored::Engine(error)) => {
            match &error {
                Error::InFlight { .. } => {
                    tracing::info!(%method, path, "conflict: a request with this key is in flight")
                }
                Error::PayloadMismatch { .. } => {
                    tracing::info!(%method, path, "mismatch: key reused with a different request")
                }
                error => tracing::warn!(%method, path, %error, "idempotent request failed"),
            }
            Ok(problem_response(&Problem::from_error(&error)))
        }
    }
}

fn problem_response<B: Body>(problem: &Problem) -> Response<ResponseBody<B>> {
    let response: Response<Bytes> = problem.to_response();
    response.map(ResponseBody::full)
}

fn replay<B: Body>(
    stored: StoredResponse,
    method: &http::Method,
    path: &str,
) -> Response<ResponseBody<B>> {
    if !stored.is_replayable() {
        tracing::info!(%method, path, status = stored.status().as_u16(), "stored response too large to replay");
        return problem_response(&Problem::not_replayable(stored.status()));
    }
    tracing::info!(%method, path, status = stored.status().as_u16(), "replayed a stored response");
    let (status, headers, body) = stored.into_parts();
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        IDEMPOTENT_REPLAYED,
        HeaderValue::from_static(IDEMPOTENT_REPLAYED_TRUE),
    );
    response
}

/// Reads a request body of at most `limit` bytes.
async fn read_body<B: Body>(body: B, limit: usize) -> Result<(Bytes, Option<HeaderMap>), Problem> {
    let mut body = std::pin::pin!(body);
    let mut collected = Collector::default();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|_| Problem::body_unreadable())?;
        match frame.into_data() {
            Ok(data) => {
                collected.push(data);
                if collected.len > limit {
                    return Err(Problem::body_too_large(limit));
                }
            }
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(more);
                }
            }
        }
    }
    Ok((collected.finish(), trailers))
}

/// Data frames as one `Bytes`, copied only when there are several.
#[derive(Default)]
struct Collector {
    first: Option<Bytes>,
    more: Option<BytesMut>,
    len: usize,
}

impl Collector {
    fn push(&mut self, mut data: impl Buf) {
        let chunk = data.copy_to_bytes(data.remaining());
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        match (&self.first, &mut self.more) {
            (None, _) => self.first = Some(chunk),
            (Some(first), None) => {
                let mut more = BytesMut::with_capacity(first.len() + chunk.len());
                more.extend_from_slice(first);
                more.extend_from_slice(&chunk);
                self.more = Some(more);
            }
            (Some(_), Some(more)) => more.extend_from_slice(&chunk),
        }
    }

    fn finish(self) -> Bytes {
        match (self.more, self.first) {
            (Some(more), _) => more.freeze(),
            (None, Some(first)) => first,
            (None, None) => Bytes::new(),
        }
    }
}

/// Reads the inner service's response and decides what is stored.
async fn capture<B: Body, E>(
    response: Response<B>,
    config: &Config,
) -> Result<Produced<B>, Unstored<B, E>> {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let storable = !status.is_informational()
        && !status.is_server_error()
        && config.policy.should_store(&parts);
    if !storable {
        return Err(Unstored::Response(Response::from_parts(
            parts,
            ResponseBody::new(body),
        )));
    }
    let limit = config.max_stored_body;
    let mut body = Box::pin(body);
    let mut collected = Collector::default();
    let too_large = loop {
        if collected.len as u64 + body.size_hint().lower() > limit as u64 {
            break true;
        }
        let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await else {
            break false;
        };
        match frame {
            Err(error) => {
                // What was read is delivered, then the error: the response never completed.
                let body = ResponseBody::buffered(collected.finish(), None, Some(error), None);
                return Err(Unstored::Response(Response::from_parts(parts, body)));
            }
            Ok(frame) => match frame.into_data() {
                Ok(data) => collected.push(data),
                Err(frame) => {
                    // Trailers are not part of the stored format: such a response is
                    // delivered and not stored.
                    let trailers = frame.into_trailers().ok();
                    let rest = Some(body);
                    let body = ResponseBody::buffered(collected.finish(), rest, None, trailers);
                    return Err(Unstored::Response(Response::from_parts(parts, body)));
                }
            },
        }
    };
    let replayed = replayed_headers(&parts.headers, config);
    if too_large {
        let record = StoredResponse::not_replayable(status, replayed).encode();
        let body = ResponseBody::buffered(collected.finish(), Some(body), None, None);
        return Ok(Produced::Fresh {
            response: Response::from_parts(parts, body),
            record,
        });
    }
    let data = collected.finish();
    let record = StoredResponse::new(status, replayed, data.clone()).encode();
    Ok(Produced::Fresh {
        response: Response::from_parts(parts, ResponseBody::full(data)),
        record,
    })
}

fn replayed_headers(headers: &HeaderMap, config: &Config) -> HeaderMap {
    let mut replayed = HeaderMap::new();
    for name in &config.replayed_headers {
        for value in headers.get_all(name) {
            replayed.append(name.clone(), value.clone());
        }
    }
    replayed
}
