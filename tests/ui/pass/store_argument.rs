// `store = <argument>`: the store argument is not part of the key or the fingerprint.
use idempotent_core::{Error, IdempotencyStore, MemoryStore, idempotent};
use std::sync::Arc;

#[idempotent(key = "event_id", store = store)]
async fn by_reference(store: &MemoryStore, event_id: String) -> Result<(), Error> {
    let _ = event_id;
    Ok(())
}

#[idempotent(key = "event_id", store = store)]
async fn by_arc(store: Arc<MemoryStore>, event_id: String) -> Result<usize, Error> {
    // The body may use the store argument too.
    Ok(store.len() + event_id.len())
}

#[idempotent(key = "event_id", store = store)]
async fn by_dyn_arc(store: Arc<dyn IdempotencyStore>, event_id: u64) -> Result<u64, Error> {
    Ok(event_id)
}

#[idempotent(key = "event_id", store = &**store)]
async fn by_expression(store: &Arc<MemoryStore>, event_id: u64) -> Result<u64, Error> {
    Ok(event_id)
}

#[idempotent(key = "event_id", store = store)]
async fn by_box(store: Box<dyn IdempotencyStore>, event_id: u64) -> Result<u64, Error> {
    Ok(event_id)
}

// Any other smart pointer: reach into it.
#[idempotent(key = "event_id", store = &*store)]
async fn by_other_pointer(store: std::rc::Rc<MemoryStore>, event_id: u64) -> Result<u64, Error> {
    Ok(event_id)
}

fn main() {
    let _ = by_reference;
    let _ = by_arc;
    let _ = by_dyn_arc;
    let _ = by_expression;
    let _ = by_box;
    let _ = by_other_pointer;
}
