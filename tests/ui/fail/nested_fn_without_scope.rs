use idempotent_core::{Error, idempotent};

async fn ship_flow(order_id: u64) -> Result<u64, Error> {
    #[idempotent(key = "order_id")]
    async fn step(order_id: u64) -> Result<u64, Error> {
        Ok(order_id)
    }
    step(order_id).await
}

fn main() {
    let _ = ship_flow;
}
