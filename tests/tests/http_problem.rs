#![cfg(feature = "http")]
//! The public mapping from `idempotent_core::Error` to HTTP: status, `Retry-After` and the
//! problem+json body, and axum's `IntoResponse` for handlers that call `#[idempotent]`
//! functions themselves (a real server on 127.0.0.1).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use idempotent_core::http::problem::{
    DOCUMENTATION, PROBLEM_JSON, Problem, error_response, retry_after_of, status_of,
};
use idempotent_core::{Error, MemoryStore, idempotent};
use serde::{Deserialize, Serialize};
use support::http::{TestServer, assert_problem, client, read};

fn every_error() -> Vec<(Error, u16, &'static str, Option<u64>)> {
    vec![
        (
            Error::PayloadMismatch {
                scope: "secret-scope".into(),
            },
            422,
            "payload-mismatch",
            None,
        ),
        (
            Error::InFlight {
                retry_after: Duration::from_secs(29),
            },
            409,
            "in-flight",
            Some(1),
        ),
        (Error::LeaseLost, 409, "lease-lost", Some(1)),
        (
            Error::store("redis", "connection refused at 10.0.0.1"),
            503,
            "store-unavailable",
            Some(1),
        ),
        (
            Error::CapacityExceeded { capacity: 10 },
            503,
            "store-full",
            None,
        ),
        (
            Error::decode("secret-scope", "bad byte"),
            500,
            "unreadable-record",
            None,
        ),
        (
            Error::Encode {
                source: "NaN".into(),
            },
            500,
            "internal",
            None,
        ),
        (
            Error::LeaseTooShort {
                lease: Duration::from_millis(10),
                minimum: Duration::from_secs(1),
            },
            500,
            "internal",
            None,
        ),
        (
            Error::InvalidInput {
                reason: "key too long".into(),
            },
            500,
            "internal",
            None,
        ),
    ]
}

#[test]
fn every_error_maps_to_a_status_a_retry_after_and_a_problem() {
    for (error, status, slug, retry_after) in every_error() {
        assert_eq!(status_of(&error).as_u16(), status, "{error:?}");
        assert_eq!(
            retry_after_of(&error),
            retry_after.map(Duration::from_secs),
            "{error:?}"
        );
        let problem = Problem::from_error(&error);
        assert_eq!(problem.type_uri(), format!("{DOCUMENTATION}#{slug}"));
        let body: serde_json::Value = serde_json::from_str(&problem.to_json()).unwrap();
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], problem.type_uri());
        assert_eq!(body["title"], problem.title());
        assert_eq!(body["detail"], problem.detail());
        assert_eq!(body["link"]["href"], problem.type_uri());
        // Nothing of the scope, the backend or its error reaches the client.
        let text = body.to_string();
        for secret in [
            "secret-scope",
            "10.0.0.1",
            "redis",
            "bad byte",
            "key too long",
        ] {
            assert!(!text.contains(secret), "{text} leaks {secret}");
        }

        let response: http::Response<Bytes> = error_response(&error);
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()),
            retry_after
        );
        assert_eq!(response.body(), problem.to_json().as_bytes());
    }
}

#[test]
fn every_documented_problem_has_a_section() {
    let docs = include_str!("../../idempotent-core/src/http/problem.rs");
    let mut slugs: Vec<&str> = every_error().iter().map(|(_, _, slug, _)| *slug).collect();
    slugs.extend([
        "missing-key",
        "invalid-key",
        "body-too-large",
        "body-unreadable",
        "not-replayable",
    ]);
    for slug in slugs {
        assert!(
            docs.contains(&format!("//! ## {slug}\n")),
            "no section for {slug}"
        );
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    id: u64,
}

#[derive(Deserialize)]
struct Charge {
    id: u64,
    amount: u64,
}

#[idempotent(key = "id", store = store, scope = "tests.http.charge", on_in_flight = "reject")]
async fn charge(store: &MemoryStore, id: u64, amount: u64) -> Result<Receipt, Error> {
    let _ = amount;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Receipt { id })
}

#[tokio::test]
async fn a_handler_returns_the_error_of_an_annotated_function() {
    static STORE: std::sync::LazyLock<MemoryStore> = std::sync::LazyLock::new(MemoryStore::new);
    async fn handler(Json(charge_request): Json<Charge>) -> Result<Json<Receipt>, Error> {
        Ok(Json(
            charge(&STORE, charge_request.id, charge_request.amount).await?,
        ))
    }
    let server = TestServer::start(Router::new().route("/charges", post(handler))).await;
    let client = client();
    let send = |amount: u64| {
        client
            .post(server.url("/charges"))
            .json(&serde_json::json!({"id": 7, "amount": amount}))
            .send()
    };
    let running = tokio::spawn(send(100));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let in_flight = read(send(100).await.unwrap()).await;
    assert_problem(&in_flight, StatusCode::CONFLICT, "in-flight");
    assert_eq!(in_flight.1["retry-after"], "1");
    assert_eq!(running.await.unwrap().unwrap().status(), 200);
    let mismatch = read(send(5).await.unwrap()).await;
    assert_problem(
        &mismatch,
        StatusCode::UNPROCESSABLE_ENTITY,
        "payload-mismatch",
    );
}
