//! The shard maps' keys: `(scope, key)` with its keyed hash computed once per operation, and
//! looked up by borrowed parts without allocating or hashing again.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// An owned `(scope, key)` map key, carrying its keyed hash, that can be looked up by a
/// borrowed [`Lookup`] without allocating or hashing again.
pub(super) struct RecordKey {
    digest: u64,
    scope: Box<str>,
    key: Box<str>,
}

impl RecordKey {
    pub(super) fn new(digest: u64, scope: &str, key: &str) -> Self {
        RecordKey {
            digest,
            scope: scope.into(),
            key: key.into(),
        }
    }
}

/// A borrowed `(scope, key)` with its keyed hash.
pub(super) struct Lookup<'a> {
    pub(super) digest: u64,
    pub(super) scope: &'a str,
    pub(super) key: &'a str,
}

pub(super) trait KeyView {
    fn digest(&self) -> u64;
    fn view(&self) -> (&str, &str);
}

impl KeyView for RecordKey {
    fn digest(&self) -> u64 {
        self.digest
    }
    fn view(&self) -> (&str, &str) {
        (&self.scope, &self.key)
    }
}

impl KeyView for Lookup<'_> {
    fn digest(&self) -> u64 {
        self.digest
    }
    fn view(&self) -> (&str, &str) {
        (self.scope, self.key)
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for RecordKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest());
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.digest() == other.digest() && self.view() == other.view()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for RecordKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly like `dyn KeyView` for borrowed lookups to find it.
        state.write_u64(self.digest);
    }
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.view() == other.view()
    }
}

impl Eq for RecordKey {}

/// The shard maps' hasher: passes through the keyed SipHash already computed in
/// `MemoryStore::locate`, so each operation hashes its key once and a growing map never
/// rehashes strings. The digest comes from a randomly keyed hasher, so clients still cannot
/// choose keys that collide.
#[derive(Default)]
pub(super) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the key types; fold anything else in rather than drop it.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
