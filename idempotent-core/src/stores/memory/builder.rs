//! Capacity and sharding of a [`MemoryStore`].

use super::MemoryStore;

const DEFAULT_CAPACITY: usize = 1_000_000;
const DEFAULT_SHARDS: usize = 64;

/// Builder for [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    capacity: usize,
    shards: usize,
}

impl MemoryStoreBuilder {
    /// The most records the store holds (in progress and completed). Default 1,000,000.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How many independently locked shards to use, rounded up to a power of two. Default 64.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        MemoryStore::with_shards(
            self.shards.clamp(1, 1 << 16).next_power_of_two(),
            self.capacity,
        )
    }
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        MemoryStoreBuilder {
            capacity: DEFAULT_CAPACITY,
            shards: DEFAULT_SHARDS,
        }
    }
}
