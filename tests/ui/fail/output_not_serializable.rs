use idempotent_core::{Error, idempotent};

struct Receipt {
    amount: u64,
}

#[idempotent(key = "order_id")]
async fn charge(order_id: u64) -> Result<Receipt, Error> {
    Ok(Receipt { amount: order_id })
}

fn main() {}
