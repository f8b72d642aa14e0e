use idempotent_core::{Error, idempotent};

#[derive(Debug)]
enum ChargeError {
    Declined,
    Idempotency(Error),
}

impl From<Error> for ChargeError {
    fn from(error: Error) -> Self {
        ChargeError::Idempotency(error)
    }
}

#[idempotent(key = "order_id", cache_errors = true)]
async fn charge(order_id: u64) -> Result<u64, ChargeError> {
    if order_id == 0 {
        return Err(ChargeError::Declined);
    }
    Ok(order_id)
}

fn main() {}
