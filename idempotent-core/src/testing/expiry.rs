//! Expiry: ttls, purging, epochs that outlive their records, a claim's minimum lifetime.

use std::time::Duration;

use super::Conformance;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, OwnerId};

impl Conformance {
    /// A completed record is replayed for its ttl, then the key can be claimed again.
    pub async fn completed_record_expires_after_ttl(&self) {
        let scope = self.scope("ttl");
        let lease = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.complete(&lease, b"short-lived", self.short_lease)
            .await;
        assert!(matches!(
            self.claim(&self.request(&scope, "k", OwnerId::new())).await,
            Claim::Completed(_)
        ));
        tokio::time::sleep(self.short_lease * 2).await;
        let again = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(again.epoch() > lease.epoch());
    }

    /// `purge_expired` removes expired records and reports how many.
    pub async fn purges_expired_records(&self) {
        let scope = self.scope("purge");
        for key in ["a", "b", "c"] {
            let lease = self
                .acquire(&self.request(&scope, key, OwnerId::new()))
                .await;
            self.complete(&lease, b"x", self.short_lease).await;
        }
        tokio::time::sleep(self.short_lease * 2).await;
        let removed = match self.store.purge_expired().await {
            Ok(removed) => removed,
            Err(error) => panic!("purge failed: {error} ({error:?})"),
        };
        // Other runs sharing the store may have expired records too.
        assert!(removed >= 3, "purge removed {removed}, expected at least 3");
        for key in ["a", "b", "c"] {
            self.acquire(&self.request(&scope, key, OwnerId::new()))
                .await;
        }
    }

    /// Epochs of one key never repeat: across release, expiry and a purge that deleted the
    /// record (nothing is left to count from, so the store's clock must carry them).
    pub async fn epochs_never_repeat_after_purge(&self) {
        let scope = self.scope("epochs");
        let mut seen = Vec::new();
        let first = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        seen.push(first.epoch());
        if let Err(error) = self.store.release(&first).await {
            panic!("release by the owner failed: {error} ({error:?})");
        }
        let second = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        seen.push(second.epoch());
        self.complete(&second, b"short-lived", self.short_lease)
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        if let Err(error) = self.store.purge_expired().await {
            panic!("purge failed: {error} ({error:?})");
        }
        let third = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        seen.push(third.epoch());
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "epochs must grow across release, expiry and purge: {seen:?}"
        );
    }

    /// A new claim's record lives at least one lease, whatever its ttl: purging never removes
    /// a claim whose lease still holds.
    pub async fn record_lives_at_least_one_lease(&self) {
        let scope = self.scope("ttl-below-lease");
        let request = ClaimRequest {
            ttl: Duration::from_millis(1),
            ..self.request(&scope, "k", OwnerId::new())
        };
        self.acquire(&request).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(error) = self.store.purge_expired().await {
            panic!("purge failed: {error} ({error:?})");
        }
        match self.claim(&self.request(&scope, "k", OwnerId::new())).await {
            Claim::InFlight { .. } => {}
            other => panic!("a claim must outlive a ttl shorter than its lease, got {other:?}"),
        }
    }
}
