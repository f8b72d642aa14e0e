//! Reading a stored row back in the SQL stores, validated: a row that does not decode is an
//! error, never "absent", so it cannot cause a second execution.
//!
//! Both stores select the same columns in the same order (SQLite's `select.sql`, PostgreSQL's
//! `inspect.sql`), with deadlines as integers: Unix milliseconds in SQLite, microseconds in
//! PostgreSQL.

use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use crate::error::Error;
use crate::store::decision::{Stored, StoredState};
use crate::store::encoding::{
    COMPLETED, IN_PROGRESS, RELEASED, fingerprint_from_bytes, owner_from_bytes, stored_epoch,
};

/// Column positions.
const COL_STATE: usize = 0;
const COL_OWNER: usize = 1;
const COL_EPOCH: usize = 2;
const COL_FINGERPRINT: usize = 3;
const COL_LEASE_UNTIL: usize = 4;
const COL_EXPIRES_AT: usize = 5;
const COL_PAYLOAD: usize = 6;

/// A decoded row: what the decision needs, deadlines in the store's integer time, and a
/// completed row's payload.
pub(crate) struct StoredRow {
    pub(crate) stored: Stored<i64>,
    pub(crate) payload: Option<Vec<u8>>,
}

/// A non-NULL column. Decoded through `Option`, because sqlx decodes a NULL as the type's
/// empty value (0, "", no bytes) in SQLite, which would make a damaged row look like a valid
/// one.
pub(crate) fn column<R, T>(row: &R, index: usize, name: &str, scope: &str) -> Result<T, Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    match row.try_get::<Option<T>, _>(index) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(Error::decode(scope, format!("column `{name}` is NULL"))),
        Err(source) => Err(Error::decode(scope, format!("column `{name}`: {source}"))),
    }
}

/// The store's names of its two deadline columns, for errors: `(lease_until, expires_at)`.
pub(crate) type DeadlineNames = (&'static str, &'static str);

pub(crate) fn decode_row<R>(
    row: &R,
    scope: &str,
    (lease_until, expires_at): DeadlineNames,
) -> Result<StoredRow, Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    let state: String = column(row, COL_STATE, "state", scope)?;
    let epoch = stored_epoch(scope, column(row, COL_EPOCH, "epoch", scope)?)?;
    let fingerprint: Vec<u8> = column(row, COL_FINGERPRINT, "fingerprint", scope)?;
    let fingerprint = fingerprint_from_bytes(scope, &fingerprint)?;
    let expires_at: i64 = column(row, COL_EXPIRES_AT, expires_at, scope)?;
    let (state, payload) = match state.as_str() {
        IN_PROGRESS => {
            let owner: Vec<u8> = column(row, COL_OWNER, "owner", scope)?;
            let in_progress = StoredState::InProgress {
                owner: owner_from_bytes(scope, &owner)?,
                lease_until: column(row, COL_LEASE_UNTIL, lease_until, scope)?,
            };
            (in_progress, None)
        }
        COMPLETED => (
            StoredState::Completed,
            Some(column(row, COL_PAYLOAD, "payload", scope)?),
        ),
        RELEASED => (StoredState::Released, None),
        other => {
            return Err(Error::decode(
                scope,
                format!("column `state`: unknown state {other:?}"),
            ));
        }
    };
    Ok(StoredRow {
        stored: Stored {
            state,
            epoch,
            fingerprint,
            expires_at,
        },
        payload,
    })
}
