//! The orders service of the `server` example: an axum API whose `POST /orders` is safe to
//! retry with an `Idempotency-Key` header. Also used by the HTTP layer's tests and benchmark.
//!
//! - `POST /orders`, JSON `{"item": string, "quantity": integer, "delay_ms": integer}`
//!   (`delay_ms` optional, at most 5000): requires `Idempotency-Key`; sleeps `delay_ms`, then
//!   creates an order with a fresh id and answers 201 with `{"id", "item", "quantity"}` and a
//!   `Location` header. Invalid JSON or a quantity below 1: 400. Bodies over 1 MiB: 413.
//! - `GET /orders`: the orders created by the caller's principal; `GET /orders/{id}` one of
//!   them (the `Location` of its creation), 404 for another principal's or an unknown id.
//! - `GET /healthz`: 200.
//!
//! The principal is the token of `Authorization: Bearer <token>` (any token names one), or
//! `anonymous` without one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idempotent_core::http::{IdempotencyLayer, Principal};
use idempotent_core::{Error, IdempotencyStore};
use serde::{Deserialize, Serialize};

/// Request bodies are limited to this (413 above it).
pub const MAX_BODY: usize = 1024 * 1024;
/// The longest `delay_ms` a request may ask for.
pub const MAX_DELAY_MS: u64 = 5_000;

/// An order as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Unique across the process.
    pub id: u64,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: i64,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: i64,
    #[serde(default)]
    delay_ms: u64,
}

/// The orders created so far, by principal.
#[derive(Debug, Default)]
pub struct Orders {
    next_id: AtomicU64,
    by_principal: Mutex<HashMap<String, Vec<Order>>>,
}

impl Orders {
    /// No orders yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Orders::default())
    }

    /// How many orders were created, for every principal.
    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// The orders of `principal`.
    pub fn of(&self, principal: &str) -> Vec<Order> {
        self.lock().get(principal).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Order>>> {
        self.by_principal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The principal's name: the bearer token, or `anonymous`.
pub fn principal_name(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map_or_else(|| "anonymous".to_owned(), str::to_owned)
}

/// The layer's principal: the same name as [`principal_name`], hashed.
pub fn principal_of(parts: &axum::http::request::Parts) -> Principal {
    Principal::from_identity(principal_name(&parts.headers))
}

fn bad_request(detail: String) -> Response {
    let body = serde_json::json!({ "error": detail });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn create_order(
    State(orders): State<Arc<Orders>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let new: NewOrder = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(error) => return bad_request(format!("invalid order: {error}")),
    };
    if new.quantity < 1 {
        return bad_request("quantity must be at least 1".to_owned());
    }
    if new.delay_ms > MAX_DELAY_MS {
        return bad_request(format!("delay_ms must be at most {MAX_DELAY_MS}"));
    }
    // The delay comes first: a request cancelled while it waits has created nothing.
    if new.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(new.delay_ms)).await;
    }
    let order = Order {
        id: orders.next_id.fetch_add(1, Ordering::Relaxed) + 1,
        item: new.item,
        quantity: new.quantity,
    };
    orders
        .lock()
        .entry(principal_name(&headers))
        .or_default()
        .push(order.clone());
    let location = format!("/orders/{}", order.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response()
}

async fn list_orders(State(orders): State<Arc<Orders>>, headers: HeaderMap) -> Json<Vec<Order>> {
    Json(orders.of(&principal_name(&headers)))
}

async fn get_order(
    State(orders): State<Arc<Orders>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    match orders
        .of(&principal_name(&headers))
        .into_iter()
        .find(|order| order.id == id)
    {
        Some(order) => Json(order).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The routes without any idempotency layer (the benchmark's baseline).
pub fn routes(orders: Arc<Orders>) -> Router {
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(orders)
}

/// The layer the service uses: `POST /orders` requires a key, principals are bearer tokens.
pub fn layer(store: Arc<dyn IdempotencyStore>) -> Result<IdempotencyLayer, Error> {
    IdempotencyLayer::builder_shared(store)
        .require_key(true)
        .principal(principal_of)
        .max_request_body(MAX_BODY)
        .build()
}

/// The service: [`routes`] with [`layer`] on `POST /orders`.
pub fn app(orders: Arc<Orders>, store: Arc<dyn IdempotencyStore>) -> Result<Router, Error> {
    let layer = layer(store)?;
    Ok(Router::new()
        .route(
            "/orders",
            post(create_order).route_layer(layer).get(list_orders),
        )
        .route("/orders/{id}", get(get_order))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(orders))
}

/// Opens the store `spec` names: `memory`, `sqlite:PATH`, `redis://...` or `postgres://...`.
pub async fn open_store(spec: &str) -> Result<Arc<dyn IdempotencyStore>, Error> {
    if spec == "memory" {
        return Ok(Arc::new(idempotent_core::MemoryStore::new()));
    }
    if let Some(path) = spec.strip_prefix("sqlite:") {
        return Ok(Arc::new(idempotent_core::SqliteStore::open(path).await?));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return Ok(Arc::new(idempotent_core::RedisStore::connect(spec).await?));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let store = idempotent_core::PostgresStore::connect(spec).await?;
        store.migrate().await?;
        return Ok(Arc::new(store));
    }
    Err(Error::InvalidInput {
        reason: format!(
            "unknown store `{spec}`: use memory, sqlite:PATH, redis://... or postgres://..."
        ),
    })
}
