//! [`Fingerprint`]: the digest of what a request received, compared on every retry.

use std::fmt;

use sha2::{Digest, Sha256};

use super::{FINGERPRINT_DOMAIN, IdempotencyKey, KeyPart, KeyWriter};

/// A SHA-256 digest of the request a key was first used with.
///
/// A retry with the same key but a different fingerprint is rejected with
/// [`Error::PayloadMismatch`](crate::Error::PayloadMismatch) instead of silently replaying a
/// result computed for other inputs. [`Fingerprint::NONE`] opts out: every request matches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of "no fingerprinted input": all zeros.
    pub const NONE: Fingerprint = Fingerprint([0; 32]);

    /// Wraps a 32-byte digest computed elsewhere (read back from a store, or made by an HTTP
    /// layer), as it is: no hashing. [`of_bytes`](Self::of_bytes) hashes.
    pub const fn from_digest(digest: [u8; 32]) -> Self {
        Fingerprint(digest)
    }

    /// SHA-256 of arbitrary bytes (under this crate's fingerprint domain tag).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        hasher.update(bytes);
        Fingerprint(hasher.finalize().into())
    }

    /// Starts a fingerprint over named fields.
    ///
    /// ```
    /// use idempotent_core::key::Fingerprint;
    ///
    /// let a = Fingerprint::builder().field("amount", &100u64).finish();
    /// let b = Fingerprint::builder().field("amount", &250u64).finish();
    /// assert_ne!(a, b);
    /// ```
    pub fn builder() -> FingerprintBuilder {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        FingerprintBuilder { hasher }
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        IdempotencyKey::from_digest(&self.0).as_str().to_owned()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

/// Builds a [`Fingerprint`] from named fields, in order.
#[derive(Clone)]
pub struct FingerprintBuilder {
    hasher: Sha256,
}

impl fmt::Debug for FingerprintBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FingerprintBuilder").finish_non_exhaustive()
    }
}

impl FingerprintBuilder {
    /// Appends a named field.
    #[must_use]
    pub fn field(mut self, name: &str, value: &(impl KeyPart + ?Sized)) -> Self {
        self.push(name, value);
        self
    }

    /// Appends a named field in place.
    pub fn push(&mut self, name: &str, value: &(impl KeyPart + ?Sized)) {
        let mut out = KeyWriter {
            hasher: &mut self.hasher,
        };
        out.write_str(name);
        value.write_key_part(&mut out);
    }

    /// Finishes the fingerprint.
    pub fn finish(self) -> Fingerprint {
        Fingerprint(self.hasher.finalize().into())
    }
}
