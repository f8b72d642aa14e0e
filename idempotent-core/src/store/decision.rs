//! The claim decision table of [`IdempotencyStore::claim`] as one pure function, for stores
//! that decide in Rust under their own lock (the in-memory store's shard lock, SQLite's write
//! transaction). Stores that decide on a server (Redis's Lua, PostgreSQL's one statement)
//! encode the same table there; the conformance suite holds them all to it.

use std::time::Duration;

#[cfg(doc)]
use super::IdempotencyStore;
use super::epoch::next_epoch;
use super::owner::OwnerId;
use super::request::ClaimRequest;
use crate::error::Error;
use crate::key::Fingerprint;

/// A stored record, as much as a decision needs; `T` is the store's clock type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<T> {
    pub(crate) state: StoredState<T>,
    pub(crate) epoch: u64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) expires_at: T,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StoredState<T> {
    InProgress {
        owner: OwnerId,
        lease_until: T,
    },
    Completed,
    /// Only stores that keep released records as rows (SQLite) have them.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Released,
}

/// What a claim does, given the stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write a fresh in-progress record for the request with this epoch (the key was absent,
    /// released, expired, or its owner stopped heartbeating).
    Acquire { epoch: u64 },
    /// The request's owner claiming again (its first answer was lost): renew the lease and
    /// keep the epoch.
    Renew,
    /// Another owner's live claim.
    InFlight { retry_after: Duration },
    /// A live record with another fingerprint.
    Mismatch,
    /// A completed record to replay, with the time it has left.
    Replay { expires_in: Duration },
}

/// The decision table, in order: past its ttl a record is as good as absent; the owner's own
/// claim is renewed; another live claim is in flight (or a mismatch); a lapsed claim or a
/// released record is taken over; a completed record is replayed (or a mismatch).
///
/// `now` and every deadline are on the store's clock; `left(deadline)` is how long from `now`
/// until `deadline`. A new epoch comes from [`next_epoch`] with `clock_micros()`, read only
/// when the claim acquires; a previous epoch at its maximum makes the record unreadable
/// ([`Error::Decode`]).
pub(crate) fn decide<T: Copy + Ord>(
    stored: Option<&Stored<T>>,
    request: &ClaimRequest<'_>,
    now: T,
    left: impl Fn(T) -> Duration,
    clock_micros: impl FnOnce() -> u64,
) -> Result<Decision, Error> {
    let Some(stored) = stored else {
        return acquire(None, request, clock_micros);
    };
    if stored.expires_at <= now {
        return acquire(Some(stored.epoch), request, clock_micros);
    }
    let same_fingerprint = stored.fingerprint == request.fingerprint;
    match stored.state {
        StoredState::InProgress { owner, .. } if owner == request.owner => Ok(Decision::Renew),
        StoredState::InProgress { lease_until, .. } if lease_until > now => {
            Ok(if same_fingerprint {
                Decision::InFlight {
                    retry_after: left(lease_until),
                }
            } else {
                Decision::Mismatch
            })
        }
        StoredState::InProgress { .. } | StoredState::Released => {
            acquire(Some(stored.epoch), request, clock_micros)
        }
        StoredState::Completed => Ok(if same_fingerprint {
            Decision::Replay {
                expires_in: left(stored.expires_at),
            }
        } else {
            Decision::Mismatch
        }),
    }
}

