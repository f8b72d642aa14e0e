//! [`KeyPart`]: the types a key or fingerprint can be built from, and their canonical
//! encoding (see the [module docs](super) for the table).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A value that can be part of an idempotency key or a request fingerprint.
///
/// Implemented for types whose encoding is the same on every retry and in every process:
/// integers, floats, `bool`, `char`, strings, `Option`, `Vec`, slices, arrays, `VecDeque`,
/// tuples up to 12, `BTreeMap`, `BTreeSet`, `Uuid` (feature `uuid`) and references or smart
/// pointers to those. It is deliberately not implemented for timestamps (`SystemTime`,
/// `Instant`, chrono and time types), which change on every retry, nor for `HashMap` and
/// `HashSet`, whose iteration order differs between processes.
///
/// Derive it for your own structs and enums with `#[derive(KeyPart)]` (feature `macros`, on by
/// default; the derive's documentation gives the encoding it writes), or implement it by
/// writing their fields in a fixed order:
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
    note = "if `{Self}` is your own type, add `#[derive(idempotent_core::KeyPart)]` to it, or implement `idempotent_core::KeyPart` for it"
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
    pub(super) hasher: &'a mut Sha256,
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

    /// Writes an enum variant header: the variant's name, then the number of fields that
    /// follow; follow it with exactly `fields` values, in declaration order.
    /// `#[derive(KeyPart)]` writes every variant this way, so a hand-written impl that calls
    /// it with the same name and fields encodes like the derived one.
    ///
    /// The name, not the variant's position, identifies it: reordering or inserting variants
    /// keeps every key, and two variants can never swap keys. Renaming a variant changes its
    /// keys (keep the old name with `#[key_part(rename = "Old")]` on a derived enum).
    pub fn begin_variant(&mut self, name: &str, fields: usize) {
        self.tag(b'v');
        self.len(name.len());
        self.hasher.update(name.as_bytes());
        self.len(fields);
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
