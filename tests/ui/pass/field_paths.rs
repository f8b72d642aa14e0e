// Field paths in the key: the request struct itself need not be a `KeyPart`, and an argument
// keyed by a field is not fingerprinted.
use idempotent_core::{Error, idempotent};

struct Order {
    id: u64,
    customer: Customer,
    note: std::time::SystemTime,
}

struct Customer {
    email: String,
}

struct Shop {
    tenant: String,
}

impl Shop {
    #[idempotent(namespace = "field_paths.place", key = "order.id, self.tenant, order.customer.email")]
    async fn place(&self, order: &Order, quantity: u32) -> Result<u32, Error> {
        let _ = (&order.note, &self.tenant);
        Ok(quantity)
    }
}

#[idempotent(key = "order.id")]
async fn by_value(order: Order) -> Result<u64, Error> {
    Ok(order.id)
}

fn main() {
    let _ = Shop::place;
    let _ = by_value;
}
