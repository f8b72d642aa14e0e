use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id", scope = " ")]
async fn charge(order_id: u64) -> Result<(), Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
