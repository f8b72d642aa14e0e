use idempotent_core::{Error, idempotent};
use std::collections::HashSet;

#[idempotent(key = "order_id, tags")]
async fn charge(order_id: u64, tags: &HashSet<String>) -> Result<(), Error> {
    let _ = (order_id, tags);
    Ok(())
}

fn main() {}
