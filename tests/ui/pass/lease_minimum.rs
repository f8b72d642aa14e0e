// The shortest lease the attribute accepts: exactly one second, however it is spelled.
use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id", lease = "1s")]
async fn charge(order_id: u64) -> Result<(), Error> {
    let _ = order_id;
    Ok(())
}

#[idempotent(key = "order_id", lease = "1000ms")]
async fn refund(order_id: u64) -> Result<(), Error> {
    let _ = order_id;
    Ok(())
}

fn main() {
    let _ = charge;
    let _ = refund;
}
