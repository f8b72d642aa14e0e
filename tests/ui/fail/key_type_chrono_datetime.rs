use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id, placed_at")]
async fn charge(order_id: u64, placed_at: chrono::DateTime<chrono::Utc>) -> Result<(), Error> {
    let _ = (order_id, placed_at);
    Ok(())
}

fn main() {}
