//! Reading the claim statement's row (`claim.sql`) as a decision. The statement has already
//! checked the stored record (its `unreadable` column); what it found wrong is an error here,
//! never "absent", so a damaged row cannot cause a second execution.

use std::time::Duration;

use bytes::Bytes;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::postgres::types::PgInterval;

use crate::error::Error;
use crate::store::encoding::{COMPLETED, IN_PROGRESS, stored_epoch};
use crate::store::{Claim, ClaimRequest, Lease, Record};

// Column positions in the claim statement's result.
/// The new claim's epoch; NULL unless the statement acquired.
const COL_ACQUIRED: usize = 0;
// The rest describe the record as the statement's snapshot saw it; all NULL without one.
const COL_EPOCH: usize = 1;
const COL_STATE: usize = 2;
const COL_SAME_FINGERPRINT: usize = 3;
const COL_PAYLOAD: usize = 4;
/// The lease's deadline minus now, an interval.
const COL_LEASE_LEFT: usize = 5;
/// Whether the request's owner may take the record over.
const COL_TAKEABLE: usize = 6;
/// The expiry minus now, an interval.
const COL_EXPIRES_IN: usize = 7;
/// Why the record cannot be read; NULL when it can.
const COL_UNREADABLE: usize = 8;

/// What one run of the claim statement decided.
pub(super) enum Step {
    Decided(Claim),
    /// The statement's snapshot was stale: run it again.
    Retry,
}

/// Turns the claim statement's row into a decision.
pub(super) fn decide(request: &ClaimRequest<'_>, row: &PgRow) -> Result<Step, Error> {
    let scope = request.scope;
    let acquired: Option<i64> = column(scope, row, COL_ACQUIRED)?;
    if acquired.is_some() {
        let epoch = epoch_column(scope, acquired)?;
        return Ok(Step::Decided(Claim::Acquired(Lease::new(
            request.scope,
            request.key,
            request.owner,
            epoch,
        ))));
    }
    let state: Option<String> = column(scope, row, COL_STATE)?;
    // Checked first: an unreadable row is never taken over, and never taken for absent.
    let unreadable: Option<String> = column(scope, row, COL_UNREADABLE)?;
    if let Some(reason) = unreadable {
        let epoch: Option<i64> = column(scope, row, COL_EPOCH)?;
        return Err(Error::decode(
            scope,
            format!(
                "{reason} (state {:?}, epoch {})",
                state.as_deref().unwrap_or("NULL"),
                epoch.map_or_else(|| String::from("NULL"), |epoch| epoch.to_string())
            ),
        ));
    }
    // No row in the snapshot although the upsert found one (inserted since), or a row the
    // upsert could have taken over but did not (changed since): decide again.
    let takeable: Option<bool> = column(scope, row, COL_TAKEABLE)?;
    let Some(state) = state.filter(|_| takeable != Some(true)) else {
        return Ok(Step::Retry);
    };
    let epoch: Option<i64> = column(scope, row, COL_EPOCH)?;
    let same_fingerprint: Option<bool> = column(scope, row, COL_SAME_FINGERPRINT)?;
    let claim = match state.as_str() {
        COMPLETED => {
            if same_fingerprint != Some(true) {
                Claim::PayloadMismatch
            } else {
                let payload: Option<Vec<u8>> = column(scope, row, COL_PAYLOAD)?;
                let payload = payload
                    .ok_or_else(|| Error::decode(scope, "a completed record has no payload"))?;
                let left: Option<PgInterval> = column(scope, row, COL_EXPIRES_IN)?;
                let left = left.ok_or_else(|| Error::decode(scope, "a record has no expiry"))?;
                Claim::Completed(Record {
                    payload: Bytes::from(payload),
                    epoch: epoch_column(scope, epoch)?,
                    expires_in: Some(interval_duration(&left)),
                })
            }
        }
        IN_PROGRESS => {
            if same_fingerprint != Some(true) {
                Claim::PayloadMismatch
            } else {
                let left: Option<PgInterval> = column(scope, row, COL_LEASE_LEFT)?;
                let left = left.ok_or_else(|| {
                    Error::decode(scope, "an in-progress record has no lease deadline")
                })?;
                Claim::InFlight {
                    retry_after: interval_duration(&left).max(Duration::from_micros(1)),
                }
            }
        }
        other => {
            return Err(Error::decode(
                scope,
                format!("unknown record state {other:?}"),
            ));
        }
    };
    Ok(Step::Decided(claim))
}

/// A difference of two timestamps as a duration (negative: zero). It has no months; days
/// count 24 hours.
fn interval_duration(interval: &PgInterval) -> Duration {
    let micros = i64::from(interval.days)
        .saturating_mul(86_400_000_000)
        .saturating_add(interval.microseconds);
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn column<'r, T>(scope: &str, row: &'r PgRow, index: usize) -> Result<T, Error>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index)
        .map_err(|error| Error::decode(scope, error))
}

/// A stored epoch, which the claim reads only from rows that passed its checks.
fn epoch_column(scope: &str, epoch: Option<i64>) -> Result<u64, Error> {
    let epoch = epoch.ok_or_else(|| Error::decode(scope, "the stored epoch is NULL"))?;
    stored_epoch(scope, epoch)
}
