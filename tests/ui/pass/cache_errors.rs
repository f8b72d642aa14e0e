// `cache_errors = true` with an error type that can be stored.
use idempotent_core::{Error, idempotent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum ShipError {
    AddressRejected(String),
    Idempotency(String),
}

impl From<Error> for ShipError {
    fn from(error: Error) -> Self {
        ShipError::Idempotency(error.to_string())
    }
}

#[idempotent(key = "order_id", cache_errors = true)]
async fn ship(order_id: u64, address: String) -> Result<u32, ShipError> {
    if address.is_empty() {
        return Err(ShipError::AddressRejected(address));
    }
    Ok(u32::try_from(order_id).map_err(|e| ShipError::AddressRejected(e.to_string()))?)
}

fn main() {
    let _ = ship;
}
