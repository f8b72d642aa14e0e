//! HTTP helpers: the example orders service plus routes for every status path, served on
//! 127.0.0.1 by a real server, and a real client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use idempotent_core::IdempotencyStore;
use idempotent_core::http::IdempotencyLayerBuilder;
use idempotent_examples::orders::{self, Orders};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How many times the test routes ran.
#[derive(Debug, Default)]
pub struct Calls(AtomicUsize);

impl Calls {
    /// How many so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The routes every status path needs, besides the orders service's:
/// - `POST /status/{code}`: answers `code` with body `status {code} #n`;
/// - `POST /panic`: panics;
/// - `POST /large/{bytes}`: 201 with a body of that many bytes;
/// - `POST /headers`: 201 with headers that must and must not be replayed;
/// - `POST /broken`: 200 whose body fails after a first chunk;
/// - `POST /slow/{ms}`: sleeps, then 200 (for timeouts);
/// - `POST /echo`, `PUT /echo`, `GET /echo`, `DELETE /echo`: the body and query back, and
///   the call number.
pub fn test_routes(calls: Arc<Calls>) -> Router {
    Router::new()
        .route("/status/{code}", post(status))
        .route("/panic", post(panic))
        .route("/large/{bytes}", post(large))
        .route("/headers", post(headers))
        .route("/broken", post(broken))
        .route("/slow/{ms}", post(slow))
        .route(
            "/echo",
            post(echo).put(echo).get(echo).delete(echo).patch(echo),
        )
        .with_state(calls)
}

async fn status(State(calls): State<Arc<Calls>>, Path(code): Path<u16>) -> Response {
    let n = calls.hit();
    let status = StatusCode::from_u16(code).unwrap();
    (status, format!("status {code} #{n}")).into_response()
}

async fn panic(State(calls): State<Arc<Calls>>) -> Response {
    calls.hit();
    panic!("the handler panicked");
}

async fn large(State(calls): State<Arc<Calls>>, Path(bytes): Path<usize>) -> Response {
    calls.hit();
    (StatusCode::CREATED, vec![b'x'; bytes]).into_response()
}

async fn headers(State(calls): State<Arc<Calls>>) -> Response {
    let n = calls.hit();
    let mut response = (StatusCode::CREATED, format!("headers #{n}")).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/plain; charset=utf-8"),
        ("etag", "\"v1\""),
        ("location", "/things/1"),
        ("set-cookie", "session=secret"),
        ("date", "Tue, 01 Dec 2026 00:00:00 GMT"),
        ("x-ratelimit-remaining", "41"),
        ("ratelimit-policy", "10;w=1"),
        ("x-request-id", "req-1"),
    ] {
        headers.insert(
            header::HeaderName::from_static(name),
            value.parse().unwrap(),
        );
    }
    response
}

async fn broken(State(calls): State<Arc<Calls>>) -> Response {
    calls.hit();
    Response::new(Body::new(BrokenBody { sent: false }))
}

/// A body that sends one chunk, then fails.
struct BrokenBody {
    sent: bool,
}

impl http_body::Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::other("the body failed"))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"partial",
        )))))
    }
}

async fn slow(State(calls): State<Arc<Calls>>, Path(ms): Path<u64>) -> Response {
    calls.hit();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (StatusCode::OK, "slow").into_response()
}

async fn echo(State(calls): State<Arc<Calls>>, uri: axum::http::Uri, body: Bytes) -> Response {
    let n = calls.hit();
    let text = format!(
        "#{n} query={} body={}",
        uri.query().unwrap_or(""),
        String::from_utf8_lossy(&body)
    );
    (StatusCode::CREATED, text).into_response()
}

/// A server on 127.0.0.1 until dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Serves `router` on a free port of 127.0.0.1.
    pub async fn start(router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, router)
    }

    /// Serves `router` on `listener`.
    pub fn on(listener: TcpListener, router: Router) -> Self {
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestServer { addr, task }
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops serving (connections in progress are cut).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The orders service and the test routes behind one layer built by `configure`.
pub struct App {
    /// The server.
    pub server: TestServer,
    /// The example service's orders.
    pub orders: Arc<Orders>,
    /// How often the test routes ran.
    pub calls: Arc<Calls>,
}

impl App {
    /// Starts the example service as it ships (its own layer on `POST /orders`), with the test
    /// routes behind a layer `configure` builds on the same store.
    pub async fn start(
        store: Arc<dyn IdempotencyStore>,
        configure: impl FnOnce(IdempotencyLayerBuilder) -> IdempotencyLayerBuilder,
    ) -> Self {
        Self::start_with(store, Orders::new(), configure).await
    }

    /// [`start`](Self::start) on existing orders (a restarted server keeps its database).
    pub async fn start_with(
        store: Arc<dyn IdempotencyStore>,
        orders: Arc<Orders>,
        configure: impl FnOnce(IdempotencyLayerBuilder) -> IdempotencyLayerBuilder,
    ) -> Self {
        let calls = Arc::new(Calls::default());
        let router = router(store, orders.clone(), calls.clone(), configure);
        App {
            server: TestServer::start(router).await,
            orders,
            calls,
        }
    }

    /// The URL of `path` on the server.
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }
}

/// The router of [`App`].
pub fn router(
    store: Arc<dyn IdempotencyStore>,
    orders: Arc<Orders>,
    calls: Arc<Calls>,
    configure: impl FnOnce(IdempotencyLayerBuilder) -> IdempotencyLayerBuilder,
) -> Router {
    let layer = configure(idempotent_core::http::IdempotencyLayer::builder_shared(
        store.clone(),
    ))
    .build()
    .unwrap();
    let tests = test_routes(calls)
        .layer(layer)
        .layer(tower_http::catch_panic::CatchPanicLayer::new());
    orders::app(orders, store).unwrap().merge(tests)
}

/// A client that never goes through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `POST /orders` with `key` and a JSON body.
pub fn order(
    client: &reqwest::Client,
    app: &App,
    key: &str,
    body: serde_json::Value,
) -> reqwest::RequestBuilder {
    client
        .post(app.url("/orders"))
        .header("idempotency-key", key)
        .json(&body)
}

/// Sends `POST /orders` with `key` and the JSON `body` on a connection of its own, and closes
/// the connection 200 ms later, while the request is still running (its claim held): a client
/// that went away.
pub async fn abandon_order(app: &App, key: &str, body: &str) {
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: t\r\nidempotency-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(app.server.addr)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
}

/// The response's status, headers and body text.
pub async fn read(response: reqwest::Response) -> (StatusCode, HeaderMap, String) {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (status, headers, text)
}

/// Checks a problem+json response of the layer and returns its body.
pub fn assert_problem(
    (status, headers, text): &(StatusCode, HeaderMap, String),
    expected: StatusCode,
    slug: &str,
) -> serde_json::Value {
    assert_eq!(*status, expected, "{text}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let body: serde_json::Value = serde_json::from_str(text).unwrap();
    let type_uri = body["type"].as_str().unwrap();
    assert!(type_uri.ends_with(&format!("#{slug}")), "{type_uri}");
    assert_eq!(body["status"], expected.as_u16());
    assert!(!body["title"].as_str().unwrap().is_empty());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    assert_eq!(body["link"]["rel"], "describedby");
    assert_eq!(body["link"]["href"], type_uri);
    body
}

/// Sends raw bytes on a new connection and returns what comes back before the server
/// closes it or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    answer
}
