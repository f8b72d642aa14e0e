use idempotent_core::{Error, idempotent};
use std::collections::HashMap;

#[idempotent(key = "order_id, lines")]
async fn charge(order_id: u64, lines: HashMap<String, u32>) -> Result<(), Error> {
    let _ = (order_id, lines);
    Ok(())
}

fn main() {}
