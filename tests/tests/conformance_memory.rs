//! The store conformance suite, run against `MemoryStore`.

use std::sync::Arc;

use idempotent_core::{IdempotencyStore, MemoryStore};

idempotent_core::store_conformance_tests!(memory, async {
    Some(Arc::new(MemoryStore::new()) as Arc<dyn IdempotencyStore>)
});

idempotent_core::store_conformance_tests!(memory_one_shard, async {
    let store = MemoryStore::builder().shards(1).capacity(100_000).build();
    Some(Arc::new(store) as Arc<dyn IdempotencyStore>)
});
