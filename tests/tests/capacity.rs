//! Capacity: a full `MemoryStore` rejects new claims rather than evicting live records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::{Disposition, Error, IdempotencyStore, MemoryStore, idempotent, observe};
use tokio::time::advance;

const TTL: Duration = Duration::from_secs(60);

#[idempotent(key = "id", store = store, skip = "runs", ttl = "1m", lease = "10s")]
async fn record(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id * 100)
}

#[idempotent(key = "id", store = store, skip = "runs", ttl = "1h", lease = "10s")]
async fn long_record(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id * 100)
}

async fn filled(runs: &AtomicUsize) -> MemoryStore {
    let store = MemoryStore::builder().capacity(3).build();
    for id in 1..=3 {
        assert_eq!(record(&store, runs, id).await.unwrap(), id * 100);
    }
    assert_eq!(store.len(), 3);
    store
}

#[tokio::test(start_paused = true)]
async fn full_store_rejects_a_new_key_with_capacity_exceeded_and_does_not_run_the_body() {
    let runs = AtomicUsize::new(0);
    let store = filled(&runs).await;

    let result = record(&store, &runs, 4).await;
    assert!(
        matches!(result, Err(Error::CapacityExceeded { capacity: 3 })),
        "{result:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(store.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn full_store_never_evicts_live_records() {
    let runs = AtomicUsize::new(0);
    let store = filled(&runs).await;

    for _ in 0..3 {
        assert!(matches!(
            record(&store, &runs, 4).await,
            Err(Error::CapacityExceeded { .. })
        ));
    }
    // The three records still replay: none was evicted to make room.
    for id in 1..=3 {
        let (value, how) = observe(record(&store, &runs, id)).await;
        assert_eq!(value.unwrap(), id * 100);
        assert_eq!(how, Some(Disposition::Replayed));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn in_progress_claims_count_toward_capacity() {
    let store = MemoryStore::builder().capacity(1).build();
    let runs = AtomicUsize::new(0);
    let claim = store
        .claim(&ClaimRequest {
            lease: Duration::from_secs(10),
            ttl: TTL,
            ..support::request("capacity.raw", "held", OwnerId::new())
        })
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired(_)), "{claim:?}");

    let result = record(&store, &runs, 1).await;
    assert!(
        matches!(result, Err(Error::CapacityExceeded { capacity: 1 })),
        "{result:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn expired_records_make_room_for_new_claims() {
    let runs = AtomicUsize::new(0);
    let store = filled(&runs).await;
    assert!(matches!(
        record(&store, &runs, 4).await,
        Err(Error::CapacityExceeded { .. })
    ));

    advance(TTL + Duration::from_millis(1)).await;
    let (value, how) = observe(record(&store, &runs, 4)).await;
    assert_eq!(value.unwrap(), 400);
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert!(store.len() <= 3, "len {} over capacity", store.len());

    // The store keeps filling up to its capacity with new keys.
    for id in 5..=6 {
        record(&store, &runs, id).await.unwrap();
    }
    assert_eq!(store.len(), 3);
    assert!(matches!(
        record(&store, &runs, 7).await,
        Err(Error::CapacityExceeded { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn purge_expired_removes_only_expired_records_and_returns_the_count() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    for id in 1..=3 {
        record(&store, &runs, id).await.unwrap();
    }
    for id in 10..=11 {
        long_record(&store, &runs, id).await.unwrap();
    }
    assert_eq!(store.len(), 5);

    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert_eq!(store.len(), 5);

    advance(TTL + Duration::from_millis(1)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 3);
    assert_eq!(store.len(), 2);
    assert_eq!(store.purge_expired().await.unwrap(), 0);

    // The live records still replay.
    for id in 10..=11 {
        let (_, how) = observe(long_record(&store, &runs, id)).await;
        assert_eq!(how, Some(Disposition::Replayed));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn purge_expired_on_a_full_store_frees_its_capacity() {
    let runs = AtomicUsize::new(0);
    let store = filled(&runs).await;

    advance(TTL + Duration::from_millis(1)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 3);
    assert!(store.is_empty());
    for id in 4..=6 {
        record(&store, &runs, id).await.unwrap();
    }
    assert_eq!(store.len(), 3);
    assert_eq!(runs.load(Ordering::SeqCst), 6);
}

#[idempotent(key = "id", store = store, skip = "runs", ttl = "1h", lease = "10s")]
async fn failing(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Err(Error::InvalidInput {
        reason: format!("id {id} is refused"),
    })
}

#[tokio::test(start_paused = true)]
async fn released_keys_take_no_capacity() {
    let runs = AtomicUsize::new(0);
    let store = MemoryStore::builder().capacity(3).build();
    // Two failed calls release their keys: nothing is left of them...
    for id in 1..=2 {
        assert!(failing(&store, &runs, id).await.is_err());
    }
    assert!(store.is_empty());
    // ...so three new keys fit, long before any ttl ends.
    for id in 10..=12 {
        assert_eq!(record(&store, &runs, id).await.unwrap(), id * 100);
    }
    assert_eq!(store.len(), 3);
    // The live records are all still there and replay.
    let before = runs.load(Ordering::SeqCst);
    for id in 10..=12 {
        assert_eq!(record(&store, &runs, id).await.unwrap(), id * 100);
    }
    assert_eq!(runs.load(Ordering::SeqCst), before);
    // Now the store is full of live records only.
    assert!(matches!(
        record(&store, &runs, 13).await,
        Err(Error::CapacityExceeded { .. })
    ));
    // A released key is claimed again with a higher epoch, though nothing of it was kept.
    let request = |owner| ClaimRequest {
        lease: Duration::from_secs(10),
        ttl: TTL,
        ..support::request("released", "k", owner)
    };
    let roomy = MemoryStore::new();
    let Claim::Acquired(first) = roomy.claim(&request(OwnerId::new())).await.unwrap() else {
        panic!("expected to acquire");
    };
    roomy.release(&first).await.unwrap();
    assert!(roomy.is_empty());
    let Claim::Acquired(second) = roomy.claim(&request(OwnerId::new())).await.unwrap() else {
        panic!("expected to acquire");
    };
    assert!(second.epoch() > first.epoch());
}

#[tokio::test(start_paused = true)]
async fn purge_expired_removes_a_record_at_exactly_its_expiry() {
    let runs = AtomicUsize::new(0);
    let store = MemoryStore::new();
    record(&store, &runs, 1).await.unwrap();
    advance(TTL - Duration::from_millis(1)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 0, "still live");
    advance(Duration::from_millis(1)).await;
    // At its expiry a claim takes the record for absent; the purge agrees.
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    assert!(store.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn len_never_exceeds_capacity_under_concurrent_churn() {
    const CAPACITY: usize = 64;
    const WORKERS: u64 = 8;
    const CLAIMS_PER_WORKER: u64 = 20_000;
    let store = MemoryStore::builder().capacity(CAPACITY).shards(4).build();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Samples `len()` as fast as it can while the workers churn.
    let sampler = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut samples, mut over) = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                if store.len() > store.capacity() {
                    over += 1;
                }
                samples += 1;
            }
            (samples, over)
        })
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..CLAIMS_PER_WORKER {
                    let key = format!("{worker}-{}", i % 200);
                    let request = ClaimRequest {
                        lease: Duration::from_millis(1),
                        ttl: Duration::from_millis(1),
                        ..support::request("churn", &key, OwnerId::new())
                    };
                    let outcome = match store.claim(&request).await {
                        Ok(Claim::Acquired(lease)) if i % 2 == 0 => store.release(&lease).await,
                        Ok(Claim::Acquired(lease)) => {
                            let payload = bytes::Bytes::from_static(b"x");
                            store.complete(&lease, payload, request.ttl).await
                        }
                        Ok(_) => Ok(()),
                        Err(error) => Err(error),
                    };
                    // A 1 ms lease may run out and its record be swept before it is released.
                    match outcome {
                        Ok(()) | Err(Error::LeaseLost | Error::CapacityExceeded { .. }) => {}
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                    assert!(store.len() <= CAPACITY, "len {} > {CAPACITY}", store.len());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let (samples, over) = sampler.join().unwrap();
    assert_eq!(
        over, 0,
        "len() was above capacity in {over} of {samples} samples"
    );
}

#[tokio::test(start_paused = true)]
async fn epochs_keep_growing_after_the_automatic_sweep_removed_the_record() {
    let store = MemoryStore::builder().shards(1).build();
    let claim = |key: String| {
        let store = store.clone();
        async move {
            let request = ClaimRequest {
                lease: Duration::from_secs(1),
                ttl: Duration::from_secs(1),
                ..support::request("swept", &key, OwnerId::new())
            };
            support::acquire(&store, &request).await
        }
    };
    let first = claim("k".to_owned()).await;
    store
        .complete(
            &first,
            bytes::Bytes::from_static(b"x"),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    advance(Duration::from_secs(2)).await;
    // Growing the shard past its sweep threshold removes the expired record.
    for i in 0..1100 {
        claim(format!("other-{i}")).await;
    }
    assert_eq!(store.len(), 1100, "the expired record was swept");
    let second = claim("k".to_owned()).await;
    assert!(
        second.epoch() > first.epoch(),
        "epoch {} after the sweep must exceed {}",
        second.epoch(),
        first.epoch()
    );
}

/// Expired records are swept as a shard grows, not on every insert: `len()` counts them until
/// then. A shard sweeps when it reaches 1,024 records, then when it doubles past its size
/// after the last sweep.
#[tokio::test(start_paused = true)]
async fn expired_records_are_swept_when_a_shard_doubles_not_on_every_insert() {
    let store = MemoryStore::builder().shards(1).build();
    assert!(store.is_empty());
    let claim = |key: String, ttl: Duration| {
        let store = store.clone();
        async move {
            let request = ClaimRequest {
                scope: "sweep",
                key: &key,
                fingerprint: Fingerprint::NONE,
                owner: OwnerId::new(),
                lease: Duration::from_secs(1),
                ttl,
            };
            assert!(matches!(
                store.claim(&request).await.unwrap(),
                Claim::Acquired(_)
            ));
        }
    };
    claim("short".to_owned(), Duration::from_secs(1)).await;
    assert!(!store.is_empty());
    advance(Duration::from_secs(2)).await;
    // Below the first threshold nothing is swept: the expired record still counts.
    claim("live-0".to_owned(), TTL).await;
    assert_eq!(store.len(), 2, "an expired record is kept until a sweep");
    for i in 1..1023 {
        claim(format!("live-{i}"), TTL).await;
    }
    // The 1,024th record triggers the sweep, which removes the expired one.
    assert_eq!(store.len(), 1023);

    // The next sweep comes at twice the size after that one: 2,046 records.
    claim("short-2".to_owned(), Duration::from_secs(1)).await;
    advance(Duration::from_secs(2)).await;
    for i in 1023..2044 {
        claim(format!("live-{i}"), TTL).await;
    }
    assert_eq!(store.len(), 2045, "not swept before the shard doubled");
    claim("live-2044".to_owned(), TTL).await;
    assert_eq!(
        store.len(),
        2045,
        "swept when it doubled: the expired record is gone"
    );
}

#[test]
fn debug_shows_size_and_configuration() {
    let store = MemoryStore::builder().capacity(10).shards(3).build();
    assert_eq!(
        format!("{store:?}"),
        "MemoryStore { len: 0, capacity: 10, shards: 4 }"
    );
}
