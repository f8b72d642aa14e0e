use idempotent_core::{Error, MemoryStore, idempotent};

#[idempotent(key = "order_id", store = store, transaction = "tx")]
async fn ship(store: &MemoryStore, order_id: u64) -> Result<u64, Error> {
    let _ = &tx;
    Ok(order_id)
}

fn main() {}
