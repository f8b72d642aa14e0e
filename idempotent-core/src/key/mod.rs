//! Deterministic idempotency keys and request fingerprints.
//!
//! A key is SHA-256 over a canonical, self-delimiting encoding of a scope and each key part,
//! in order, written as 64 lowercase hex characters. Every value's encoding starts with a type
//! tag and carries its own length, so no two different inputs share an encoding: `("ab", "c")`
//! and `("a", "bc")` hash differently, and so do `Some(0)` and `0`.
//!
//! The encoding is a persisted format: keys written by one version of this crate must be found
//! by the next. It is pinned by golden tests; changing it needs a new
//! domain tag (`idempotent-key/v2`), never an in-place edit.
//!
//! | value | encoding |
//! |---|---|
//! | integer of any width, `>= 0` | `+` then the value as `u128`, 16 bytes big-endian |
//! | integer `< 0` | `-` then the value as `i128`, 16 bytes big-endian |
//! | `bool` | `b` then `0` or `1` |
//! | `char` | `c` then the scalar value, 4 bytes big-endian |
//! | `f32`/`f64` | `f` then the `f64` bits, 8 bytes big-endian (`-0.0` written as `0.0`, every NaN as one NaN) |
//! | string | `s`, byte length as 8 bytes big-endian, UTF-8 bytes |
//! | `None` / `Some(v)` | `N` / `S` then `v` |
//! | sequence, set | `[`, element count as 8 bytes big-endian, elements |
//! | tuple, `()` | `(`, arity as 8 bytes big-endian, elements |
//! | map | `{`, entry count as 8 bytes big-endian, key and value of each entry |
//! | `Uuid` (feature `uuid`) | `U` then its 16 bytes |
//! | struct with `#[derive(KeyPart)]` | as the tuple of its fields, in declaration order (a unit struct as `()`); with `#[key_part(transparent)]`, as its one field |
//! | enum variant with `#[derive(KeyPart)]` | `v`, the name's byte length as 8 bytes big-endian, the name's UTF-8 bytes, the field count as 8 bytes big-endian, the fields in declaration order ([`KeyWriter::begin_variant`]) |
//!
//! Integers are encoded by value, so changing a parameter from `u32` to `u64` keeps its keys.

mod fingerprint;
mod part;
mod python;

use std::fmt;

use sha2::{Digest, Sha256};

pub use fingerprint::{Fingerprint, FingerprintBuilder};
pub use part::{KeyPart, KeyWriter};
pub use python::generate_idempotency_key;

const KEY_DOMAIN: &[u8] = b"idempotent-key/v1\0";
const FINGERPRINT_DOMAIN: &[u8] = b"idempotent-fingerprint/v1\0";

/// A 64-character lowercase hex SHA-256 idempotency key, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    hex: [u8; 64],
}

impl IdempotencyKey {
    /// Starts a key in `scope`; add parts with [`KeyBuilder::part`].
    ///
    /// ```
    /// use idempotent_core::key::IdempotencyKey;
    ///
    /// let key = IdempotencyKey::builder("orders.charge").part(&42u64).part("capture").finish();
    /// assert_eq!(key.as_str().len(), 64);
    /// let again = IdempotencyKey::builder("orders.charge").part(&42u32).part("capture").finish();
    /// assert_eq!(key, again); // integers encode by value, whatever their width
    /// ```
    pub fn builder(scope: &str) -> KeyBuilder {
        let mut hasher = Sha256::new();
        hasher.update(KEY_DOMAIN);
        KeyWriter {
            hasher: &mut hasher,
        }
        .write_str(scope);
        KeyBuilder { hasher }
    }

    /// The key as 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        // Only ever filled from HEX_DIGITS, so this is ASCII; the fallback is unreachable.
        std::str::from_utf8(&self.hex).unwrap_or_default()
    }

    fn from_digest(digest: &[u8]) -> Self {
        let mut hex = [0u8; 64];
        hex_into(digest, &mut hex);
        IdempotencyKey { hex }
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey")
            .field(&self.as_str())
            .finish()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Builds an [`IdempotencyKey`] from a scope and ordered parts.
#[derive(Clone)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl fmt::Debug for KeyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyBuilder").finish_non_exhaustive()
    }
}

impl KeyBuilder {
    /// Appends one key part.
    #[must_use]
    pub fn part(mut self, part: &(impl KeyPart + ?Sized)) -> Self {
        self.push(part);
        self
    }

    /// Appends one key part in place.
    pub fn push(&mut self, part: &(impl KeyPart + ?Sized)) {
        part.write_key_part(&mut KeyWriter {
            hasher: &mut self.hasher,
        });
    }

    /// Finishes the key.
    pub fn finish(self) -> IdempotencyKey {
        IdempotencyKey::from_digest(&self.hasher.finalize())
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[&dyn Fn(&mut KeyBuilder)]) -> IdempotencyKey {
        let mut builder = IdempotencyKey::builder("ns");
        for part in parts {
            part(&mut builder);
        }
        builder.finish()
    }

    #[test]
    fn adjacent_strings_do_not_merge() {
        let ab_c = key(&[&|b| b.push("ab"), &|b| b.push("c")]);
        let a_bc = key(&[&|b| b.push("a"), &|b| b.push("bc")]);
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn option_and_value_differ() {
        let some = key(&[&|b| b.push(&Some(0u8))]);
        let bare = key(&[&|b| b.push(&0u8)]);
        let none = key(&[&|b| b.push(&None::<u8>)]);
        assert_ne!(some, bare);
        assert_ne!(some, none);
    }

    #[test]
    fn integers_encode_by_value() {
        assert_eq!(key(&[&|b| b.push(&7u8)]), key(&[&|b| b.push(&7i64)]));
        assert_ne!(key(&[&|b| b.push(&-1i8)]), key(&[&|b| b.push(&u128::MAX)]));
    }

    #[test]
    fn scope_is_part_of_the_key() {
        let a = IdempotencyKey::builder("a").part(&1u8).finish();
        let b = IdempotencyKey::builder("b").part(&1u8).finish();
        assert_ne!(a, b);
    }

    #[test]
    fn floats_canonicalise_zero_and_nan() {
        assert_eq!(key(&[&|b| b.push(&0.0f64)]), key(&[&|b| b.push(&-0.0f64)]));
        assert_eq!(
            key(&[&|b| b.push(&f64::NAN)]),
            key(&[&|b| b.push(&-f64::NAN)])
        );
        assert_eq!(key(&[&|b| b.push(&1.5f32)]), key(&[&|b| b.push(&1.5f64)]));
    }

    #[test]
    fn key_is_lowercase_hex() {
        let k = IdempotencyKey::builder("ns").finish();
        assert!(
            k.as_str()
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
    }
}
