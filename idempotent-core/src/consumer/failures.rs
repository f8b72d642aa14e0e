//! Failed attempts, counted in the store so that the poison limit holds across workers and
//! restarts.
//!
//! Failure `n` of a message is a completed record `"{key}#{n}"` in the scope
//! `"{scope}#failures"`, claimed through the engine like any call. Counting a failure claims
//! `#1`, `#2`, ... until a claim is acquired: every earlier marker replays, and the acquired
//! one is failure `n`. A message that never fails costs nothing extra; the `n`th failure costs
//! `n` claims. Markers expire with their ttl, so a message that failed long ago starts over.

use std::time::Duration;

use crate::engine::{Call, CallOptions, OnInFlight};
use crate::error::Error;
use crate::store::IdempotencyStore;

/// Records one more failure of `key` and returns how many there have been, counting at most
/// to `limit`: at `limit` no further marker is written.
pub(super) async fn record_failure(
    store: &dyn IdempotencyStore,
    scope: &str,
    key: &str,
    limit: u32,
    ttl: Duration,
) -> Result<u32, Error> {
    let failures = format!("{scope}#failures");
    let options = CallOptions::new().ttl(ttl).on_in_flight(OnInFlight::Reject);
    for attempt in 1..limit {
        let marker = format!("{key}#{attempt}");
        let recorded = Call::new(store, &failures, &marker)
            .options(options)
            .run(async { Ok::<(), Error>(()) })
            .await;
        match recorded {
            Ok(outcome) if !outcome.is_replayed() => return Ok(attempt),
            // Counted before, or being counted by another worker right now: the next one.
            Ok(_) | Err(Error::InFlight { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(limit.max(1))
}
