use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id")]
async fn step(order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

async fn refund_flow(order_id: u64) -> Result<u64, Error> {
    #[idempotent(key = "order_id")]
    async fn step(order_id: u64) -> Result<u64, Error> {
        Ok(order_id + 1)
    }
    step(order_id).await
}

fn main() {
    let _ = step;
    let _ = refund_flow;
}
