use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id", skip = "db, db")]
async fn charge(order_id: u64, db: &str) -> Result<(), Error> {
    let _ = (order_id, db);
    Ok(())
}

fn main() {}
