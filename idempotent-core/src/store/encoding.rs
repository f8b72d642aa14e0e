//! How the stores that persist records write their fields, and one answer per fault, so that
//! the same damage is the same error in every store.
//!
//! | fault | error |
//! |---|---|
//! | a stored state that is none of the three | [`Error::Decode`] |
//! | a stored epoch that is negative or not a number | [`Error::Decode`] |
//! | a stored epoch at the largest value the store holds (no later claim could be fenced) | [`Error::Decode`] |
//! | a stored owner or fingerprint of the wrong length | [`Error::Decode`] |
//! | a lease whose epoch the store could never have issued | [`Error::LeaseLost`] |

// A kit: each store uses the items it needs.
#![cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]

use super::owner::OwnerId;
use crate::error::Error;
use crate::key::Fingerprint;

/// The stored name of a record in progress.
pub(crate) const IN_PROGRESS: &str = "in_progress";
/// The stored name of a completed record.
pub(crate) const COMPLETED: &str = "completed";
/// The stored name of a released record.
pub(crate) const RELEASED: &str = "released";

/// An owner id as stored in binary: its 128 bits, big-endian.
pub(crate) fn owner_bytes(owner: OwnerId) -> [u8; 16] {
    owner.as_u128().to_be_bytes()
}

/// A stored binary owner id.
pub(crate) fn owner_from_bytes(scope: &str, bytes: &[u8]) -> Result<OwnerId, Error> {
    <[u8; 16]>::try_from(bytes)
        .map(|bytes| OwnerId::from_u128(u128::from_be_bytes(bytes)))
        .map_err(|_| {
            Error::decode(
                scope,
                format!("stored owner is {} bytes, expected 16", bytes.len()),
            )
        })
}

/// A stored binary fingerprint.
pub(crate) fn fingerprint_from_bytes(scope: &str, bytes: &[u8]) -> Result<Fingerprint, Error> {
    <[u8; 32]>::try_from(bytes)
        .map(Fingerprint::from_digest)
        .map_err(|_| {
            Error::decode(
                scope,
                format!("stored fingerprint is {} bytes, expected 32", bytes.len()),
            )
        })
}

/// A stored signed 64-bit epoch; a negative one is unreadable.
pub(crate) fn stored_epoch(scope: &str, epoch: i64) -> Result<u64, Error> {
    u64::try_from(epoch)
        .map_err(|_| Error::decode(scope, format!("stored epoch {epoch} is negative")))
}

/// A new epoch as a signed 64-bit column. One that does not fit means the key's epochs ran
/// out: the record is unreadable, as when the decision itself finds no later epoch.
pub(crate) fn new_column_epoch(scope: &str, epoch: u64) -> Result<i64, Error> {
    i64::try_from(epoch).map_err(|_| {
        Error::decode(
            scope,
            "the record's epoch is at its maximum; no later claim could be fenced",
        )
    })
}

/// A lease's epoch as a signed 64-bit column; `None` for one no row can hold, so the store
/// never issued it and the lease is lost.
pub(crate) fn lease_column_epoch(epoch: u64) -> Option<i64> {
    i64::try_from(epoch).ok()
}
