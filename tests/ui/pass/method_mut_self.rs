// `&mut self` methods.
use idempotent_core::{Error, IdempotencyStore, idempotent};
use std::sync::Arc;

struct Ledger {
    store: Arc<dyn IdempotencyStore>,
    entries: Vec<u64>,
}

impl Ledger {
    fn record(&mut self, amount: u64) {
        self.entries.push(amount);
    }

    // `store = self.store` borrows only the `store` field for the whole call, and the body
    // may still mutate the other fields: the body's async block captures fields, not `self`.
    #[idempotent(scope = "method_mut_self.append", key = "entry_id", store = self.store)]
    async fn append(&mut self, entry_id: u64, amount: u64) -> Result<usize, Error> {
        self.entries.push(amount);
        Ok(self.entries.len() + entry_id as usize)
    }

    // A body that calls a `&mut self` method needs all of `self` mutably, which conflicts with
    // the store borrowed from `self.store` (error E0502). Cloning the `Arc` gives the call its
    // own handle to the store and leaves `self` free.
    #[idempotent(scope = "method_mut_self.append_via_method", key = "entry_id", store = self.store.clone())]
    async fn append_via_method(&mut self, entry_id: u64, amount: u64) -> Result<u64, Error> {
        self.record(amount);
        Ok(entry_id)
    }
}

fn main() {
    let _ = Ledger::append;
    let _ = Ledger::append_via_method;
}
