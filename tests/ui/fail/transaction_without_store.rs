use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id", transaction = "tx")]
async fn ship(order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

fn main() {}
