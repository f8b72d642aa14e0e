//! The conformance suite every [`IdempotencyStore`] runs: one async function per clause of the
//! contract (see [`IdempotencyStore::claim`]). Public so that custom stores can run it too.
//!
//! Each check panics with a message naming the clause when the store breaks it. Checks use
//! real time with short leases (a store computes deadlines on its own clock, which a paused
//! tokio clock cannot move), and a fresh scope each, so runs can repeat and overlap against a
//! shared server.
//!
//! ```
//! use std::sync::Arc;
//! use idempotent_core::MemoryStore;
//! use idempotent_core::testing::Conformance;
//!
//! # #[tokio::main]
//! # async fn main() {
//! Conformance::new(Arc::new(MemoryStore::new()), "docs").run_all().await;
//! # }
//! ```

mod claims;
mod expiry;
mod leases;
mod records;
mod unreadable;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::key::Fingerprint;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, OwnerId};

pub use unreadable::RawRecords;

/// The conformance suite for one store.
#[derive(Clone)]
pub struct Conformance {
    store: Arc<dyn IdempotencyStore>,
    prefix: String,
    short_lease: Duration,
    raw: Option<Arc<dyn RawRecords>>,
}

impl std::fmt::Debug for Conformance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conformance")
            .field("prefix", &self.prefix)
            .field("short_lease", &self.short_lease)
            .field("raw_records", &self.raw.is_some())
            .finish_non_exhaustive()
    }
}

const LONG: Duration = Duration::from_secs(60);

impl Conformance {
    /// A suite for `store`. `prefix` starts every scope the checks use (add a per-run unique
    /// part when several runs share one server).
    pub fn new(store: Arc<dyn IdempotencyStore>, prefix: &str) -> Self {
        Conformance {
            store,
            prefix: format!("{prefix}:{}", OwnerId::new()),
            short_lease: Duration::from_millis(300),
            raw: None,
        }
    }

    /// Gives the suite raw access to the store's records, for the checks that write damaged
    /// records: a negative epoch, an epoch
    /// at the store's largest. [`run_all`](Self::run_all) runs them when this is set.
    pub fn raw_records(mut self, raw: Arc<dyn RawRecords>) -> Self {
        self.raw = Some(raw);
        self
    }

    /// The lease used where a check waits for expiry (default 300 ms). Raise it for stores
    /// whose round trips are slow compared with it.
    pub fn short_lease(mut self, lease: Duration) -> Self {
        self.short_lease = lease;
        self
    }

    /// Runs every check, one after the other.
    pub async fn run_all(&self) {
        crate::__conformance_checks!(__conformance_run_all(self));
        if self.raw.is_some() {
            crate::__conformance_raw_checks!(__conformance_run_all(self));
        }
    }

    pub(super) fn scope(&self, check: &str) -> String {
        format!("{}:{check}", self.prefix)
    }

    pub(super) fn request<'a>(
        &self,
        scope: &'a str,
        key: &'a str,
        owner: OwnerId,
    ) -> ClaimRequest<'a> {
        ClaimRequest {
            scope,
            key,
            fingerprint: Fingerprint::of_bytes(b"request"),
            owner,
            lease: LONG,
            ttl: LONG,
        }
    }

    pub(super) async fn claim(&self, request: &ClaimRequest<'_>) -> Claim {
        match self.store.claim(request).await {
            Ok(claim) => claim,
            Err(error) => panic!("claim failed: {error} ({error:?})"),
        }
    }

    pub(super) async fn acquire(&self, request: &ClaimRequest<'_>) -> Lease {
        match self.claim(request).await {
            Claim::Acquired(lease) => lease,
            other => panic!("expected to acquire a fresh key, got {other:?}"),
        }
    }

    pub(super) async fn complete(&self, lease: &Lease, payload: &'static [u8], ttl: Duration) {
        if let Err(error) = self
            .store
            .complete(lease, Bytes::from_static(payload), ttl)
            .await
        {
            panic!("complete by the current owner failed: {error} ({error:?})");
        }
    }
}

