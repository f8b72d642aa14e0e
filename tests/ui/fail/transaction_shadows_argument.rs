use idempotent_core::{Error, MemoryStore, idempotent};

#[idempotent(key = "order_id", store = store, transaction = "conn", skip = "conn")]
async fn ship(store: &MemoryStore, conn: &str, order_id: u64) -> Result<u64, Error> {
    let _ = (store, conn);
    Ok(order_id)
}

fn main() {}
