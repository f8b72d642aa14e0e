use idempotent_core::{Error, idempotent};
use uuid::Uuid;

#[idempotent(key = "Uuid::new_v4(), order_id")]
async fn charge(order_id: u64) -> Result<(), Error> {
    let _ = (order_id, Uuid::new_v4());
    Ok(())
}

fn main() {}
