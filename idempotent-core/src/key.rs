//! Deterministic idempotency keys and request fingerprints.
//!
//! A key is SHA-256 over a canonical, self-delimiting encoding of a namespace and each key part,
//! in order, written as 64 lowercase hex characters. Every value's encoding starts with a type
//! tag and carries its own length, so no two different inputs share an encoding: `("ab", "c")`
//! and `("a", "bc")` hash differently, and so do `Some(0)` and `0`.
//!
//! The encoding is a persisted format: keys written by one version of this crate must be found
//! by the next. It is pinned by golden tests (`tests/tests/key_format.rs`); changing it needs a new
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
//!
//! Integers are encoded by value, so changing a parameter from `u32` to `u64` keeps its keys.

mod python;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use python::generate_idempotency_key;

const KEY_DOMAIN: &[u8] = b"idempotent-key/v1\0";
const FINGERPRINT_DOMAIN: &[u8] = b"idempotent-fingerprint/v1\0";

/// A value that can be part of an idempotency key or a request fingerprint.
///
/// Implemented for types whose encoding is the same on every retry and in every process:
/// integers, floats, `bool`, `char`, strings, `Option`, `Vec`, slices, arrays, `VecDeque`,
/// tuples up to 12, `BTreeMap`, `BTreeSet`, `Uuid` (feature `uuid`) and references or smart
/// pointers to those. It is deliberately not implemented for timestamps (`SystemTime`,
/// `Instant`, chrono and time types), which change on every retry, nor for `HashMap` and
/// `HashSet`, whose iteration order differs between processes.
///
/// Implement it for your own types by writing their fields in a fixed order:
///
/// ```
/// use idempotent_core::{KeyPart, KeyWriter};
///
/// struct OrderId(u64);
/// struct LineItem { sku: String, quantity: u32 }
///
/// impl KeyPart for OrderId {
///     fn write_key_part(&self, out: &mut KeyWriter<'_>) {
///         self.0.write_key_part(out);
///     }
/// }
///
/// impl KeyPart for LineItem {
///     fn write_key_part(&self, out: &mut KeyWriter<'_>) {
///         // A tuple is length-prefixed, so adding a field later changes every key: that is
///         // what you want when the field changes the meaning of the request.
///         (&self.sku, self.quantity).write_key_part(out);
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of an idempotency key",
    label = "not a `KeyPart`",
    note = "a key part must encode the same way on every retry and in every process",
    note = "timestamps (`SystemTime`, `Instant`, chrono, time) change on every retry and random values on every call; `HashMap`/`HashSet` iterate in a different order in every process (use `BTreeMap`/`BTreeSet`)",
    note = "if `{Self}` is your own type, implement `idempotent_core::KeyPart` for it"
)]
pub trait KeyPart {
    /// Writes the canonical encoding of `self`.
    fn write_key_part(&self, out: &mut KeyWriter<'_>);
}

/// The sink a [`KeyPart`] writes its canonical encoding into.
///
/// Every method writes a self-delimiting item (type tag, length where needed, content), so a
/// sequence of calls can never be confused with a different sequence.
pub struct KeyWriter<'a> {
    hasher: &'a mut Sha256,
}

impl fmt::Debug for KeyWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyWriter").finish_non_exhaustive()
    }
}

impl KeyWriter<'_> {
    fn tag(&mut self, tag: u8) {
        self.hasher.update([tag]);
    }

    fn len(&mut self, len: usize) {
        self.hasher.update((len as u64).to_be_bytes());
    }

    /// Writes an unsigned integer (any width encodes the same for the same value).
    pub fn write_unsigned(&mut self, value: u128) {
        self.tag(b'+');
        self.hasher.update(value.to_be_bytes());
    }

    /// Writes a signed integer (any width encodes the same for the same value).
    pub fn write_signed(&mut self, value: i128) {
        if value >= 0 {
            self.write_unsigned(value.unsigned_abs());
        } else {
            self.tag(b'-');
            self.hasher.update(value.to_be_bytes());
        }
    }

    /// Writes a `bool`.
    pub fn write_bool(&mut self, value: bool) {
        self.hasher.update([b'b', u8::from(value)]);
    }

    /// Writes a `char`.
    pub fn write_char(&mut self, value: char) {
        self.tag(b'c');
        self.hasher.update(u32::from(value).to_be_bytes());
    }

    /// Writes a float. `-0.0` is written as `0.0` and every NaN as the same NaN, so values that
    /// compare equal (and all NaNs) share an encoding.
    pub fn write_float(&mut self, value: f64) {
        let canonical = if value == 0.0 {
            0.0f64
        } else if value.is_nan() {
            f64::NAN
        } else {
            value
        };
        self.tag(b'f');
        self.hasher.update(canonical.to_bits().to_be_bytes());
    }

    /// Writes a string.
    pub fn write_str(&mut self, value: &str) {
        self.tag(b's');
        self.len(value.len());
        self.hasher.update(value.as_bytes());
    }

    /// Writes raw bytes as a length-prefixed blob (distinct from a string of the same bytes).
    pub fn write_bytes(&mut self, value: &[u8]) {
        self.tag(b'x');
        self.len(value.len());
        self.hasher.update(value);
    }

    /// Writes `None`.
    pub fn write_none(&mut self) {
        self.tag(b'N');
    }

    /// Writes `Some(value)`.
    pub fn write_some(&mut self, value: &(impl KeyPart + ?Sized)) {
        self.tag(b'S');
        value.write_key_part(self);
    }

    /// Writes a sequence header; follow it with exactly `len` elements.
    pub fn begin_seq(&mut self, len: usize) {
        self.tag(b'[');
        self.len(len);
    }

    /// Writes a tuple header; follow it with exactly `arity` elements.
    pub fn begin_tuple(&mut self, arity: usize) {
        self.tag(b'(');
        self.len(arity);
    }

    /// Writes a map header; follow it with exactly `len` key/value pairs, in a deterministic
    /// order.
    pub fn begin_map(&mut self, len: usize) {
        self.tag(b'{');
        self.len(len);
    }

    /// Writes a 16-byte UUID.
    pub fn write_uuid_bytes(&mut self, bytes: [u8; 16]) {
        self.tag(b'U');
        self.hasher.update(bytes);
    }
}

