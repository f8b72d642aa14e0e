//! In-process change notification for stores whose waiters can be woken when a record they
//! wait for is completed or released by this process (changes made by another process are seen
//! when the wait runs out).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::sync::Notify;

/// Independent wake-up channels, so completing one key wakes few waiters of other keys.
const SHARDS: usize = 64;

pub(crate) struct Changes {
    shards: Box<[Notify]>,
    hasher: RandomState,
}

impl Changes {
    pub(crate) fn new() -> Self {
        Changes {
            shards: (0..SHARDS).map(|_| Notify::new()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, scope: &str, key: &str) -> &Notify {
        let hash = self.hasher.hash_one((scope, key));
        // SHARDS is a power of two; the mask keeps the index in range.
        &self.shards[(hash as usize) & (SHARDS - 1)]
    }

    /// `(scope, key)` changed: wake its waiters (and, spuriously, a few others).
    pub(crate) fn notify(&self, scope: &str, key: &str) {
        self.shard(scope, key).notify_waiters();
    }

    /// Waits for a change of `(scope, key)` in this process, or `max_wait`.
    pub(crate) async fn wait(&self, scope: &str, key: &str, max_wait: Duration) {
        let notified = self.shard(scope, key).notified();
        let _ = tokio::time::timeout(max_wait, notified).await;
    }
}
