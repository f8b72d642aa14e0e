#![cfg(feature = "sqlite")]
//! `SqliteStore`: the conformance suite, durability across a reopen, 1,000 concurrent
//! duplicates through `#[idempotent]`, table-name validation, and cancelled claims.
//!
//! Corrupt rows and the persisted row format, which need a raw connection, are in
//! `sqlite_rows.rs`.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::testing::RawRecords;
use idempotent_core::{
    Call, Disposition, Error, IdempotencyStore, SqliteStore, SqliteStoreBuilder, idempotent,
    observe,
};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use support::sqlite::{RawRows, TempDb};
use support::{acquire, assert_duplicates_run_once, request};
use tokio::sync::Barrier;

/// A store that owns its temporary database: the files go when the suite drops the store
/// (`Guarded` drops the store, and so its connections, before the files).
struct TempStore;

impl TempStore {
    /// The store, and raw access to its rows for the suite's checks of damaged records.
    async fn open(
        label: &str,
        builder: SqliteStoreBuilder,
    ) -> (Arc<dyn IdempotencyStore>, Arc<dyn RawRecords>) {
        let db = TempDb::new(label);
        let store = builder
            .open(db.path())
            .await
            .expect("open the sqlite store");
        let raw = RawRows::new(db.path(), store.table());
        (Arc::new(support::Guarded::new(store, db)), Arc::new(raw))
    }
}

// The default configuration: a file, WAL, one writer plus three readers, fsync on commit.
idempotent_core::store_conformance_tests!(sqlite, with_raw_records, async {
    Some(TempStore::open("conformance", SqliteStore::builder()).await)
});

// One connection doing reads and writes.
idempotent_core::store_conformance_tests!(sqlite_one_connection, with_raw_records, async {
    Some(TempStore::open("conformance-one", SqliteStore::builder().pool_size(1)).await)
});

// A custom table, commits without fsync.
idempotent_core::store_conformance_tests!(sqlite_custom_table_no_fsync, with_raw_records, async {
    let builder = SqliteStore::builder()
        .table("custom_records")
        .fsync_on_commit(false);
    Some(TempStore::open("conformance-custom", builder).await)
});

// The application's own pool: four connections that all read and write.
idempotent_core::store_conformance_tests!(sqlite_on_an_existing_pool, with_raw_records, async {
    let db = TempDb::new("conformance-pool");
    let pool = application_pool(&db, 4).await;
    let store = SqliteStore::builder()
        .build(pool)
        .await
        .expect("build on the pool");
    let raw: Arc<dyn RawRecords> = Arc::new(RawRows::new(db.path(), store.table()));
    Some((
        Arc::new(support::Guarded::new(store, db)) as Arc<dyn IdempotencyStore>,
        raw,
    ))
});

/// A pool as an application would open it: WAL, a busy timeout, `connections` connections.
async fn application_pool(db: &TempDb, connections: u32) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(db.path())
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .expect("the application's pool")
}

idempotent_core::store_conformance_tests!(sqlite_in_memory, async {
    let store = SqliteStore::in_memory().await.expect("open in memory");
    Some(Arc::new(store) as Arc<dyn IdempotencyStore>)
});

const CALLS: usize = 1_000;

#[idempotent(key = "id", store = store, skip = "runs", lease = "30s")]
async fn slow_job(store: SqliteStore, runs: Arc<AtomicUsize>, id: u64) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!("job-{id}-run-{run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn thousand_concurrent_duplicates_through_the_macro_run_once() {
    let db = TempDb::new("macro-1000");
    let store = SqliteStore::open(db.path()).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    assert_duplicates_run_once(CALLS, &runs, "job-7-run-1".to_owned(), || {
        slow_job(store.clone(), runs.clone(), 7)
    })
    .await;
    store.close().await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount: u64,
}

