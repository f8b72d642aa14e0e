use idempotent_core::{Error, MemoryStore, idempotent};

#[idempotent(key = "order_id", store = store, transaction = "tx", on_store_error = "fail_open")]
async fn ship(store: &MemoryStore, order_id: u64) -> Result<u64, Error> {
    let _ = store;
    Ok(order_id)
}

fn main() {}
