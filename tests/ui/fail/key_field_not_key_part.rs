use idempotent_core::{Error, idempotent};

struct OrderId(u64);

struct Order {
    id: OrderId,
    amount: u64,
}

// `skip` keeps this case about the field: `Order` as a whole is not a `KeyPart` either.
#[idempotent(key = "order.id", skip = "order")]
async fn charge(order: &Order) -> Result<u64, Error> {
    Ok(order.id.0 + order.amount)
}

fn main() {}
