use idempotent_core::{Error, idempotent};

#[idempotent(key = "self.tenant, order_id")]
async fn charge(tenant: &str, order_id: u64) -> Result<(), Error> {
    let _ = (tenant, order_id);
    Ok(())
}

fn main() {}
