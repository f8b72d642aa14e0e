//! The stored form of a completed call's result (a persisted format).
//!
//! A store keeps a payload as opaque bytes; the engine writes and reads it in this format: one
//! format byte, then the content.
//!
//! | first byte | content |
//! |---|---|
//! | `0x01` | a success: the value as JSON |
//! | `0x02` | a cached error: the error as JSON |
//! | `0x03` | raw bytes, stored and replayed as they are (such as a recorded HTTP response) |
//!
//! Payloads written by one version of this crate are read by the next: the format is pinned by
//! golden tests, and a new kind of content gets a new first byte, never a change to an
//! existing one. Hand-rolled flows that record a result themselves (such as
//! `PostgresStore::complete_in`, feature `postgres`) build payloads with
//! [`encode_ok`], so that calls replay them.
//!
//! ```
//! use idempotent_core::payload::{self, Payload};
//!
//! let stored = payload::encode_ok(&"shipped")?;
//! assert_eq!(&stored[..], b"\x01\"shipped\"");
//! assert_eq!(Payload::parse(&stored), Some(Payload::Ok(b"\"shipped\"")));
//! let raw = payload::encode_raw(b"\x00\xff");
//! assert_eq!(Payload::parse(&raw), Some(Payload::Raw(b"\x00\xff")));
//! # Ok::<(), idempotent_core::Error>(())
//! ```

mod lossless;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The first byte of a success stored as JSON.
pub const OK_JSON: u8 = 0x01;
/// The first byte of a cached error stored as JSON.
pub const ERR_JSON: u8 = 0x02;
/// The first byte of raw bytes.
pub const RAW: u8 = 0x03;

/// A stored payload, parsed into its kind and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload<'a> {
    /// A success: the value as JSON.
    Ok(&'a [u8]),
    /// A cached error: the error as JSON.
    Err(&'a [u8]),
    /// Raw bytes.
    Raw(&'a [u8]),
}

impl<'a> Payload<'a> {
    /// Reads the format byte; `None` for an empty payload or an unknown format byte (a
    /// record that cannot be read, which a call reports as [`Error::Decode`], never as absent).
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        match payload.split_first()? {
            (&OK_JSON, json) => Some(Payload::Ok(json)),
            (&ERR_JSON, json) => Some(Payload::Err(json)),
            (&RAW, bytes) => Some(Payload::Raw(bytes)),
            _ => None,
        }
    }

    /// [`parse`](Self::parse), or the `Error::Decode` a call reports for a record in `scope`.
    pub(crate) fn parse_in(scope: &str, payload: &'a [u8]) -> Result<Self, Error> {
        Self::parse(payload).ok_or_else(|| match payload.first() {
            None => Error::decode(scope, "empty payload"),
            Some(tag) => Error::decode(scope, format!("unknown payload format {tag:#04x}")),
        })
    }
}

/// A success, stored as JSON (`0x01`).
///
/// Fails with [`Error::Encode`] when the value cannot be serialized, or when JSON would not
/// give it back exactly: a `Some` holding `()`, `None`, a unit struct or a non-finite float is
/// written as `null` and would be read back as `None`.
pub fn encode_ok<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    encode_json(OK_JSON, value)
}

/// A cached error, stored as JSON (`0x02`), with the checks of [`encode_ok`].
pub fn encode_err<E: Serialize + ?Sized>(error: &E) -> Result<Bytes, Error> {
    encode_json(ERR_JSON, error)
}

/// Raw bytes, stored as they are (`0x03`).
pub fn encode_raw(bytes: &[u8]) -> Bytes {
    let mut payload = BytesMut::with_capacity(1 + bytes.len());
    payload.put_u8(RAW);
    payload.put_slice(bytes);
    payload.freeze()
}

fn encode_json<T: Serialize + ?Sized>(tag: u8, value: &T) -> Result<Bytes, Error> {
    lossless::check(value).map_err(|source| Error::Encode {
        source: source.into(),
    })?;
    let mut buffer = BytesMut::with_capacity(64).writer();
    buffer.get_mut().put_u8(tag);
    serde_json::to_writer(&mut buffer, value).map_err(|source| Error::Encode {
        source: source.into(),
    })?;
    Ok(buffer.into_inner().freeze())
}

fn decode_json<V: DeserializeOwned>(scope: &str, json: &[u8]) -> Result<V, Error> {
    serde_json::from_slice(json).map_err(|source| Error::decode(scope, source))
}

/// How a body's result becomes a stored payload and back: the part of a call that must know
/// the result's type.
pub(crate) trait Codec<T, E> {
    /// `None`: do not store this result (release the key instead).
    fn encode(result: &Result<T, E>) -> Option<Result<Bytes, Error>>;
    fn decode(scope: &str, payload: &[u8]) -> Result<Result<T, E>, Error>;

    /// Encodes, then checks that the payload decodes again. A value that JSON gives back as
    /// something that does not decode (a NaN float becomes `null`) would otherwise be stored
    /// and then fail every replay until the ttl ends; this way the caller gets
    /// `Error::Encode` and the key is released instead.
    fn encode_checked(result: &Result<T, E>) -> Option<Result<Bytes, Error>> {
        Self::encode(result).map(|encoded| {
            let payload = encoded?;
            match Self::decode("", &payload) {
                Ok(_) => Ok(payload),
                Err(Error::Decode { source, .. }) => Err(Error::Encode {
                    source: format!(
                        "the result does not decode back from its stored form: {source}"
                    )
                    .into(),
                }),
                Err(other) => Err(other),
            }
        })
    }
}

/// Stores successes only, as JSON.
pub(crate) struct OkOnly;
/// Stores successes and errors, as JSON.
pub(crate) struct OkAndErr;

impl<T: Serialize + DeserializeOwned, E> Codec<T, E> for OkOnly {
    fn encode(result: &Result<T, E>) -> Option<Result<Bytes, Error>> {
        match result {
            Ok(value) => Some(encode_ok(value)),
            Err(_) => None,
        }
    }

    fn decode(scope: &str, payload: &[u8]) -> Result<Result<T, E>, Error> {
        match Payload::parse_in(scope, payload)? {
            Payload::Ok(json) => decode_json(scope, json).map(Ok),
            Payload::Err(_) => Err(Error::decode(
                scope,
                "the record holds a cached error, but this call does not cache errors",
            )),
            Payload::Raw(_) => Err(Error::decode(
                scope,
                "the record holds raw bytes, but this call stores JSON",
            )),
        }
    }
}

impl<T, E> Codec<T, E> for OkAndErr
where
    T: Serialize + DeserializeOwned,
    E: Serialize + DeserializeOwned,
{
    fn encode(result: &Result<T, E>) -> Option<Result<Bytes, Error>> {
        Some(match result {
            Ok(value) => encode_ok(value),
            Err(error) => encode_err(error),
        })
    }

    fn decode(scope: &str, payload: &[u8]) -> Result<Result<T, E>, Error> {
        match Payload::parse_in(scope, payload)? {
            Payload::Err(json) => decode_json(scope, json).map(Err),
            _ => <OkOnly as Codec<T, E>>::decode(scope, payload),
        }
    }
}
