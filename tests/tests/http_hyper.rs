#![cfg(feature = "http")]
//! The layer without axum: a plain hyper 1 server and a `tower::service_fn`, with tower-http's
//! request body limit around the layer, on 127.0.0.1 with a real client. The layer's bodies
//! are generic `http_body::Body`s, so hyper's `Incoming` (here wrapped in tower-http's
//! `Limited`) goes in and hyper serves what comes out.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use idempotent_core::MemoryStore;
use idempotent_core::http::{IdempotencyLayer, RequestBody};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::body::Limited;

#[tokio::test]
async fn a_plain_hyper_service_with_tower_http_around_the_layer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = ServiceBuilder::new()
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64))
        .layer(IdempotencyLayer::new(MemoryStore::new()))
        .service_fn(move |request: Request<RequestBody<Limited<Incoming>>>| {
            let counted = counted.clone();
            async move {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                // A body cut short by the limit would count as empty; none is here.
                let body = match request.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                let text = format!("#{n} got {} bytes", body.len());
                let mut response = Response::new(Full::new(Bytes::from(text)));
                *response.status_mut() = StatusCode::CREATED;
                Ok::<_, Infallible>(response)
            }
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |body: &'static str| {
        client
            .post(format!("http://{addr}/payments"))
            .header("idempotency-key", "hyper-1")
            .body(body)
            .send()
    };
    let first = post("pay 10").await.unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(first.text().await.unwrap(), "#1 got 6 bytes");
    let replay = post("pay 10").await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), "#1 got 6 bytes");
    assert_eq!(post("pay 99").await.unwrap().status(), 422);
    // tower-http's limit answers before the layer sees the request.
    let big = client
        .post(format!("http://{addr}/payments"))
        .header("idempotency-key", "hyper-2")
        .body(vec![b'x'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.abort();
}
