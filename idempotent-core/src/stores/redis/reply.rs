//! The scripts' replies, checked for shape: anything else is an error, never a guess.

use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{OwnerId, RecordState};
use crate::stores::redis_connection::store_error;

/// What a script answered, checked for shape.
#[derive(Debug)]
pub(super) enum Reply {
    Acquired(u64),
    Completed {
        epoch: u64,
        payload: Bytes,
        expires_in: Duration,
    },
    InFlight(Duration),
    Mismatch,
    Ok,
    Lost,
    Corrupt(String),
}

impl Reply {
    pub(super) fn parse(reply: Value) -> Result<Reply, Error> {
        let Value::Array(items) = reply else {
            return Err(store_error(format!("unexpected script reply {reply:?}")));
        };
        let mut items = items.into_iter();
        let (Some(Value::BulkString(tag)), first, second, third, None) = (
            items.next(),
            items.next(),
            items.next(),
            items.next(),
            items.next(),
        ) else {
            return Err(store_error("unexpected script reply shape"));
        };
        let reply = match (tag.as_slice(), first, second, third) {
            (b"acquired", Some(Value::Int(epoch)), None, None) => Reply::Acquired(epoch_of(epoch)?),
            (
                b"completed",
                Some(Value::Int(epoch)),
                Some(Value::BulkString(payload)),
                Some(Value::Int(left)),
            ) => Reply::Completed {
                epoch: epoch_of(epoch)?,
                payload: Bytes::from(payload),
                expires_in: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
            },
            (b"in_flight", Some(Value::Int(left)), None, None) => {
                Reply::InFlight(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
            }
            (b"mismatch", None, None, None) => Reply::Mismatch,
            (b"ok", None, None, None) => Reply::Ok,
            (b"lost", None, None, None) => Reply::Lost,
            (b"corrupt", Some(Value::BulkString(reason)), None, None) => {
                Reply::Corrupt(String::from_utf8_lossy(&reason).into_owned())
            }
            (b"corrupt", Some(Value::SimpleString(reason)), None, None) => Reply::Corrupt(reason),
            (tag, first, second, third) => {
                return Err(store_error(format!(
                    "unexpected script reply {:?} {first:?} {second:?} {third:?}",
                    String::from_utf8_lossy(tag)
                )));
            }
        };
        Ok(reply)
    }
}

fn epoch_of(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| store_error(format!("negative epoch {value} in reply")))
}

pub(super) fn unexpected(reply: &Reply) -> Error {
    store_error(format!("script reply {reply:?} does not fit the operation"))
}

pub(super) fn corrupt(scope: &str, record_key: &str, reason: &str) -> Error {
    Error::decode(
        scope,
        format!("redis record `{record_key}` is unreadable: {reason}"),
    )
}

/// What `record.lua` answered, checked for shape.
#[derive(Debug)]
pub(super) enum RecordReply {
    Absent,
    /// A forget that a live lease refused, with the time left on it.
    Refused(Duration),
    /// The record as it was (before a forget).
    Record(RecordState),
    Corrupt(String),
}

impl RecordReply {
    pub(super) fn parse(scope: &str, reply: Value) -> Result<RecordReply, Error> {
        let Value::Array(items) = reply else {
            return Err(store_error(format!("unexpected record reply {reply:?}")));
        };
        let reply = match items.as_slice() {
            [Value::BulkString(tag)] if tag == b"absent" => RecordReply::Absent,
            [Value::BulkString(tag), Value::Int(left)] if tag == b"in_flight" => {
                RecordReply::Refused(millis(*left))
            }
            [Value::BulkString(tag), Value::BulkString(reason)] if tag == b"corrupt" => {
                RecordReply::Corrupt(String::from_utf8_lossy(reason).into_owned())
            }
            [Value::BulkString(tag), Value::SimpleString(reason)] if tag == b"corrupt" => {
                RecordReply::Corrupt(reason.clone())
            }
            [
                Value::BulkString(tag),
                Value::BulkString(state),
                Value::Int(epoch),
                Value::BulkString(owner),
                Value::BulkString(fingerprint),
                Value::Int(lease_left),
                Value::Int(expires_in),
                Value::BulkString(payload),
            ] if tag == b"record" => {
                let epoch = epoch_of(*epoch)?;
                let expires_in = millis(*expires_in);
                let fingerprint = Fingerprint::from_digest(hex(scope, "fingerprint", fingerprint)?);
                RecordReply::Record(match state.as_slice() {
                    b"in_progress" => RecordState::InProgress {
                        owner: OwnerId::from_u128(u128::from_be_bytes(hex(scope, "owner", owner)?)),
                        epoch,
                        fingerprint,
                        lease_left: millis(*lease_left),
                        expires_in,
                    },
                    b"completed" => RecordState::Completed {
                        epoch,
                        fingerprint,
                        payload: Bytes::copy_from_slice(payload),
                        expires_in,
                    },
                    b"released" => RecordState::Released { epoch, expires_in },
                    other => {
                        return Err(Error::decode(
                            scope,
                            format!("unknown record state {:?}", String::from_utf8_lossy(other)),
                        ));
                    }
                })
            }
            _ => return Err(store_error(format!("unexpected record reply {items:?}"))),
        };
        Ok(reply)
    }
}

/// A count of milliseconds from a script; a negative one is zero.
fn millis(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

/// `N` bytes from their lowercase hex, as the scripts store owners and fingerprints.
fn hex<const N: usize>(scope: &str, field: &str, text: &[u8]) -> Result<[u8; N], Error> {
    let invalid = || Error::decode(scope, format!("stored {field} is not {N} bytes of hex"));
    if text.len() != 2 * N {
        return Err(invalid());
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .filter(|_| !c.is_ascii_uppercase())
        };
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => {
                *byte = u8::try_from(high * 16 + low).map_err(|_| invalid())?
            }
            _ => return Err(invalid()),
        }
    }
    Ok(bytes)
}
