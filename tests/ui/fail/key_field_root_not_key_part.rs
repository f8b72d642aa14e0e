use idempotent_core::{Error, idempotent};

struct Order {
    id: u64,
    amount: u64,
}

#[idempotent(key = "order.id")]
async fn charge(order: &Order) -> Result<u64, Error> {
    Ok(order.id + order.amount)
}

fn main() {}
