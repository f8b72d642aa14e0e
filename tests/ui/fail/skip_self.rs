use idempotent_core::{Error, idempotent};

struct Service {
    tenant: String,
}

impl Service {
    #[idempotent(key = "order_id", skip = "self", scope = "service.charge")]
    async fn charge(&self, order_id: u64) -> Result<(), Error> {
        let _ = (&self.tenant, order_id);
        Ok(())
    }
}

fn main() {}
