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
    value.serialize(Walk)
}

/// Walks a whole value, checking each `Some` it meets.
struct Walk;

/// Answers whether a value is written as JSON `null`, looking no deeper than that needs.
struct IsNull;

macro_rules! leaves {
    ($ok:expr; $($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<Self::Ok, Self::Error> {
            Ok($ok)
        })*
    };
}

impl ser::Serializer for Walk {
    type Ok = ();
    type Error = Lossy;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    leaves!((); serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str));

    fn serialize_none(self) -> Result<(), Lossy> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Lossy> {
        if value.serialize(IsNull)? {
            return Err(Lossy(
                "a `Some` whose value is written as JSON `null` (such as `Some(())`, \
                 `Some(None)` or `Some(f64::NAN)`) would be replayed as `None`"
                    .to_owned(),
            ));
        }
        value.serialize(Walk)
    }

    fn serialize_unit(self) -> Result<(), Lossy> {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Lossy> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Lossy> {
        value.serialize(Walk)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Lossy> {
        value.serialize(Walk)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Lossy> {
        Ok(Walk)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, Lossy> {
        Ok(Walk)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Lossy> {
        Ok(Walk)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Lossy> {
        Ok(Walk)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, Lossy> {
        Ok(Walk)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Lossy> {
        Ok(Walk)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Lossy> {
        Ok(Walk)
    }
}

/// The compound parts of [`Walk`]: every element, key and field is walked too.
macro_rules! walk_elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {
        $(impl ser::$trait for Walk {
            type Ok = ();
            type Error = Lossy;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Lossy> {
                value.serialize(Walk)
            }
            fn end(self) -> Result<(), Lossy> {
                Ok(())
            }
        })*
    };
}

walk_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for Walk {
    type Ok = ();
    type Error = Lossy;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Lossy> {
        key.serialize(Walk)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Lossy> {
        value.serialize(Walk)
    }
    fn end(self) -> Result<(), Lossy> {
        Ok(())
    }
}

impl ser::SerializeStruct for Walk {
    type Ok = ();
    type Error = Lossy;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Lossy> {
        value.serialize(Walk)
    }
    fn end(self) -> Result<(), Lossy> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Walk {
    type Ok = ();
    type Error = Lossy;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Lossy> {
        value.serialize(Walk)
    }
    fn end(self) -> Result<(), Lossy> {
        Ok(())
    }
}

impl ser::Serializer for IsNull {
    type Ok = bool;
    type Error = Lossy;
    // Compounds are written as `[...]` or `{...}`, never `null`: their parts are not looked at.
    type SerializeSeq = NotNull;
    type SerializeTuple = NotNull;
    type SerializeTupleStruct = NotNull;
    type SerializeTupleVariant = NotNull;
    type SerializeMap = NotNull;
    type SerializeStruct = NotNull;
    type SerializeStructVariant = NotNull;

    leaves!(false; serialize_bool(bool), serialize_i8(i8), serialize_i16(i16),
        serialize_i32(i32), serialize_i64(i64), serialize_i128(i128), serialize_u8(u8),
        serialize_u16(u16), serialize_u32(u32), serialize_u64(u64), serialize_u128(u128),
        serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]));

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
        value.serialize(IsNull)
    }

    fn serialize_unit(self) -> Result<bool, Lossy> {
        Ok(true)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<bool, Lossy> {
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
        value.serialize(IsNull)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<bool, Lossy> {
        Ok(false)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<NotNull, Lossy> {
        Ok(NotNull)
    }

    fn serialize_tuple(self, _: usize) -> Result<NotNull, Lossy> {
        Ok(NotNull)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<NotNull, Lossy> {
        Ok(NotNull)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<NotNull, Lossy> {
        Ok(NotNull)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<NotNull, Lossy> {
        Ok(NotNull)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<NotNull, Lossy> {
        Ok(NotNull)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<NotNull, Lossy> {
        Ok(NotNull)
    }
}

/// A compound seen by [`IsNull`]: its parts are skipped, and it is not `null`.
struct NotNull;

macro_rules! not_null_compounds {
    ($($trait:ident { $($method:ident($($arg:ty),*)),* }),* $(,)?) => {
        $(impl ser::$trait for NotNull {
            type Ok = bool;
            type Error = Lossy;
            $(fn $method<T: Serialize + ?Sized>(&mut self, $(_: $arg,)* _: &T) -> Result<(), Lossy> {
                Ok(())
            })*
            fn end(self) -> Result<bool, Lossy> {
                Ok(false)
            }
        })*
    };
}

not_null_compounds!(
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
