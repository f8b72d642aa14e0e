// `&self` with the store in a field, and the tenant (a field of `self`) in the key.
use idempotent_core::{Error, IdempotencyStore, idempotent};
use std::sync::Arc;

struct Payments {
    store: Arc<dyn IdempotencyStore>,
    tenant: String,
}

impl Payments {
    #[idempotent(scope = "method_ref_self.refund", key = "self.tenant, order_id", store = self.store)]
    async fn refund(&self, order_id: u64, amount_cents: u64) -> Result<bool, Error> {
        Ok(!self.tenant.is_empty() && order_id > 0 && amount_cents > 0)
    }

    // A receiver type other than a reference.
    #[idempotent(scope = "method_ref_self.shared", key = "order_id", store = self.store)]
    async fn shared(self: Arc<Self>, order_id: u64) -> Result<u64, Error> {
        Ok(order_id + self.tenant.len() as u64)
    }
}

fn main() {
    let _ = Payments::refund;
    let _ = Payments::shared;
}
