//! Finds values that JSON would store as something else.
//!
//! A stored result is JSON, and JSON writes `None`, `()`, unit structs and non-finite floats
//! all as `null`. Inside an `Option` that is a loss: `Some(())`, `Some(None)` and
//! `Some(f64::NAN)` are written as `null` and read back as `None`, so a replay would return a
//! different value than the call that ran. [`check`] walks a value the way `serde_json` would
//! write it and refuses any `Some` whose content is written as `null`; the engine then fails
//! the call with `Error::Encode` and releases the key, instead of storing a result that no
//! replay reproduces. (A bare NaN is caught later: `null` does not decode as a float.)

use std::fmt;

use serde::ser::{self, Serialize};

/// Why a value cannot be stored exactly.
#[derive(Debug)]
pub(crate) struct Lossy(String);

impl fmt::Display for Lossy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Lossy {}

impl ser::Error for Lossy {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Lossy(message.to_string())
    }
}

/// `Ok` if every `Some` in `value` holds something JSON writes as other than `null`.
pub(crate) fn check<T: Serialize + ?Sized>(value: &T) -> Result<(), Lossy> {
    value.serialize(Probe).map(|_| ())
}

/// Walks a whole value the way `serde_json` writes it. Each step answers whether what it
/// walked is written as `null` (`Ok(true)`), which is what a `Some` needs to know of its
/// content, and refuses a `Some` whose content is.
struct Probe;

fn refused() -> Lossy {
    Lossy(
        "a `Some` whose value is written as JSON `null` (such as `Some(())`, `Some(None)` or \
         `Some(f64::NAN)`) would be replayed as `None`"
            .to_owned(),
    )
}

macro_rules! written_as {
    ($null:expr; $($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<bool, Lossy> {
            Ok($null)
        })*
    };
}

impl ser::Serializer for Probe {
    type Ok = bool;
    type Error = Lossy;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    written_as!(false; serialize_bool(bool), serialize_i8(i8), serialize_i16(i16),
        serialize_i32(i32), serialize_i64(i64), serialize_i128(i128), serialize_u8(u8),
        serialize_u16(u16), serialize_u32(u32), serialize_u64(u64), serialize_u128(u128),
        serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]));
    written_as!(true; serialize_unit_struct(&'static str));

    // serde_json writes NaN and the infinities as `null`.
    fn serialize_f32(self, value: f32) -> Result<bool, Lossy> {
        Ok(!value.is_finite())
    }

    fn serialize_f64(self, value: f64) -> Result<bool, Lossy> {
        Ok(!value.is_finite())
    }

    fn serialize_none(self) -> Result<bool, Lossy> {
        Ok(true)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<bool, Lossy> {
        if value.serialize(Probe)? {
            return Err(refused());
        }
        Ok(false)
    }

    fn serialize_unit(self) -> Result<bool, Lossy> {
        Ok(true)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<bool, Lossy> {
        Ok(false)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<bool, Lossy> {
        value.serialize(Probe)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<bool, Lossy> {
        // `{"Variant": value}`: not null, but its content is walked.
        value.serialize(Probe).map(|_| false)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Lossy> {
        Ok(Probe)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, Lossy> {
        Ok(Probe)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Lossy> {
        Ok(Probe)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Lossy> {
        Ok(Probe)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, Lossy> {
        Ok(Probe)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Lossy> {
        Ok(Probe)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Lossy> {
        Ok(Probe)
    }
}

/// The parts of a compound: each is walked; the compound itself (`[...]`, `{...}`) is never
/// `null`.
macro_rules! compound {
    ($($trait:ident { $($method:ident($($arg:ty),*)),* }),* $(,)?) => {
        $(impl ser::$trait for Probe {
            type Ok = bool;
            type Error = Lossy;
            $(fn $method<T: Serialize + ?Sized>(&mut self, $(_: $arg,)* value: &T) -> Result<(), Lossy> {
                value.serialize(Probe).map(|_| ())
            })*
            fn end(self) -> Result<bool, Lossy> {
                Ok(false)
            }
        })*
    };
}

compound!(
    SerializeSeq { serialize_element() },
    SerializeTuple { serialize_element() },
    SerializeTupleStruct { serialize_field() },
    SerializeTupleVariant { serialize_field() },
    SerializeMap { serialize_key(), serialize_value() },
    SerializeStruct { serialize_field(&'static str) },
    SerializeStructVariant { serialize_field(&'static str) },
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::check;

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Wrapper<T>(T);

    #[derive(Serialize)]
    struct Reply {
        id: u64,
        note: Option<Option<String>>,
    }

    #[test]
    fn values_json_keeps_pass() {
        check(&()).unwrap_or_else(|error| panic!("{error}"));
        check(&None::<()>).unwrap_or_else(|error| panic!("{error}"));
        check(&Some(0u8)).unwrap_or_else(|error| panic!("{error}"));
        check(&Some(false)).unwrap_or_else(|error| panic!("{error}"));
        check(&Some("")).unwrap_or_else(|error| panic!("{error}"));
        check(&Some(Vec::<()>::new())).unwrap_or_else(|error| panic!("{error}"));
        check(&Some(vec![()])).unwrap_or_else(|error| panic!("{error}"));
        check(&Some(Some(1u8))).unwrap_or_else(|error| panic!("{error}"));
        check(&Some(BTreeMap::<String, ()>::new())).unwrap_or_else(|error| panic!("{error}"));
        check(&Reply { id: 1, note: None }).unwrap_or_else(|error| panic!("{error}"));
        check(&Reply {
            id: 1,
            note: Some(Some(String::new())),
        })
        .unwrap_or_else(|error| panic!("{error}"));
        check(&Some(1.5f64)).unwrap_or_else(|error| panic!("{error}"));
    }

    #[test]
    fn some_of_a_null_is_refused_wherever_it_is() {
        assert!(check(&Some(())).is_err());
        assert!(check(&Some(None::<u8>)).is_err());
        assert!(check(&Some(Unit)).is_err());
        assert!(check(&Some(Wrapper(()))).is_err());
        assert!(check(&Some(Some(None::<u8>))).is_err());
        assert!(check(&Some(f64::NAN)).is_err());
        assert!(check(&Some(f32::INFINITY)).is_err());
        assert!(check(&vec![Some(()), None]).is_err());
        assert!(
            check(&Reply {
                id: 1,
                note: Some(None)
            })
            .is_err()
        );
        let mut map = BTreeMap::new();
        map.insert("k", Some(()));
        assert!(check(&map).is_err());
        assert!(check(&(1u8, Some(()))).is_err());
    }
}
