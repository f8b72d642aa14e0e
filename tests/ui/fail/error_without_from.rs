use idempotent_core::idempotent;

#[derive(Debug)]
enum ChargeError {
    Declined,
}

#[idempotent(key = "order_id")]
async fn charge(order_id: u64) -> Result<u64, ChargeError> {
    if order_id == 0 {
        return Err(ChargeError::Declined);
    }
    Ok(order_id)
}

fn main() {}
