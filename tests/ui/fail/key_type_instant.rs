use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id, started")]
async fn charge(order_id: u64, started: std::time::Instant) -> Result<(), Error> {
    let _ = (order_id, started);
    Ok(())
}

fn main() {}
