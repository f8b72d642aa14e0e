use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id", ttl = "1.0005s")]
async fn charge(order_id: u64) -> Result<(), Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
