use chrono::Utc;
use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id, Utc::now()")]
async fn charge(order_id: u64) -> Result<(), Error> {
    let _ = (order_id, Utc::now());
    Ok(())
}

fn main() {}
