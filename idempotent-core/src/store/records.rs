//! One record by hand, for operators and tools: what [`IdempotencyStore::inspect`] reports
//! and how [`IdempotencyStore::forget`] decides, as pure functions for the stores that decide
//! in Rust.

use std::time::Duration;

use bytes::Bytes;

#[cfg(doc)]
use super::IdempotencyStore;
use super::decision::{Stored, StoredState};
use super::owner::OwnerId;
use crate::error::Error;
use crate::key::Fingerprint;

/// What a store holds for one `(scope, key)`, as [`IdempotencyStore::inspect`] reads it (and
/// [`IdempotencyStore::forget`] reports what it forgot).
///
/// Durations are on the store's clock, as of the read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordState {
    /// No record, or one past its ttl: the next call runs the body.
    Absent,
    /// Claimed by `owner`, whose body may be running. Duplicates wait or are told to retry
    /// while the lease is live; once it ran out, the next claim takes the key over.
    InProgress {
        /// Who holds the claim.
        owner: OwnerId,
        /// The claim's fencing token.
        epoch: u64,
        /// The fingerprint of the request that claimed it.
        fingerprint: Fingerprint,
        /// Time left on the lease: zero once it ran out.
        lease_left: Duration,
        /// Time left before the record's ttl ends.
        expires_in: Duration,
    },
    /// A finished call's result, replayed to every retry with the same fingerprint until the
    /// ttl ends.
    Completed {
        /// The epoch of the claim that completed it.
        epoch: u64,
        /// The fingerprint of the request that ran.
        fingerprint: Fingerprint,
        /// The stored result, as the store keeps it (see [`payload`](crate::payload) for
        /// reading one).
        payload: Bytes,
        /// Time left before the ttl ends.
        expires_in: Duration,
    },
    /// Given up (an error that was not cached, a cancelled call) or forgotten: the next call
    /// runs the body. Stores that keep such a record as a tombstone until its ttl ends report
    /// it; the in-memory store removes it at once and reports [`Absent`](Self::Absent).
    Released {
        /// The epoch of the claim that was given up.
        epoch: u64,
        /// Time left before the tombstone is removed.
        expires_in: Duration,
    },
}

impl RecordState {
    /// The record's epoch; `None` when there is no record.
    pub fn epoch(&self) -> Option<u64> {
        match self {
            RecordState::Absent => None,
            RecordState::InProgress { epoch, .. }
            | RecordState::Completed { epoch, .. }
            | RecordState::Released { epoch, .. } => Some(*epoch),
        }
    }
}

/// Whether [`IdempotencyStore::forget`] may forget a record that a live lease holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// Refuse with [`Error::InFlight`] while a live lease holds the record: its body may be
    /// running, and forgetting the claim would let a duplicate run the body a second time.
    UnlessLeased,
    /// Forget the record even while a live lease holds it. The holder's result is then not
    /// recorded (its completion fails with [`Error::LeaseLost`]), and a duplicate that arrives
    /// meanwhile runs the body while the holder may still be running it: for a holder known
    /// to be gone.
    EvenIfLeased,
}

/// What a forget does with the record it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForgetStep {
    /// Nothing to forget: no record, or a released one.
    Nothing,
    /// Turn the record into a released one (or remove it, where the epoch is kept elsewhere).
    Forget,
}

/// The forget decision for a record in `state`: what to do, or the refusal of a live lease.
pub(crate) fn forget_step(state: &RecordState, mode: Forget) -> Result<ForgetStep, Error> {
    match state {
        RecordState::Absent | RecordState::Released { .. } => Ok(ForgetStep::Nothing),
        RecordState::InProgress { lease_left, .. }
            if mode == Forget::UnlessLeased && !lease_left.is_zero() =>
        {
            Err(Error::InFlight {
                retry_after: *lease_left,
            })
        }
        RecordState::InProgress { .. } | RecordState::Completed { .. } => Ok(ForgetStep::Forget),
    }
}

