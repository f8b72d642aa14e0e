use idempotent_core::{Error, idempotent};
use std::time::SystemTime;

#[idempotent(key = "order_id, requested_at")]
async fn charge(order_id: u64, requested_at: SystemTime) -> Result<(), Error> {
    let _ = (order_id, requested_at);
    Ok(())
}

fn main() {}
