use idempotent_core::{Error, idempotent};

struct OrderId(u64);

struct Order {
    id: OrderId,
    amount: u64,
}

#[idempotent(key = "order.id")]
async fn charge(order: &Order) -> Result<u64, Error> {
    Ok(order.id.0 + order.amount)
}

fn main() {}
