use idempotent_core::{Error, idempotent};

// The key is an option like the others: `key = "order_id"`.
#[idempotent("order_id")]
async fn charge(order_id: u64) -> Result<(), Error> {
    let _ = order_id;
    Ok(())
}

fn main() {}
