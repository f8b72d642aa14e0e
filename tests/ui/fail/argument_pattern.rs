use idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id")]
async fn charge(order_id: u64, (amount, currency): (u64, String)) -> Result<(), Error> {
    let _ = (order_id, amount, currency);
    Ok(())
}

fn main() {}
