// Every option at once, on a free function.
use idempotent_core::{Error, MemoryStore, idempotent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum ChargeError {
    Declined { reason: String },
    Idempotency(String),
}

impl From<Error> for ChargeError {
    fn from(error: Error) -> Self {
        ChargeError::Idempotency(error.to_string())
    }
}

struct HttpClient;

#[idempotent(
    key = "order_id, action",
    ttl = "1h30m",
    lease = "45s",
    store = store,
    scope = "orders.charge",
    skip = "client",
    on_in_flight = "reject",
    on_store_error = "fail_closed",
    cache_errors = true,
    crate = "::idempotent_core",
)]
async fn charge(
    store: &MemoryStore,
    client: &HttpClient,
    order_id: u64,
    action: &str,
    amount_cents: u64,
) -> Result<String, ChargeError> {
    let _ = client;
    if amount_cents == 0 {
        return Err(ChargeError::Declined {
            reason: "zero amount".to_owned(),
        });
    }
    Ok(format!("ch_{order_id}_{action}_{amount_cents}"))
}

fn main() {
    let _ = charge;
}