/// Generates one `#[tokio::test]` per conformance check for a store, so each clause passes or
/// fails on its own line. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
///
/// `$make` is an async expression evaluated in each test that yields
/// `Option<Arc<dyn IdempotencyStore>>`; `None` skips the test (for example when the backend's
/// service is not reachable and not required).
///
/// ```
/// use std::sync::Arc;
/// use idempotent_core::{IdempotencyStore, MemoryStore};
///
/// idempotent_core::store_conformance_tests!(memory, async {
///     Some(Arc::new(MemoryStore::new()) as Arc<dyn IdempotencyStore>)
/// });
/// # fn main() {}
/// ```
///
/// A backend whose tests can write into its records behind its back adds the checks for
/// damaged records with `with_raw_records`: `$make` then yields the store and its
/// [`RawRecords`](crate::testing::RawRecords) together, as
/// `Option<(Arc<dyn IdempotencyStore>, Arc<dyn RawRecords>)>`, so both see the same records:
///
/// ```ignore
/// idempotent_core::store_conformance_tests!(my_store, with_raw_records, async {
///     let store = MyStore::connect(url).await.ok()?;
///     let raw = MyRawRecords::new(store.connection());
///     Some((Arc::new(store) as Arc<dyn IdempotencyStore>, Arc::new(raw) as Arc<dyn RawRecords>))
/// });
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn suite() -> ::core::option::Option<$crate::testing::Conformance> {
                let store: ::core::option::Option<::std::sync::Arc<dyn $crate::IdempotencyStore>> =
                    $make.await;
                store.map(|store| {
                    $crate::testing::Conformance::new(store, ::core::stringify!($name))
                })
            }

            $crate::__conformance_checks! { __conformance_test_fns() }
        }
    };
    ($name:ident, with_raw_records, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn suite() -> ::core::option::Option<$crate::testing::Conformance> {
                let made: ::core::option::Option<(
                    ::std::sync::Arc<dyn $crate::IdempotencyStore>,
                    ::std::sync::Arc<dyn $crate::testing::RawRecords>,
                )> = $make.await;
                made.map(|(store, raw)| {
                    $crate::testing::Conformance::new(store, ::core::stringify!($name))
                        .raw_records(raw)
                })
            }

            $crate::__conformance_checks! { __conformance_test_fns() }
            $crate::__conformance_raw_checks! { __conformance_test_fns() }
        }
    };
}

/// The checks that need [`Conformance::raw_records`]. Calls
/// `$crate::<callback>!(<args>; <check>, ...)` like [`__conformance_checks`](crate::__conformance_checks).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_raw_checks {
    ($callback:ident($($args:tt)*)) => {
        $crate::$callback! { $($args)*;
            negative_stored_epoch_is_unreadable,
            exhausted_epoch_is_unreadable
        }
    };
}

/// The one list of conformance checks, in the order [`Conformance::run_all`] runs them. Calls
/// `$crate::<callback>!(<args>; <check>, <check>, ...)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($callback:ident($($args:tt)*)) => {
        $crate::$callback! { $($args)*;
            exclusive_claim_under_contention,
            replays_completed_record,
            rejects_payload_mismatch,
            reports_in_flight_with_retry_after,
            takes_over_after_lease_expiry,
            rejects_stale_owner_after_takeover,
            same_owner_claim_retry_keeps_epoch,
            heartbeat_extends_lease,
            release_lets_next_claim_acquire,
            release_in_background_frees_key,
            completed_record_expires_after_ttl,
            complete_after_lease_expiry_without_takeover,
            purges_expired_records,
            epochs_never_repeat_after_purge,
            repeated_complete_of_one_lease_is_harmless,
            abandoned_claim_frees_key,
            record_lives_at_least_one_lease,
            round_trips_large_payloads,
            handles_unusual_keys_and_scopes,
            undecodable_record_is_an_error,
            lease_with_an_epoch_no_store_issued_is_lost,
            inspect_reports_each_state,
            inspect_reports_an_expired_record_absent,
            forget_lets_the_next_claim_acquire,
            forget_refuses_a_live_lease_unless_forced,
            forget_takes_a_lapsed_lease_without_force,
            forgotten_result_is_not_replayed,
            collapses_concurrent_duplicate_calls
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_run_all {
    ($suite:expr; $($check:ident),*) => {
        $( $suite.$check().await; )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test_fns {
    (; $($check:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let ::core::option::Option::Some(suite) = suite().await {
                    suite.$check().await;
                }
            }
        )*
    };
}
