use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id", on_store_error = "ignore")]
async fn charge(order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

fn main() {}
