//! Leases: takeover, fencing of a stale owner, heartbeats, releases, completion.

use std::time::Duration;

use bytes::Bytes;

use super::{Conformance, LONG};
use crate::error::Error;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, OwnerId};

impl Conformance {
    /// After its lease expires, a claim is taken over with a higher epoch.
    pub async fn takes_over_after_lease_expiry(&self) {
        let scope = self.scope("takeover");
        let first = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        let second = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(
            second.epoch() > first.epoch(),
            "takeover epoch {} must exceed {}",
            second.epoch(),
            first.epoch()
        );
    }

    /// After a takeover, the stale owner's complete, release and extend fail with `LeaseLost`
    /// and change nothing.
    pub async fn rejects_stale_owner_after_takeover(&self) {
        let scope = self.scope("fencing");
        let stale = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        let current = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;

        let stale_complete = self
            .store
            .complete(&stale, Bytes::from_static(b"stale"), LONG)
            .await;
        assert!(
            matches!(stale_complete, Err(Error::LeaseLost)),
            "stale complete: {stale_complete:?}"
        );
        let stale_release = self.store.release(&stale).await;
        assert!(
            matches!(stale_release, Err(Error::LeaseLost)),
            "stale release: {stale_release:?}"
        );
        let stale_extend = self.store.extend(&stale, LONG).await;
        assert!(
            matches!(stale_extend, Err(Error::LeaseLost)),
            "stale extend: {stale_extend:?}"
        );
        self.store.release_in_background(stale.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;

        // The current owner's claim is intact...
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { .. } => {}
            other => panic!("the new owner's claim must survive the stale owner, got {other:?}"),
        }
        // ...and its result is the one replayed.
        self.complete(&current, b"current", LONG).await;
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::Completed(record) => {
                assert_eq!(&record.payload[..], b"current");
                assert_eq!(record.epoch, current.epoch());
            }
            other => panic!("expected the current owner's record, got {other:?}"),
        }
    }

    /// Extending keeps a claim alive past its original lease.
    pub async fn heartbeat_extends_lease(&self) {
        let scope = self.scope("heartbeat");
        let lease_for = self.short_lease;
        let lease = self
            .acquire(&ClaimRequest {
                lease: lease_for,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        for _ in 0..6 {
            tokio::time::sleep(lease_for / 3).await;
            if let Err(error) = self.store.extend(&lease, lease_for).await {
                panic!("extend by the owner failed: {error} ({error:?})");
            }
        }
        // Two full leases have passed since the claim; it must still be held.
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { .. } => {}
            other => panic!("an extended claim must still be in flight, got {other:?}"),
        }
        self.complete(&lease, b"kept", LONG).await;
    }

    /// A released key is acquired by the next claim, with a higher epoch.
    pub async fn release_lets_next_claim_acquire(&self) {
        let scope = self.scope("release");
        let first = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        if let Err(error) = self.store.release(&first).await {
            panic!("release by the owner failed: {error} ({error:?})");
        }
        let second = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(
            second.epoch() > first.epoch(),
            "epochs keep counting after a release"
        );
    }

    /// `release_in_background` frees the key soon, without being awaited.
    pub async fn release_in_background_frees_key(&self) {
        let scope = self.scope("background-release");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.store.release_in_background(lease);
        for _ in 0..100 {
            if let Claim::Acquired(_) = self.claim(&self.request(&scope, "k", OwnerId::new())).await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("release_in_background did not free the key within 2 s");
    }

    /// An owner whose lease ran out but was not taken over may still complete.
    pub async fn complete_after_lease_expiry_without_takeover(&self) {
        let scope = self.scope("late-complete");
        let lease = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        self.complete(&lease, b"late", LONG).await;
        assert!(matches!(
            self.claim(&self.request(&scope, "k", OwnerId::new())).await,
            Claim::Completed(_)
        ));
    }

    /// Completing again with the lease that completed the record (a retry whose first answer
    /// was lost) succeeds and keeps the first result.
    pub async fn repeated_complete_of_one_lease_is_harmless(&self) {
        let scope = self.scope("complete-twice");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.complete(&lease, b"first", LONG).await;
        let again = self
            .store
            .complete(&lease, Bytes::from_static(b"second"), LONG)
            .await;
        assert!(
            again.is_ok(),
            "a repeated complete of the same lease must succeed: {again:?}"
        );
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::Completed(record) => assert_eq!(&record.payload[..], b"first"),
            other => panic!("expected the first result, got {other:?}"),
        }
        // A lease of the same owner with another epoch completed nothing.
        let other_epoch = Lease::new(lease.scope(), lease.key(), lease.owner(), lease.epoch() + 1);
        let stale = self
            .store
            .complete(&other_epoch, Bytes::from_static(b"other"), LONG)
            .await;
        assert!(
            matches!(stale, Err(Error::LeaseLost)),
            "another epoch's complete: {stale:?}"
        );
    }

    /// `abandon_claim_in_background` gives up a claim whose answer was lost, so the next
    /// caller does not wait a whole lease for a claim nobody holds.
    pub async fn abandoned_claim_frees_key(&self) {
        let scope = self.scope("abandon");
        let request = self.request(&scope, "k", OwnerId::new());
        // The store granted the claim, but the caller never saw the answer.
        self.acquire(&request).await;
        self.store.abandon_claim_in_background(&request);
        // Abandoning a claim that was never granted leaves the key claimable too.
        let never_sent = self.request(&scope, "never-sent", OwnerId::new());
        self.store.abandon_claim_in_background(&never_sent);
        for key in ["k", "never-sent"] {
            let mut freed = false;
            for _ in 0..100 {
                if let Claim::Acquired(_) =
                    self.claim(&self.request(&scope, key, OwnerId::new())).await
                {
                    freed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                freed,
                "abandon_claim_in_background did not free `{key}` within 2 s"
            );
        }
    }
}
