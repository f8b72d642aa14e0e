//! Owner ids: who made a claim.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one attempt to run a call. Unique across processes, forked children included
/// (64 random bits per process plus a per-process counter), so a store can tell "my own claim,
/// retried" from "someone else's claim".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerId(u128);

impl OwnerId {
    /// A fresh owner id, never returned before by this process or any other.
    ///
    /// The per-process random part is drawn again whenever the process id changes: a child
    /// created by `fork` inherits its parent's memory, counter and seed included, and would
    /// otherwise mint the very ids its parent mints next. Checking the process id costs one
    /// `getpid` per id.
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = process_seed();
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        OwnerId((u128::from(seed) << 64) | u128::from(count))
    }

    /// Rebuilds an owner id read back from a store.
    pub const fn from_u128(value: u128) -> Self {
        OwnerId(value)
    }

    /// The id as a number, for stores that persist it.
    pub const fn as_u128(&self) -> u128 {
        self.0
    }
}

/// The random half of this process's owner ids, drawn once per process id.
///
/// The seed is published before the pid it belongs to (release/acquire), so a thread that
/// sees the current pid also sees its seed. Two threads that both notice a new pid both draw
/// a seed; either is fine, since the counter keeps ids apart within one process.
fn process_seed() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    // 0 is never a process id, so a fresh process always draws a seed first.
    static SEEDED_FOR_PID: AtomicU64 = AtomicU64::new(0);
    let pid = u64::from(std::process::id());
    if SEEDED_FOR_PID.load(Ordering::Acquire) == pid {
        return SEED.load(Ordering::Relaxed);
    }
    let seed = random_seed(pid);
    SEED.store(seed, Ordering::Relaxed);
    SEEDED_FOR_PID.store(pid, Ordering::Release);
    seed
}

impl Default for OwnerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerId({:032x})", self.0)
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// 64 bits that differ between processes, from the standard library's randomly keyed hasher
/// mixed with the process id and the clock (no extra dependency for randomness). A forked
/// child's hasher keys start as a copy of its parent's, so the pid and the clock are what
/// set the two apart.
fn random_seed(pid: u64) -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(pid);
    if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}