macro_rules! unsigned_key_part {
    ($($t:ty),*) => {$(
        impl KeyPart for $t {
            #[inline]
            fn write_key_part(&self, out: &mut KeyWriter<'_>) {
                out.write_unsigned(u128::from(*self));
            }
        }
    )*};
}
unsigned_key_part!(u8, u16, u32, u64, u128);

macro_rules! signed_key_part {
    ($($t:ty),*) => {$(
        impl KeyPart for $t {
            #[inline]
            fn write_key_part(&self, out: &mut KeyWriter<'_>) {
                out.write_signed(i128::from(*self));
            }
        }
    )*};
}
signed_key_part!(i8, i16, i32, i64, i128);

impl KeyPart for usize {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        // usize is at most 64 bits on every supported target.
        out.write_unsigned(*self as u128);
    }
}

impl KeyPart for isize {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_signed(*self as i128);
    }
}

impl KeyPart for bool {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_bool(*self);
    }
}

impl KeyPart for char {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_char(*self);
    }
}

impl KeyPart for f64 {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_float(*self);
    }
}

impl KeyPart for f32 {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_float(f64::from(*self));
    }
}

impl KeyPart for str {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_str(self);
    }
}

impl KeyPart for String {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_str(self);
    }
}

impl KeyPart for Cow<'_, str> {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_str(self);
    }
}

impl KeyPart for () {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.begin_tuple(0);
    }
}

impl<T: KeyPart> KeyPart for Option<T> {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        match self {
            None => out.write_none(),
            Some(value) => out.write_some(value),
        }
    }
}

impl<T: KeyPart> KeyPart for [T] {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.begin_seq(self.len());
        for item in self {
            item.write_key_part(out);
        }
    }
}

impl<T: KeyPart, const N: usize> KeyPart for [T; N] {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        self.as_slice().write_key_part(out);
    }
}

impl<T: KeyPart> KeyPart for Vec<T> {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        self.as_slice().write_key_part(out);
    }
}

impl<T: KeyPart> KeyPart for VecDeque<T> {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.begin_seq(self.len());
        for item in self {
            item.write_key_part(out);
        }
    }
}

impl<T: KeyPart> KeyPart for BTreeSet<T> {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.begin_seq(self.len());
        for item in self {
            item.write_key_part(out);
        }
    }
}

impl<K: KeyPart, V: KeyPart> KeyPart for BTreeMap<K, V> {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.begin_map(self.len());
        for (key, value) in self {
            key.write_key_part(out);
            value.write_key_part(out);
        }
    }
}

macro_rules! forward_key_part {
    ($($ptr:ty),*) => {$(
        impl<T: KeyPart + ?Sized> KeyPart for $ptr {
            #[inline]
            fn write_key_part(&self, out: &mut KeyWriter<'_>) {
                (**self).write_key_part(out);
            }
        }
    )*};
}
forward_key_part!(&T, &mut T, Box<T>, Rc<T>, Arc<T>);

macro_rules! tuple_key_part {
    ($(($($name:ident . $idx:tt),+))*) => {$(
        impl<$($name: KeyPart),+> KeyPart for ($($name,)+) {
            fn write_key_part(&self, out: &mut KeyWriter<'_>) {
                out.begin_tuple([$($idx),+].len());
                $(self.$idx.write_key_part(out);)+
            }
        }
    )*};
}
tuple_key_part! {
    (A.0)
    (A.0, B.1)
    (A.0, B.1, C.2)
    (A.0, B.1, C.2, D.3)
    (A.0, B.1, C.2, D.3, E.4)
    (A.0, B.1, C.2, D.3, E.4, F.5)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7, I.8)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7, I.8, J.9)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7, I.8, J.9, K.10)
    (A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7, I.8, J.9, K.10, L.11)
}

#[cfg(feature = "uuid")]
impl KeyPart for uuid::Uuid {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_uuid_bytes(self.into_bytes());
    }
}

/// A 64-character lowercase hex SHA-256 idempotency key, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    hex: [u8; 64],
}

impl IdempotencyKey {
    /// Starts a key in `namespace`; add parts with [`KeyBuilder::part`].
    ///
    /// ```
    /// use idempotent_core::key::IdempotencyKey;
    ///
    /// let key = IdempotencyKey::builder("orders.charge").part(&42u64).part("capture").finish();
    /// assert_eq!(key.as_str().len(), 64);
    /// let again = IdempotencyKey::builder("orders.charge").part(&42u32).part("capture").finish();
    /// assert_eq!(key, again); // integers encode by value, whatever their width
    /// ```
    pub fn builder(namespace: &str) -> KeyBuilder {
        let mut hasher = Sha256::new();
        hasher.update(KEY_DOMAIN);
        KeyWriter {
            hasher: &mut hasher,
        }
        .write_str(namespace);
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

/// Builds an [`IdempotencyKey`] from a namespace and ordered parts.
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
    fn namespace_scopes_the_key() {
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
