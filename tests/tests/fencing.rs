//! Fencing: epochs grow with every claim, and a stale owner's writes after a takeover fail with
//! `LeaseLost` and change nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::key::IdempotencyKey;
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, OwnerId, RecordState};
use idempotent_core::{
    Disposition, Error, IdempotencyStore, MemoryStore, current_epoch, idempotent, observe,
};
use support::acquire;
use tokio::time::{advance, sleep};

const SCOPE: &str = "fencing.store";
const KEY: &str = "key-1";
const LEASE: Duration = Duration::from_secs(10);
const TTL: Duration = Duration::from_secs(3600);

/// A claim on this file's key with its lease and ttl.
fn request(owner: OwnerId) -> ClaimRequest<'static> {
    ClaimRequest {
        lease: LEASE,
        ttl: TTL,
        ..support::request(SCOPE, KEY, owner)
    }
}

/// Owner A claims, stops heartbeating, and owner B takes over after the lease.
async fn taken_over(store: &MemoryStore) -> (Lease, Lease) {
    let stale = acquire(store, &request(OwnerId::new())).await;
    advance(LEASE).await;
    let current = acquire(store, &request(OwnerId::new())).await;
    (stale, current)
}

fn assert_lease_lost(result: Result<(), Error>) {
    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
}

/// A third owner's view of the record: the new owner's claim must still be in flight.
async fn assert_still_in_flight(store: &MemoryStore) {
    let claim = store.claim(&request(OwnerId::new())).await.unwrap();
    assert!(
        matches!(claim, Claim::InFlight { retry_after } if retry_after <= LEASE),
        "{claim:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn takeover_after_lease_expiry_has_a_higher_epoch() {
    let store = MemoryStore::new();
    let (stale, current) = taken_over(&store).await;
    assert!(stale.epoch() > 0, "an epoch is never 0");
    assert!(current.epoch() > stale.epoch());
    assert_ne!(current.owner(), stale.owner());
}

#[tokio::test(start_paused = true)]
async fn stale_owner_complete_after_takeover_is_lease_lost_and_changes_nothing() {
    let store = MemoryStore::new();
    let (stale, current) = taken_over(&store).await;

    assert_lease_lost(
        store
            .complete(&stale, "stale result".as_bytes().into(), TTL)
            .await,
    );
    assert_still_in_flight(&store).await;

    // The new owner completes, and its payload is what a later claim replays.
    store
        .complete(&current, "current result".as_bytes().into(), TTL)
        .await
        .unwrap();
    let claim = store.claim(&request(OwnerId::new())).await.unwrap();
    match claim {
        Claim::Completed(record) => {
            assert_eq!(&record.payload[..], b"current result");
            assert_eq!(record.epoch, current.epoch());
        }
        other => panic!("expected Completed, got {other:?}"),
    }

    // Even after completion the stale owner cannot overwrite the record.
    assert_lease_lost(store.complete(&stale, "late".as_bytes().into(), TTL).await);
    let claim = store.claim(&request(OwnerId::new())).await.unwrap();
    assert!(
        matches!(&claim, Claim::Completed(record) if &record.payload[..] == b"current result"),
        "{claim:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_owner_release_after_takeover_is_lease_lost_and_changes_nothing() {
    let store = MemoryStore::new();
    let (stale, current) = taken_over(&store).await;

    assert_lease_lost(store.release(&stale).await);
    assert_still_in_flight(&store).await;

    // The new owner's lease is intact: it can still extend and complete.
    store.extend(&current, LEASE).await.unwrap();
    store
        .complete(&current, "done".as_bytes().into(), TTL)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn stale_owner_extend_after_takeover_is_lease_lost_and_changes_nothing() {
    let store = MemoryStore::new();
    let (stale, current) = taken_over(&store).await;

    assert_lease_lost(store.extend(&stale, Duration::from_secs(86_400)).await);
    // The lease was not pushed out by the stale owner's extend.
    assert_still_in_flight(&store).await;

    // When the new owner's lease runs out, the record can be taken over again, proving the
    // stale extend did not renew it.
    advance(LEASE).await;
    let third = acquire(&store, &request(OwnerId::new())).await;
    assert!(third.epoch() > current.epoch());
    assert_lease_lost(store.complete(&current, "x".as_bytes().into(), TTL).await);
}

#[tokio::test(start_paused = true)]
async fn same_owner_claim_retry_returns_acquired_with_the_same_epoch() {
    let store = MemoryStore::new();
    let owner = OwnerId::new();

    let first = acquire(&store, &request(owner)).await;
    advance(Duration::from_secs(3)).await;
    let retried = acquire(&store, &request(owner)).await;
    assert_eq!(retried.epoch(), first.epoch());
    assert_eq!(retried, first);

    // The retried claim renewed the lease: another owner sees a full lease left.
    let claim = store.claim(&request(OwnerId::new())).await.unwrap();
    assert!(
        matches!(claim, Claim::InFlight { retry_after } if retry_after == LEASE),
        "{claim:?}"
    );
    // And either answer's lease is valid.
    store
        .complete(&first, "ok".as_bytes().into(), TTL)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn epoch_grows_after_a_release() {
    let store = MemoryStore::new();
    let first = acquire(&store, &request(OwnerId::new())).await;
    store.release(&first).await.unwrap();
    let second = acquire(&store, &request(OwnerId::new())).await;
    assert!(second.epoch() > first.epoch());
    // The released lease is no longer valid.
    assert_lease_lost(store.release(&first).await);
}

#[idempotent(key = "id", store = store, skip = "runs", scope = "fencing.epoch", lease = "10s")]
async fn epoch_of_body(
    store: &MemoryStore,
    runs: &AtomicUsize,
    id: u64,
) -> Result<Option<u64>, Error> {
    let _ = id;
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(current_epoch())
}

#[tokio::test]
async fn current_epoch_inside_the_body_is_the_lease_epoch() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    assert_eq!(current_epoch(), None, "no epoch outside a body");
    let before = idempotent_core::store::system_clock_micros();
    let epoch = epoch_of_body(&store, &runs, 1).await.unwrap();
    assert!(
        epoch.is_some_and(|epoch| epoch >= before),
        "a new record's epoch is at least the clock in microseconds: {epoch:?}"
    );
    assert_eq!(current_epoch(), None);
}

#[tokio::test(start_paused = true)]
async fn current_epoch_after_a_takeover_is_greater_than_the_abandoned_claims() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let key = IdempotencyKey::builder("fencing.epoch")
        .part(&7u64)
        .finish();
    let abandoned = acquire(
        &store,
        &ClaimRequest {
            lease: LEASE,
            ttl: TTL,
            ..support::request("fencing.epoch", key.as_str(), OwnerId::new())
        },
    )
    .await;

    advance(LEASE).await;
    let (epoch, how) = observe(epoch_of_body(&store, &runs, 7)).await;
    let epoch = epoch.unwrap().expect("the body runs under a lease");
    assert_eq!(how, Some(Disposition::Executed));
    assert!(
        epoch > abandoned.epoch(),
        "{epoch} <= {}",
        abandoned.epoch()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A [`MemoryStore`] whose heartbeats never reach it (a paused process, a partitioned network):
/// `extend` reports success without renewing the lease.
struct LostHeartbeats(MemoryStore);

#[async_trait]
impl IdempotencyStore for LostHeartbeats {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        self.0.claim(request).await
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        self.0.complete(lease, payload, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.0.release(lease).await
    }

    async fn extend(&self, _lease: &Lease, _lease_for: Duration) -> Result<(), Error> {
        Ok(())
    }

    fn release_in_background(&self, lease: Lease) {
        self.0.release_in_background(lease);
    }

    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        self.0.abandon_claim_in_background(request);
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.0.purge_expired().await
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.0.inspect(scope, key).await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.0.forget(scope, key, mode).await
    }

    async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
        self.0.wait_for_change(scope, key, max_wait).await;
    }
}

#[idempotent(key = "id", store = store, skip = "runs, epochs", lease = "3s")]
async fn slow_body(
    store: &LostHeartbeats,
    runs: &AtomicUsize,
    epochs: &std::sync::Mutex<Vec<Option<u64>>>,
    id: u64,
) -> Result<(usize, Option<u64>), Error> {
    let _ = id;
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    epochs.lock().unwrap().push(current_epoch());
    if run == 1 {
        // Outlives the lease; its heartbeats are lost, so the claim is taken over meanwhile.
        sleep(Duration::from_secs(10)).await;
    }
    Ok((run, current_epoch()))
}

#[tokio::test(start_paused = true)]
async fn body_whose_lease_was_taken_over_gets_lease_lost_and_the_new_result_is_kept() {
    let store = LostHeartbeats(MemoryStore::new());
    let runs = AtomicUsize::new(0);
    let epochs = std::sync::Mutex::new(Vec::new());

    let (stale, newer) = tokio::join!(slow_body(&store, &runs, &epochs, 1), async {
        // The stale owner's 3 s lease has run out.
        sleep(Duration::from_secs(4)).await;
        slow_body(&store, &runs, &epochs, 1).await
    });

    let (run, newer_epoch) = newer.unwrap();
    assert_eq!(run, 2);
    let seen = epochs.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(newer_epoch, seen[1]);
    assert!(
        seen[1] > seen[0] && seen[0].is_some(),
        "the takeover runs under a higher epoch: {seen:?}"
    );
    assert!(matches!(stale, Err(Error::LeaseLost)), "{stale:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // The stale body's result was not recorded; the takeover's result is what replays.
    let (replay, how) = observe(slow_body(&store, &runs, &epochs, 1)).await;
    assert_eq!(replay.unwrap(), (2, newer_epoch));
    assert_eq!(how, Some(Disposition::Replayed));
}
