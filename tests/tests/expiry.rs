//! Time: records expire after their ttl, abandoned claims are taken over after their lease,
//! and a heartbeat keeps a long-running body's claim.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idempotent_core::key::IdempotencyKey;
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::{
    Call, CallOptions, Disposition, Error, IdempotencyStore, MemoryStore, OnInFlight, idempotent,
    observe,
};
use tokio::time::{Instant, advance, sleep};

#[idempotent(key = "id", store = store, skip = "runs", ttl = "1m")]
async fn short_lived(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(format!("{id}-run-{run}"))
}

#[tokio::test(start_paused = true)]
async fn completed_result_replays_within_ttl_and_the_body_runs_again_after_it() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    assert_eq!(short_lived(&store, &runs, 1).await.unwrap(), "1-run-1");
    advance(Duration::from_secs(59)).await;
    let (within, how) = observe(short_lived(&store, &runs, 1)).await;
    assert_eq!(within.unwrap(), "1-run-1");
    assert_eq!(how, Some(Disposition::Replayed));

    advance(Duration::from_secs(1) + Duration::from_millis(1)).await;
    let (after, how) = observe(short_lived(&store, &runs, 1)).await;
    assert_eq!(after.unwrap(), "1-run-2");
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

const NAMESPACE: &str = "expiry.takeover";
const LEASE: Duration = Duration::from_secs(10);

#[idempotent(key = "id", store = store, skip = "runs", scope = "expiry.takeover", lease = "10s", on_in_flight = "reject")]
async fn reject_takeover(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[idempotent(key = "id", store = store, skip = "runs", scope = "expiry.takeover", lease = "10s")]
async fn wait_takeover(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

/// Claims the record `reject_takeover(id)` / `wait_takeover(id)` would use, as an owner that
/// then stops heartbeating (a crashed process).
async fn abandon_claim(store: &MemoryStore, id: u64, lease: Duration) {
    let key = IdempotencyKey::builder(NAMESPACE).part(&id).finish();
    let claim = store
        .claim(&ClaimRequest {
            lease,
            ttl: Duration::from_secs(3600),
            ..support::request(NAMESPACE, key.as_str(), OwnerId::new())
        })
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");
}

#[tokio::test(start_paused = true)]
async fn abandoned_claim_is_in_flight_until_its_lease_expires_then_taken_over() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    abandon_claim(&store, 1, LEASE).await;

    let before = reject_takeover(&store, &runs, 1).await;
    assert!(
        matches!(before, Err(Error::InFlight { retry_after }) if retry_after == LEASE),
        "{before:?}"
    );
    advance(LEASE - Duration::from_millis(1)).await;
    let almost = reject_takeover(&store, &runs, 1).await;
    assert!(
        matches!(almost, Err(Error::InFlight { retry_after }) if retry_after == Duration::from_millis(1)),
        "{almost:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    advance(Duration::from_millis(1)).await;
    let (after, how) = observe(reject_takeover(&store, &runs, 1)).await;
    assert_eq!(after.unwrap(), 1);
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_call_takes_over_an_abandoned_claim_when_its_lease_expires() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let abandoned_lease = Duration::from_secs(5);
    abandon_claim(&store, 2, abandoned_lease).await;
    let started = Instant::now();

    let (value, how) = observe(wait_takeover(&store, &runs, 2)).await;
    assert_eq!(value.unwrap(), 2);
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let waited = started.elapsed();
    assert!(
        waited >= abandoned_lease && waited < abandoned_lease + Duration::from_millis(200),
        "waited {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_call_gives_up_with_in_flight_after_its_wait_budget() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    // The abandoned claim outlives the call's wait budget (one lease of 10 s).
    abandon_claim(&store, 3, Duration::from_secs(60)).await;
    let started = Instant::now();

    let result = wait_takeover(&store, &runs, 3).await;
    assert!(matches!(result, Err(Error::InFlight { .. })), "{result:?}");
    assert_eq!(started.elapsed(), LEASE);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[idempotent(key = "id", store = store, skip = "runs", lease = "3s", on_in_flight = "reject")]
async fn long_body(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    // Three leases: without a heartbeat the claim would expire twice over.
    sleep(Duration::from_secs(9)).await;
    Ok(format!("{id}-run-{run}"))
}

#[tokio::test(start_paused = true)]
async fn body_running_longer_than_its_lease_keeps_its_claim_through_the_heartbeat() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let (owner, duplicate) = tokio::join!(observe(long_body(&store, &runs, 1)), async {
        sleep(Duration::from_secs(6)).await;
        long_body(&store, &runs, 1).await
    });

    assert!(
        matches!(duplicate, Err(Error::InFlight { .. })),
        "{duplicate:?}"
    );
    assert_eq!(owner.0.unwrap(), "1-run-1");
    assert_eq!(owner.1, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let (replay, how) = observe(long_body(&store, &runs, 1)).await;
    assert_eq!(replay.unwrap(), "1-run-1");
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn ttl_and_lease_of_duration_max_mean_forever_instead_of_panicking() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let forever = CallOptions::new()
        .ttl(Duration::MAX)
        .lease(Duration::MAX)
        .wait_timeout(Duration::MAX);
    let call = Call::new(&store, "expiry.forever", "key").options(forever);
    let body = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Error>(String::from("kept"))
    };

    let first = call.run(body()).await.unwrap();
    assert!(!first.is_replayed());
    advance(Duration::from_secs(10 * 365 * 24 * 60 * 60)).await;
    let later = call.run(body()).await.unwrap();
    assert!(later.is_replayed());
    assert_eq!(later.value, "kept");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(store.purge_expired().await.unwrap(), 0);

    // An abandoned claim with an endless lease stays in flight (and does not overflow either).
    let held = store
        .claim(&ClaimRequest {
            lease: Duration::MAX,
            ttl: Duration::MAX,
            ..support::request("expiry.forever", "held", OwnerId::new())
        })
        .await
        .unwrap();
    let Claim::Acquired(lease) = held else {
        panic!("expected Acquired, got {held:?}");
    };
    store.extend(&lease, Duration::MAX).await.unwrap();
    let rejected = Call::new(&store, "expiry.forever", "held")
        .options(forever.on_in_flight(OnInFlight::Reject))
        .run(body())
        .await;
    assert!(
        matches!(rejected, Err(Error::InFlight { .. })),
        "{rejected:?}"
    );
}
