use idempotent_core::{Error, idempotent};
use std::time::SystemTime;

#[idempotent(key = "order_id")]
async fn charge(order_id: u64, sent_at: SystemTime) -> Result<(), Error> {
    let _ = (order_id, sent_at);
    Ok(())
}

fn main() {}
