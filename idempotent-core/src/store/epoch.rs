//! Epochs: the fencing token of a claim, and the clock they are derived from.

#[cfg(doc)]
use crate::error::Error;

/// The epoch of a claim that acquires a record: above the record's previous epoch, and at
/// least `clock_micros`, the store's clock in microseconds since the Unix epoch.
///
/// Deriving epochs from the clock is what keeps them from repeating once a record is gone:
/// after a purge, a sweep or a restart of an in-memory store nothing remembers the previous
/// epoch, but every epoch issued before was at most the clock reading of its own claim plus
/// the number of claims that outran the clock, and the record lived at least one lease after
/// that. Custom stores that compute epochs in Rust call this; the Redis and SQL stores compute
/// the same formula on the server.
///
/// `None` when the previous epoch is already the largest `u64`: no later epoch exists, so
/// the record cannot be claimed again without repeating one; stores report it as
/// unreadable ([`Error::Decode`]).
///
/// ```
/// use idempotent_core::store::next_epoch;
///
/// assert_eq!(next_epoch(None, 1_700_000_000_000_000), Some(1_700_000_000_000_000));
/// assert_eq!(next_epoch(Some(41), 7), Some(42));
/// assert_eq!(next_epoch(Some(41), 1_000), Some(1_000));
/// assert_eq!(next_epoch(Some(u64::MAX), 7), None);
/// ```
pub fn next_epoch(previous: Option<u64>, clock_micros: u64) -> Option<u64> {
    match previous {
        Some(previous) => previous.checked_add(1).map(|next| next.max(clock_micros)),
        None => Some(clock_micros.max(1)),
    }
}

/// The system clock in microseconds since the Unix epoch, for [`next_epoch`] in stores whose
/// clock is this process's. A clock before 1970 reads as 0 (the previous epoch still counts).
pub fn system_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}
