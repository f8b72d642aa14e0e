//! Deadline arithmetic shared by the stores, so that every store means the same by a duration.
//!
//! A duration is capped at [`FOREVER`] (a ttl or lease of `Duration::MAX` means "forever", and
//! no store's clock arithmetic may overflow on it), and a store that counts in whole
//! milliseconds rounds up, so a sub-millisecond lease still lasts.

use std::time::Duration;
#[cfg(feature = "sqlite")]
use std::time::{SystemTime, UNIX_EPOCH};

/// How far away "forever" is: 100 years, later than any record can matter and far below what
/// every store's clock arithmetic holds (Lua numbers are exact below 2^53 ms).
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `duration`, at most [`FOREVER`].
pub(crate) fn capped(duration: Duration) -> Duration {
    duration.min(FOREVER)
}

#[cfg(any(feature = "sqlite", feature = "redis"))]
/// Whole milliseconds, rounded up and capped at [`FOREVER`].
pub(crate) fn millis_ceil(duration: Duration) -> u64 {
    let duration = capped(duration);
    let whole = duration.as_millis() + u128::from(duration.subsec_nanos() % 1_000_000 != 0);
    // At most FOREVER: fits.
    u64::try_from(whole).unwrap_or(u64::MAX)
}

#[cfg(feature = "postgres")]
/// Whole microseconds, capped at [`FOREVER`].
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(capped(duration).as_micros()).unwrap_or(i64::MAX)
}

#[cfg(feature = "sqlite")]
/// The system clock in Unix milliseconds, or `None` before 1970.
pub(crate) fn unix_millis_now() -> Option<i64> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

#[cfg(feature = "sqlite")]
/// `now + after` in Unix milliseconds (see [`millis_ceil`]).
pub(crate) fn unix_millis_after(now: i64, after: Duration) -> i64 {
    now.saturating_add(i64::try_from(millis_ceil(after)).unwrap_or(i64::MAX))
}

#[cfg(feature = "sqlite")]
/// The time from `now` until `deadline`, both Unix milliseconds; zero once it has passed.
pub(crate) fn millis_until(now: i64, deadline: i64) -> Duration {
    Duration::from_millis(u64::try_from(deadline.saturating_sub(now)).unwrap_or(0))
}

#[cfg(all(test, feature = "sqlite", feature = "postgres", feature = "redis"))]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_and_cap() {
        assert_eq!(millis_ceil(Duration::ZERO), 0);
        assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(1500)), 1500);
        assert_eq!(millis_ceil(Duration::MAX), 3_153_600_000_000);
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(micros(Duration::MAX), 3_153_600_000_000_000);
        assert_eq!(unix_millis_after(1_000, Duration::from_micros(300)), 1_001);
        assert_eq!(unix_millis_after(i64::MAX - 1, Duration::MAX), i64::MAX);
        assert_eq!(millis_until(1_000, 1_250), Duration::from_millis(250));
        assert_eq!(millis_until(1_000, 900), Duration::ZERO);
    }
}
