//! Unreadable records: reported as errors, never taken for absent, one error per fault.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Conformance, LONG};
use crate::Call;
use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{Claim, Forget, Lease, OwnerId};

/// Writes damage into a store's records behind its back, for the checks of how the store
/// reports a record it cannot read. A backend's own tests implement it with raw access to
/// the records (SQL, Redis commands); [`Conformance::raw_records`] hands it to the suite.
#[async_trait]
pub trait RawRecords: Send + Sync {
    /// Overwrites the stored epoch of the record of `(scope, key)` with `epoch` (possibly
    /// negative), as the store would write a number, leaving the rest of the record as it is.
    async fn set_epoch(&self, scope: &str, key: &str, epoch: i64);

    /// The largest epoch the store can hold: a record at it can never be claimed again,
    /// since no later epoch exists.
    fn max_epoch(&self) -> i64;
}

impl Conformance {
    /// A stored payload the caller cannot decode is `Error::Decode`, and the body does not
    /// run again.
    pub async fn undecodable_record_is_an_error(&self) {
        let scope = self.scope("undecodable");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.complete(&lease, b"\x01{not json", LONG).await;
        let runs = AtomicUsize::new(0);
        let result = Call::new(&*self.store, &scope, "k")
            .fingerprint(Fingerprint::of_bytes(b"request"))
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, Error>(1)
            })
            .await;
        assert!(
            matches!(result, Err(Error::Decode { .. })),
            "expected Error::Decode, got {result:?}"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "the body must not run again"
        );
    }

    fn raw(&self) -> &dyn RawRecords {
        match &self.raw {
            Some(raw) => raw.as_ref(),
            None => panic!("this check writes damaged records: give the suite `raw_records`"),
        }
    }

    /// A stored epoch that is negative makes the record unreadable: every claim, call,
    /// inspection and forget on it fails with `Error::Decode`, the body never runs, and the
    /// record is not overwritten.
    /// Needs [`raw_records`](Conformance::raw_records).
    pub async fn negative_stored_epoch_is_unreadable(&self) {
        let scope = self.scope("negative-epoch");
        for (key, complete) in [("completed", true), ("released", false)] {
            let lease = self
                .acquire(&self.request(&scope, key, OwnerId::new()))
                .await;
            if complete {
                self.complete(&lease, b"\x011", LONG).await;
            } else if let Err(error) = self.store.release(&lease).await {
                panic!("release by the owner failed: {error} ({error:?})");
            }
            self.raw().set_epoch(&scope, key, -1).await;
            for attempt in 1..=2 {
                let claim = self
                    .store
                    .claim(&self.request(&scope, key, OwnerId::new()))
                    .await;
                assert!(
                    matches!(claim, Err(Error::Decode { .. })),
                    "{key}, claim {attempt}: a negative stored epoch must be Error::Decode, got {claim:?}"
                );
            }
            // Nor can it be inspected or forgotten: an operator sees the error, and the
            // record stays as it is.
            let inspected = self.store.inspect(&scope, key).await;
            assert!(
                matches!(inspected, Err(Error::Decode { .. })),
                "{key}: inspecting a negative stored epoch must be Error::Decode, got {inspected:?}"
            );
            for mode in [Forget::UnlessLeased, Forget::EvenIfLeased] {
                let forgot = self.store.forget(&scope, key, mode).await;
                assert!(
                    matches!(forgot, Err(Error::Decode { .. })),
                    "{key}: forgetting ({mode:?}) a negative stored epoch must be Error::Decode, got {forgot:?}"
                );
            }
            let runs = AtomicUsize::new(0);
            let call = Call::new(&*self.store, &scope, key)
                .fingerprint(Fingerprint::of_bytes(b"request"))
                .run(async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, Error>(1)
                })
                .await;
            assert!(matches!(call, Err(Error::Decode { .. })), "{key}: {call:?}");
            assert_eq!(
                runs.load(Ordering::SeqCst),
                0,
                "{key}: the body must not run"
            );
        }
    }

    /// A released record whose epoch is at the store's largest cannot be claimed again without
    /// repeating an epoch: `Error::Decode`, every time. Needs
    /// [`raw_records`](Conformance::raw_records).
    pub async fn exhausted_epoch_is_unreadable(&self) {
        let scope = self.scope("exhausted-epoch");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        if let Err(error) = self.store.release(&lease).await {
            panic!("release by the owner failed: {error} ({error:?})");
        }
        let max = self.raw().max_epoch();
        self.raw().set_epoch(&scope, "k", max).await;
        for attempt in 1..=2 {
            let claim = self
                .store
                .claim(&self.request(&scope, "k", OwnerId::new()))
                .await;
            assert!(
                matches!(claim, Err(Error::Decode { .. })),
                "claim {attempt}: a record at the largest epoch ({max}) must be Error::Decode, got {claim:?}"
            );
        }
    }

    /// A lease with an epoch the store could never have issued (beyond what it holds) owns
    /// nothing: completing, extending and releasing it fail with `Error::LeaseLost` and change
    /// nothing.
    pub async fn lease_with_an_epoch_no_store_issued_is_lost(&self) {
        let scope = self.scope("impossible-epoch");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        let forged = Lease::new(lease.scope(), lease.key(), lease.owner(), u64::MAX);
        let complete = self
            .store
            .complete(&forged, Bytes::from_static(b"forged"), LONG)
            .await;
        let extend = self.store.extend(&forged, LONG).await;
        let release = self.store.release(&forged).await;
        for (what, result) in [
            ("complete", complete),
            ("extend", extend),
            ("release", release),
        ] {
            assert!(
                matches!(result, Err(Error::LeaseLost)),
                "{what} with epoch u64::MAX: expected Error::LeaseLost, got {result:?}"
            );
        }
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { .. } => {}
            other => panic!("the real claim must be untouched, got {other:?}"),
        }
    }
}