/// The state of a stored record at `now`, for the stores that decide in Rust; `left(deadline)`
/// is how long from `now` until `deadline`. A record past its ttl is absent, as for a claim.
/// `payload` is a completed record's; one without it is unreadable.
pub(crate) fn state_of<T: Copy + Ord>(
    scope: &str,
    stored: &Stored<T>,
    payload: Option<Bytes>,
    now: T,
    left: impl Fn(T) -> Duration,
) -> Result<RecordState, Error> {
    if stored.expires_at <= now {
        return Ok(RecordState::Absent);
    }
    let expires_in = left(stored.expires_at);
    Ok(match stored.state {
        StoredState::InProgress { owner, lease_until } => RecordState::InProgress {
            owner,
            epoch: stored.epoch,
            fingerprint: stored.fingerprint,
            lease_left: if lease_until > now {
                left(lease_until)
            } else {
                Duration::ZERO
            },
            expires_in,
        },
        StoredState::Completed => RecordState::Completed {
            epoch: stored.epoch,
            fingerprint: stored.fingerprint,
            payload: payload
                .ok_or_else(|| Error::decode(scope, "a completed record has no payload"))?,
            expires_in,
        },
        StoredState::Released => RecordState::Released {
            epoch: stored.epoch,
            expires_in,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000;

    fn stored(state: StoredState<u64>, expires_at: u64) -> Stored<u64> {
        Stored {
            state,
            epoch: 7,
            fingerprint: Fingerprint::of_bytes(b"request"),
            expires_at,
        }
    }

    fn state(stored: &Stored<u64>, payload: Option<&'static [u8]>) -> RecordState {
        let left = |deadline: u64| Duration::from_millis(deadline.saturating_sub(NOW));
        state_of("s", stored, payload.map(Bytes::from_static), NOW, left)
            .unwrap_or_else(|error| panic!("readable: {error}"))
    }

    fn in_progress(lease_until: u64) -> StoredState<u64> {
        StoredState::InProgress {
            owner: OwnerId::from_u128(1),
            lease_until,
        }
    }

    #[test]
    fn records_past_their_ttl_are_absent() {
        for record in [
            stored(StoredState::Completed, NOW),
            stored(in_progress(NOW + 5), NOW),
            stored(StoredState::Released, NOW - 1),
        ] {
            assert_eq!(state(&record, Some(b"x")), RecordState::Absent);
        }
    }

    #[test]
    fn live_records_report_their_times_left() {
        let record = stored(in_progress(NOW + 5), NOW + 9);
        assert_eq!(
            state(&record, None),
            RecordState::InProgress {
                owner: OwnerId::from_u128(1),
                epoch: 7,
                fingerprint: Fingerprint::of_bytes(b"request"),
                lease_left: Duration::from_millis(5),
                expires_in: Duration::from_millis(9),
            }
        );
        let lapsed = stored(in_progress(NOW), NOW + 9);
        assert!(matches!(
            state(&lapsed, None),
            RecordState::InProgress { lease_left, .. } if lease_left.is_zero()
        ));
        assert_eq!(
            state(&stored(StoredState::Completed, NOW + 3), Some(b"ok")),
            RecordState::Completed {
                epoch: 7,
                fingerprint: Fingerprint::of_bytes(b"request"),
                payload: Bytes::from_static(b"ok"),
                expires_in: Duration::from_millis(3),
            }
        );
        assert_eq!(
            state(&stored(StoredState::Released, NOW + 2), None),
            RecordState::Released {
                epoch: 7,
                expires_in: Duration::from_millis(2),
            }
        );
    }

    #[test]
    fn a_completed_record_without_payload_is_unreadable() {
        let record = stored(StoredState::Completed, NOW + 3);
        let result = state_of("s", &record, None, NOW, |_| Duration::ZERO);
        assert!(matches!(result, Err(Error::Decode { .. })), "{result:?}");
    }

    #[test]
    fn forget_refuses_only_a_live_lease_unless_told_to() {
        let live = state(&stored(in_progress(NOW + 5), NOW + 9), None);
        let lapsed = state(&stored(in_progress(NOW), NOW + 9), None);
        let completed = state(&stored(StoredState::Completed, NOW + 3), Some(b"ok"));
        let released = state(&stored(StoredState::Released, NOW + 3), None);
        assert!(matches!(
            forget_step(&live, Forget::UnlessLeased),
            Err(Error::InFlight { retry_after }) if retry_after == Duration::from_millis(5)
        ));
        assert_eq!(
            forget_step(&live, Forget::EvenIfLeased).ok(),
            Some(ForgetStep::Forget)
        );
        for mode in [Forget::UnlessLeased, Forget::EvenIfLeased] {
            assert_eq!(forget_step(&lapsed, mode).ok(), Some(ForgetStep::Forget));
            assert_eq!(forget_step(&completed, mode).ok(), Some(ForgetStep::Forget));
            assert_eq!(forget_step(&released, mode).ok(), Some(ForgetStep::Nothing));
            assert_eq!(
                forget_step(&RecordState::Absent, mode).ok(),
                Some(ForgetStep::Nothing)
            );
        }
    }
}
