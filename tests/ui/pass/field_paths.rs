// Field paths in the key. An argument keyed by a field is fingerprinted whole (its `KeyPart`
// encoding), so a retry with the same id but other fields is a payload mismatch; `self` is the
// service and is never fingerprinted, whatever the key reads from it.
use idempotent_core::{Error, KeyPart, KeyWriter, idempotent};

struct Order {
    id: u64,
    customer: Customer,
    amount: u64,
}

struct Customer {
    email: String,
}

impl KeyPart for Order {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        (self.id, &self.customer.email, self.amount).write_key_part(out);
    }
}

struct Shop {
    tenant: String,
}

impl Shop {
    #[idempotent(scope = "field_paths.place", key = "order.id, self.tenant, order.customer.email")]
    async fn place(&self, order: &Order, quantity: u32) -> Result<u32, Error> {
        let _ = (order.amount, &self.tenant);
        Ok(quantity)
    }
}

#[idempotent(key = "order.id")]
async fn by_value(order: Order) -> Result<u64, Error> {
    Ok(order.id)
}

// Keyed whole and by a field: the key covers all of it, so it is not fingerprinted.
#[idempotent(key = "order, order.id")]
async fn whole_and_field(order: &Order) -> Result<u64, Error> {
    Ok(order.amount)
}

fn main() {
    let _ = Shop::place;
    let _ = by_value;
    let _ = whole_and_field;
}
