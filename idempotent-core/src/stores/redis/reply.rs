//! The scripts' replies, checked for shape: anything else is an error, never a guess.

use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use crate::error::Error;
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
