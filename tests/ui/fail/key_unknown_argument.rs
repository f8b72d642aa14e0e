use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id, acton")]
async fn charge(order_id: u64, action: &str) -> Result<(), Error> {
    let _ = (order_id, action);
    Ok(())
}

fn main() {}