#[idempotent(key = "order_id", store = store, skip = "runs", scope = "tests.sqlite.charge")]
async fn charge(
    store: &SqliteStore,
    runs: &AtomicUsize,
    order_id: u64,
    amount: u64,
) -> Result<Receipt, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(Receipt {
        charge_id: format!("ch_{order_id}"),
        amount,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_record_survives_reopening_the_file() {
    let db = TempDb::new("durable-completed");
    let runs = AtomicUsize::new(0);

    let store = SqliteStore::open(db.path()).await.unwrap();
    let (first, how) = observe(charge(&store, &runs, 42, 1_999)).await;
    assert_eq!(how, Some(Disposition::Executed));
    let first = first.unwrap();
    // Dropped without `close`: what is committed must be on disk already.
    drop(store);

    let store = SqliteStore::open(db.path()).await.unwrap();
    let (again, how) = observe(charge(&store, &runs, 42, 1_999)).await;
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(again.unwrap(), first);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the body must not run again"
    );
    // The fingerprint is persisted too.
    assert!(matches!(
        charge(&store, &runs, 42, 5).await,
        Err(Error::PayloadMismatch { .. })
    ));
    store.close().await;

    // And after a clean close.
    let store = SqliteStore::open(db.path()).await.unwrap();
    assert_eq!(charge(&store, &runs, 42, 1_999).await.unwrap(), first);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_claim_survives_reopening_and_is_taken_over_only_after_its_lease() {
    let db = TempDb::new("durable-in-progress");
    let lease_for = Duration::from_millis(3000);
    let claim = |owner| ClaimRequest {
        lease: lease_for,
        ..request("durable", "k", owner)
    };
    let crashed = OwnerId::new();

    let store = SqliteStore::open(db.path()).await.unwrap();
    let stale = acquire(&store, &claim(crashed)).await;
    assert!(stale.epoch() > 0);
    // The process "dies" holding the claim: no release.
    drop(store);

    let store = SqliteStore::open(db.path()).await.unwrap();
    match store.claim(&claim(OwnerId::new())).await.unwrap() {
        Claim::InFlight { retry_after } => assert!(retry_after <= lease_for),
        other => panic!("the claim must survive the restart, got {other:?}"),
    }
    tokio::time::sleep(lease_for + Duration::from_millis(100)).await;
    // A takeover, after the lease.
    let current = acquire(&store, &claim(OwnerId::new())).await;
    assert!(
        current.epoch() > stale.epoch(),
        "the takeover fences the old owner"
    );
    assert!(matches!(
        store
            .complete(
                &stale,
                Bytes::from_static(b"stale"),
                Duration::from_secs(60)
            )
            .await,
        Err(Error::LeaseLost)
    ));
    store
        .complete(
            &current,
            Bytes::from_static(b"current"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    store.close().await;

    let store = SqliteStore::open(db.path()).await.unwrap();
    match store.claim(&claim(OwnerId::new())).await.unwrap() {
        Claim::Completed(record) => {
            assert_eq!(&record.payload[..], b"current");
            assert_eq!(record.epoch, current.epoch());
        }
        other => panic!("expected the current owner's record, got {other:?}"),
    }
    store.close().await;
}

#[tokio::test]
async fn table_names_are_validated() {
    let db = TempDb::new("table-names");
    let too_long = "t".repeat(64);
    for name in [
        "",
        "1records",
        "my-records",
        "my records",
        "records\"; DROP TABLE x; --",
        "récords",
        "sqlite_master",
        "SQLITE_records",
        // One rule for both SQL stores: lowercase only.
        "Records_2",
        too_long.as_str(),
    ] {
        match SqliteStore::builder().table(name).open(db.path()).await {
            Err(Error::InvalidInput { reason }) => assert!(reason.contains("table name")),
            other => panic!("table name {name:?} must be rejected, got {other:?}"),
        }
    }

    let longest = "t".repeat(63);
    for name in ["_records", "records_2", "sqlite", longest.as_str()] {
        let store = SqliteStore::builder()
            .table(name)
            .open(db.path())
            .await
            .unwrap_or_else(|error| panic!("table name {name:?} must be accepted: {error}"));
        assert_eq!(store.table(), name);
        // Tables in one file are independent stores.
        let claim = store
            .claim(&request("tables", "k", OwnerId::new()))
            .await
            .unwrap();
        assert!(matches!(claim, Claim::Acquired(ref lease) if lease.epoch() > 0));
        store.close().await;
    }
}

/// Polls `future` `polls` times, pausing `pause` between polls, then drops it if it has not
/// finished. Returns whether it finished.
async fn poll_then_drop<F: Future>(future: F, polls: usize, pause: Duration) -> bool {
    let mut future = pin!(future);
    for _ in 0..polls {
        let ready = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await;
        if ready {
            return true;
        }
        // Let the connection's worker thread get on with the statement.
        std::thread::sleep(pause);
        tokio::task::yield_now().await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_claims_leave_no_transaction_open() {
    const ATTEMPTS: usize = 400;
    /// Every claim here holds for a minute.
    const LEASE: Duration = Duration::from_secs(60);
    fn claim(key: &str, owner: OwnerId) -> ClaimRequest<'_> {
        ClaimRequest {
            lease: LEASE,
            ..request("cancel", key, owner)
        }
    }
    let db = TempDb::new("cancel");
    let store = SqliteStore::builder()
        .pool_size(2)
        .open(db.path())
        .await
        .unwrap();
    let owners: Vec<OwnerId> = (0..ATTEMPTS).map(|_| OwnerId::new()).collect();
    let keys: Vec<String> = (0..ATTEMPTS).map(|i| format!("k{i}")).collect();

    let mut cancelled = 0;
    for (i, (key, owner)) in keys.iter().zip(&owners).enumerate() {
        let request = claim(key, *owner);
        let pause = Duration::from_micros((i % 7) as u64 * 15);
        if !poll_then_drop(store.claim(&request), 1 + i % 9, pause).await {
            cancelled += 1;
        }
    }
    assert!(cancelled > 0, "no claim was cancelled mid-way");

    // Every cancelled claim either committed or left nothing: the same owner gets its claim
    // back, the same lease each time it asks.
    let (mut written, mut absent) = (0, 0);
    for (key, owner) in keys.iter().zip(&owners) {
        match store.claim(&claim(key, OwnerId::new())).await.unwrap() {
            Claim::InFlight { .. } => written += 1,
            Claim::Acquired(lease) => {
                absent += 1;
                store.release(&lease).await.unwrap();
                continue;
            }
            other => panic!("unexpected state after a cancelled claim: {other:?}"),
        }
        match store.claim(&claim(key, *owner)).await.unwrap() {
            Claim::Acquired(lease) => {
                let again = store.claim(&claim(key, *owner)).await.unwrap();
                assert_eq!(
                    again,
                    Claim::Acquired(lease),
                    "a retried claim keeps its lease"
                );
            }
            other => panic!("the cancelled owner must still hold its claim, got {other:?}"),
        }
    }
    eprintln!(
        "{cancelled} of {ATTEMPTS} claims cancelled mid-way; {written} had committed, {absent} had not"
    );

    // The writer connection is usable: a write transaction starts and commits.
    let lease = acquire(&store, &claim("after", OwnerId::new())).await;
    store
        .complete(&lease, Bytes::from_static(b"ok"), LEASE)
        .await
        .unwrap();

    // And no connection holds the file's write lock: a second store on the same file, with a
    // short busy timeout, can write.
    let other = SqliteStore::builder()
        .busy_timeout(Duration::from_millis(200))
        .open(db.path())
        .await
        .unwrap();
    match other.claim(&claim("other", OwnerId::new())).await {
        Ok(Claim::Acquired(_)) => {}
        other => panic!("the write lock must be free, got {other:?}"),
    }
    match other.claim(&claim("after", OwnerId::new())).await {
        Ok(Claim::Completed(record)) => assert_eq!(&record.payload[..], b"ok"),
        other => panic!("expected the completed record, got {other:?}"),
    }
    other.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_in_background_without_a_runtime_does_nothing() {
    let db = TempDb::new("no-runtime");
    let store = SqliteStore::open(db.path()).await.unwrap();
    let lease = acquire(&store, &request("bg", "k", OwnerId::new())).await;
    let outside = store.clone();
    std::thread::spawn(move || outside.release_in_background(lease))
        .join()
        .expect("release_in_background must not panic outside a runtime");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_still_admit_one_claimer() {
    // Two stores have two writer connections, as two processes sharing the file would: they
    // contend for SQLite's write lock, which `BEGIN IMMEDIATE` and the busy timeout arbitrate.
    const CLAIMERS: usize = 200;
    let db = TempDb::new("two-stores");
    let stores = [
        SqliteStore::open(db.path()).await.unwrap(),
        SqliteStore::open(db.path()).await.unwrap(),
    ];
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let tasks: Vec<_> = (0..CLAIMERS)
        .map(|i| {
            let (store, barrier) = (stores[i % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .claim(&request("two-stores", "k", OwnerId::new()))
                    .await
            })
        })
        .collect();
    let (mut acquired, mut in_flight) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Claim::Acquired(_)) => acquired += 1,
            Ok(Claim::InFlight { .. }) => in_flight += 1,
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!((acquired, in_flight), (1, CLAIMERS - 1));
    for store in &stores {
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_more_than_one_batch_and_keeps_live_records() {
    const EXPIRED: usize = 2_500;
    let db = TempDb::new("purge-batches");
    let store = SqliteStore::builder()
        .fsync_on_commit(false)
        .open(db.path())
        .await
        .unwrap();
    let short = Duration::from_millis(1);
    for i in 0..EXPIRED {
        let key = format!("old{i}");
        let request = ClaimRequest {
            lease: short,
            ttl: short,
            ..request("purge", &key, OwnerId::new())
        };
        assert!(matches!(
            store.claim(&request).await.unwrap(),
            Claim::Acquired(_)
        ));
    }
    let live = request("purge", "live", OwnerId::new());
    let Claim::Acquired(lease) = store.claim(&live).await.unwrap() else {
        panic!("expected to acquire");
    };
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert_eq!(store.purge_expired().await.unwrap(), EXPIRED as u64);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    // The live claim is untouched; a purged key is claimed afresh, above the live one's epoch
    // (which was claimed later than the purged ones).
    store
        .complete(&lease, Bytes::from_static(b"kept"), Duration::from_secs(60))
        .await
        .unwrap();
    match store
        .claim(&ClaimRequest {
            lease: short,
            ..request("purge", "old0", OwnerId::new())
        })
        .await
        .unwrap()
    {
        Claim::Acquired(fresh) => assert!(fresh.epoch() > lease.epoch()),
        other => panic!("expected a fresh record, got {other:?}"),
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_pool_shares_it_and_its_file() {
    let db = TempDb::new("app-pool");
    let pool = application_pool(&db, 2).await;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("the application's table");
    let store = SqliteStore::builder()
        .table("order_records")
        .build(pool.clone())
        .await
        .expect("build on the pool");
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let runs = runs.clone();
        let pool = pool.clone();
        let outcome = Call::new(&store, "orders", "order-1")
            .run(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                sqlx::query("INSERT INTO orders (item) VALUES ('book')")
                    .execute(&pool)
                    .await
                    .map_err(|error| Error::store("app", error))?;
                Ok::<_, Error>("ordered".to_owned())
            })
            .await
            .expect("call");
        assert_eq!(outcome.into_value(), "ordered");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the retry is a replay");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .expect("count orders");
    assert_eq!(orders, 1, "one effect");
    // The records live in the same file, in the table the builder named.
    let records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_records WHERE state = 'completed'")
            .fetch_one(&pool)
            .await
            .expect("count records");
    assert_eq!(records, 1);
    assert!(
        format!("{store:?}").contains(&db.path().display().to_string()),
        "Debug names the database file: {store:?}"
    );
    store.close().await;
    pool.close().await;
}

#[tokio::test]
async fn a_store_on_an_existing_pool_validates_its_table_name() {
    let db = TempDb::new("app-pool-name");
    let pool = application_pool(&db, 1).await;
    match SqliteStore::builder()
        .table("Orders; DROP")
        .build(pool.clone())
        .await
    {
        Err(Error::InvalidInput { reason }) => assert!(reason.contains("table name"), "{reason}"),
        other => panic!("an invalid table name must be rejected, got {other:?}"),
    }
    pool.close().await;
}