fn acquire(
    previous: Option<u64>,
    request: &ClaimRequest<'_>,
    clock_micros: impl FnOnce() -> u64,
) -> Result<Decision, Error> {
    next_epoch(previous, clock_micros())
        .map(|epoch| Decision::Acquire { epoch })
        .ok_or_else(|| {
            Error::decode(
                request.scope,
                "the record's epoch is at its maximum; no later claim could be fenced",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000;
    const CLOCK: u64 = 5_000_000;

    fn request(owner: OwnerId, fingerprint: Fingerprint) -> ClaimRequest<'static> {
        ClaimRequest {
            scope: "s",
            key: "k",
            fingerprint,
            owner,
            lease: Duration::from_secs(1),
            ttl: Duration::from_secs(1),
        }
    }

    fn stored(state: StoredState<u64>, expires_at: u64) -> Stored<u64> {
        Stored {
            state,
            epoch: 7,
            fingerprint: Fingerprint::of_bytes(b"a"),
            expires_at,
        }
    }

    fn run(stored: Option<Stored<u64>>, owner: OwnerId, fingerprint: &[u8]) -> Decision {
        decide(
            stored.as_ref(),
            &request(owner, Fingerprint::of_bytes(fingerprint)),
            NOW,
            |deadline| Duration::from_millis(deadline - NOW),
            || CLOCK,
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn the_whole_table() {
        let (mine, theirs) = (OwnerId::new(), OwnerId::new());
        let live = NOW + 500;
        let lapsed = NOW;
        let held_by = |owner, lease_until| StoredState::InProgress { owner, lease_until };
        let acquire = Decision::Acquire { epoch: CLOCK };
        let cases = [
            (
                "absent",
                None,
                mine,
                &b"a"[..],
                Decision::Acquire { epoch: CLOCK },
            ),
            // Past its ttl, whatever it holds and whoever asks.
            (
                "expired completed",
                Some(stored(StoredState::Completed, NOW)),
                mine,
                b"b",
                acquire,
            ),
            (
                "expired in progress",
                Some(stored(held_by(theirs, live), NOW)),
                mine,
                b"a",
                acquire,
            ),
            (
                "released",
                Some(stored(StoredState::Released, live)),
                mine,
                b"b",
                acquire,
            ),
            (
                "own claim retried",
                Some(stored(held_by(mine, live), live)),
                mine,
                b"b",
                Decision::Renew,
            ),
            (
                "own lapsed claim",
                Some(stored(held_by(mine, lapsed), live)),
                mine,
                b"a",
                Decision::Renew,
            ),
            (
                "live claim",
                Some(stored(held_by(theirs, live), live)),
                mine,
                b"a",
                Decision::InFlight {
                    retry_after: Duration::from_millis(500),
                },
            ),
            (
                "live claim, other fingerprint",
                Some(stored(held_by(theirs, live), live)),
                mine,
                b"b",
                Decision::Mismatch,
            ),
            (
                "lapsed claim",
                Some(stored(held_by(theirs, lapsed), live)),
                mine,
                b"b",
                acquire,
            ),
            (
                "completed",
                Some(stored(StoredState::Completed, live)),
                mine,
                b"a",
                Decision::Replay {
                    expires_in: Duration::from_millis(500),
                },
            ),
            (
                "completed, other fingerprint",
                Some(stored(StoredState::Completed, live)),
                mine,
                b"b",
                Decision::Mismatch,
            ),
        ];
        for (name, stored, owner, fingerprint, expected) in cases {
            assert_eq!(run(stored, owner, fingerprint), expected, "{name}");
        }
    }

    #[test]
    fn a_new_epoch_is_above_the_previous_one_and_the_clock() {
        let released = |epoch| Stored {
            epoch,
            ..stored(StoredState::Released, NOW + 1)
        };
        assert_eq!(
            run(Some(released(CLOCK + 10)), OwnerId::new(), b"a"),
            Decision::Acquire { epoch: CLOCK + 11 }
        );
        assert_eq!(
            run(Some(released(3)), OwnerId::new(), b"a"),
            Decision::Acquire { epoch: CLOCK }
        );
        let exhausted = decide(
            Some(&released(u64::MAX)),
            &request(OwnerId::new(), Fingerprint::of_bytes(b"a")),
            NOW,
            |_| Duration::ZERO,
            || CLOCK,
        );
        assert!(
            matches!(exhausted, Err(Error::Decode { .. })),
            "{exhausted:?}"
        );
    }
}
