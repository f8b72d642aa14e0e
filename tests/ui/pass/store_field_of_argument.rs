// `store = app.pg`: the argument at the root of the store expression holds the store. It is
// the service's state, not part of the request, so it is not fingerprinted and need not be a
// `KeyPart` (neither `App` nor `Clients` is one).
use idempotent_core::{Error, IdempotencyStore, MemoryStore, idempotent};
use std::sync::Arc;

struct Clients {
    store: Arc<dyn IdempotencyStore>,
    stores: Vec<MemoryStore>,
}

struct App {
    pg: MemoryStore,
    clients: Clients,
}

impl App {
    fn store(&self) -> &MemoryStore {
        &self.pg
    }
}

#[idempotent(key = "order_id", store = app.pg)]
async fn field(app: &App, order_id: u64) -> Result<u64, Error> {
    let _ = app.clients.stores.len();
    Ok(order_id)
}

#[idempotent(key = "order_id", store = app.clients.store)]
async fn nested_field(app: &App, order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

#[idempotent(key = "order_id", store = &*app.clients.store)]
async fn reborrowed(app: Arc<App>, order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

#[idempotent(key = "order_id", store = app.store())]
async fn method(app: &App, order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

// The index is an argument of its own, and fingerprinted like any other.
#[idempotent(key = "order_id", store = app.clients.stores[shard])]
async fn indexed(app: &App, shard: usize, order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

// The key may read a field of it, as it reads `self.tenant`.
#[idempotent(key = "tenant.id, order_id", store = tenant.app.pg)]
async fn keyed_by_a_field(tenant: &Tenant, order_id: u64) -> Result<u64, Error> {
    Ok(order_id)
}

struct Tenant {
    id: u64,
    app: App,
}

fn main() {
    let _ = field;
    let _ = nested_field;
    let _ = reborrowed;
    let _ = method;
    let _ = indexed;
    let _ = keyed_by_a_field;
}
