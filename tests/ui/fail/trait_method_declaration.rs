use idempotent_core::{Error, idempotent};

trait Payments {
    #[idempotent(key = "order_id")]
    async fn refund(&self, order_id: u64) -> Result<(), Error>;
}

fn main() {}
