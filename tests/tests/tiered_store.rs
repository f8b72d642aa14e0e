//! `TieredStore` against live PostgreSQL and Redis: the conformance suite, replays served from
//! the cache, cache entries that never outlive their record or cross into another store's
//! table, and a cache that can be wrong or gone without changing any decision.

#![cfg(feature = "tiered")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, ClaimRequest, Forget, OwnerId, RecordState};
use idempotent_core::stores::postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use idempotent_core::testing::RawRecords;
use idempotent_core::{
    Call, CallOptions, Error, IdempotencyStore, PostgresStore, TieredStore, idempotent,
};
use support::assert_duplicates_run_once;
use support::postgres::{DropDatabase, DropTables, RawRows, connect};
use support::redis::{DeleteKeys as DeleteCacheKeys, RawRedis, RawReply};

async fn tiered(prefix: &str) -> Option<(TieredStore, (DropTables, DeleteCacheKeys))> {
    let (durable, tables) = connect(prefix, 16).await?;
    let cache_prefix = support::unique_name(prefix);
    let store = tiered_on(durable, &cache_prefix).await?;
    Some((store, (tables, DeleteCacheKeys(cache_prefix))))
}

/// [`tiered`], and a connection of the test's own to the Redis server, for raw commands.
async fn tiered_with_raw(
    prefix: &str,
) -> Option<(TieredStore, RawRedis, (DropTables, DeleteCacheKeys))> {
    let (store, guards) = tiered(prefix).await?;
    Some((store, RawRedis::connect().await?, guards))
}

/// A tiered store on `durable`, caching under `cache_prefix` (the caller deletes the keys).
async fn tiered_on(durable: PostgresStore, cache_prefix: &str) -> Option<TieredStore> {
    let url = support::redis_url();
    match TieredStore::builder()
        .cache_prefix(cache_prefix)
        .connect(durable, &url)
        .await
    {
        Ok(store) => Some(store),
        Err(error) => support::unavailable("Redis", &url, error),
    }
}

idempotent_core::store_conformance_tests!(tiered, with_raw_records, async {
    let (store, redis, guards) = crate::tiered_with_raw("idem_tiered_conf").await?;
    let raw: Arc<dyn RawRecords> = Arc::new(DamagedAuthority {
        rows: RawRows::of(store.durable()),
        store: store.clone(),
        redis,
    });
    Some((
        Arc::new(support::Guarded::new(store, guards)) as Arc<dyn IdempotencyStore>,
        raw,
    ))
});

/// Damage written into the PostgreSQL row, the record that decides; the cache entry goes with
/// it, as after the entry's own expiry, so the next claim reads the damaged row.
struct DamagedAuthority {
    rows: RawRows,
    store: TieredStore,
    redis: RawRedis,
}

#[async_trait::async_trait]
impl RawRecords for DamagedAuthority {
    async fn set_epoch(&self, scope: &str, key: &str, epoch: i64) {
        self.rows.set_epoch(scope, key, epoch).await;
        let entry = self.store.cache_key(scope, key);
        self.redis.command(&[b"DEL", entry.as_bytes()]).await;
    }

    fn max_epoch(&self) -> i64 {
        self.rows.max_epoch()
    }
}

/// A claim on `("tiered", "k")` with `fingerprint`, by a new owner, for ten minutes.
fn request_k(fingerprint: Fingerprint) -> ClaimRequest<'static> {
    ClaimRequest {
        fingerprint,
        ttl: Duration::from_secs(600),
        ..support::request("tiered", "k", OwnerId::new())
    }
}

async fn completed_once(store: &TieredStore, key: &str, fingerprint: Fingerprint) {
    let outcome = Call::new(store, "tiered", key)
        .fingerprint(fingerprint)
        .options(CallOptions::new().ttl(Duration::from_secs(600)))
        .run(async { Ok::<u32, Error>(7) })
        .await
        .expect("first call");
    assert!(!outcome.is_replayed());
}

#[tokio::test]
async fn replay_back_fills_the_cache_for_no_longer_than_the_record_lives() {
    let Some((store, redis, _guards)) = tiered_with_raw("idem_tiered_fill").await else {
        return;
    };
    let fingerprint = Fingerprint::of_bytes(b"req");
    completed_once(&store, "k", fingerprint).await;
    let cache_key = store.cache_key("tiered", "k");
    assert_eq!(
        redis.command(&[b"EXISTS", cache_key.as_bytes()]).await,
        RawReply::Int(0)
    );

    // The first replay reads PostgreSQL and copies the record into Redis...
    match store.claim(&request_k(fingerprint)).await {
        Ok(Claim::Completed(record)) => assert_eq!(&record.payload[..], b"\x017"),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(
        redis.command(&[b"EXISTS", cache_key.as_bytes()]).await,
        RawReply::Int(1)
    );
    // ...with a Redis expiry no later than the record's own (ttl 600 s).
    let RawReply::Int(pttl) = redis.command(&[b"PTTL", cache_key.as_bytes()]).await else {
        panic!("unexpected PTTL reply");
    };
    assert!(pttl > 0 && pttl <= 600_000, "cache entry pttl {pttl}");
}

#[tokio::test]
async fn replays_are_served_from_the_cache_once_back_filled() {
    let Some((store, _guards)) = tiered("idem_tiered_hit").await else {
        return;
    };
    let fingerprint = Fingerprint::of_bytes(b"req");
    completed_once(&store, "k", fingerprint).await;
    assert!(matches!(
        store.claim(&request_k(fingerprint)).await,
        Ok(Claim::Completed(_))
    ));
    // Remove the record from PostgreSQL behind the store's back: only the cache has it now.
    let table = store.durable().table().to_owned();
    sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(store.durable().pool())
        .await
        .expect("delete");
    match store.claim(&request_k(fingerprint)).await {
        Ok(Claim::Completed(record)) => {
            assert_eq!(&record.payload[..], b"\x017");
            assert!(record.epoch > 0);
            assert_eq!(
                record.expires_in, None,
                "a cached copy does not know its expiry"
            );
        }
        other => panic!("expected the cached record, got {other:?}"),
    }
    // The cache also enforces the fingerprint.
    assert_eq!(
        store
            .claim(&request_k(Fingerprint::of_bytes(b"other")))
            .await
            .expect("claim"),
        Claim::PayloadMismatch
    );
}

#[tokio::test]
async fn an_unreadable_cache_entry_is_ignored_and_postgres_answers() {
    let Some((store, redis, _guards)) = tiered_with_raw("idem_tiered_corrupt").await else {
        return;
    };
    let fingerprint = Fingerprint::of_bytes(b"req");
    completed_once(&store, "k", fingerprint).await;
    let cache_key = store.cache_key("tiered", "k");
    assert_eq!(
        redis
            .command(&[b"SET", cache_key.as_bytes(), b"garbage"])
            .await,
        RawReply::Status("OK".to_owned())
    );
    match store.claim(&request_k(fingerprint)).await {
        Ok(Claim::Completed(record)) => assert_eq!(&record.payload[..], b"\x017"),
        other => panic!("expected PostgreSQL's record, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_never_completed_is_decided_by_postgres_only() {
    let Some((store, redis, _guards)) = tiered_with_raw("idem_tiered_fresh").await else {
        return;
    };
    // A cache entry for an in-progress key can never exist: claims go to PostgreSQL.
    let first = store
        .claim(&request_k(Fingerprint::NONE))
        .await
        .expect("claim");
    assert!(matches!(first, Claim::Acquired(_)));
    assert!(matches!(
        store
            .claim(&request_k(Fingerprint::NONE))
            .await
            .expect("claim"),
        Claim::InFlight { .. }
    ));
    let cache_key = store.cache_key("tiered", "k");
    assert_eq!(
        redis.command(&[b"EXISTS", cache_key.as_bytes()]).await,
        RawReply::Int(0)
    );
}

#[idempotent(key = "id", store = store, skip = "runs", scope = "tiered.attribute")]
async fn charge(store: &TieredStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(id * 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thousand_concurrent_duplicates_run_the_body_once() {
    let Some((store, _guards)) = tiered("idem_tiered_dup").await else {
        return;
    };
    let store = Arc::new(store);
    let runs = Arc::new(AtomicUsize::new(0));
    assert_duplicates_run_once(1000, &runs, 42, || {
        let (store, runs) = (store.clone(), runs.clone());
        async move { charge(&store, &runs, 21).await }
    })
    .await;
}

/// One call on `("tiered", "k")` with `fingerprint`, whose body returns `value`: the value it
/// got and whether it was replayed.
async fn call_k(store: &TieredStore, fingerprint: Fingerprint, value: &str) -> (String, bool) {
    let outcome = Call::new(store, "tiered", "k")
        .fingerprint(fingerprint)
        .options(CallOptions::new().ttl(Duration::from_secs(600)))
        .run(async { Ok::<String, Error>(value.to_owned()) })
        .await
        .expect("call");
    let replayed = outcome.is_replayed();
    (outcome.value, replayed)
}

/// Tiered stores on `first` and `second` that cache under one new prefix (named after
/// `prefix`), and the guard that deletes its keys.
async fn sharing_one_cache(
    first: PostgresStore,
    second: PostgresStore,
    prefix: &str,
) -> Option<(TieredStore, TieredStore, DeleteCacheKeys)> {
    let cache_prefix = support::unique_name(prefix);
    let keys = DeleteCacheKeys(cache_prefix.clone());
    let first = tiered_on(first, &cache_prefix).await?;
    let second = tiered_on(second, &cache_prefix).await?;
    Some((first, second, keys))
}

/// Two tiered stores whose durable halves are different records (tables, databases), sharing
/// a cache: the same scope, key and fingerprint in each must replay each one's own result.
async fn assert_each_replays_its_own_result(first: &TieredStore, second: &TieredStore) {
    assert_ne!(
        first.cache_key("tiered", "k"),
        second.cache_key("tiered", "k")
    );
    let fingerprint = Fingerprint::of_bytes(b"req");
    // The first store completes and back-fills its result...
    assert_eq!(
        call_k(first, fingerprint, "one").await,
        ("one".into(), false)
    );
    assert_eq!(
        call_k(first, fingerprint, "one").await,
        ("one".into(), true)
    );
    assert_eq!(
        call_k(first, fingerprint, "one").await,
        ("one".into(), true)
    );
    // ...which the second store, whose durable half has no record of the key, must not replay.
    assert_eq!(
        call_k(second, fingerprint, "two").await,
        ("two".into(), false),
        "the second store replayed the first store's cached result"
    );
    for _ in 0..2 {
        assert_eq!(
            call_k(second, fingerprint, "two").await,
            ("two".into(), true)
        );
        assert_eq!(
            call_k(first, fingerprint, "one").await,
            ("one".into(), true)
        );
    }
}

/// A replay that read a completed record must cache exactly that record, and for no longer
/// than the record lives, even when the record expires and is replaced while the replay is
/// still on its way back.
///
/// The interleaving is forced, not hoped for. The tiered store under test reads a view of
/// the table whose row filter takes a shared advisory lock; the test holds that lock
/// exclusively, so the store's claim statement stops *inside* its execution, after its
/// snapshot (the old record `A`, live) and its clock reading were taken. While it waits, `A`
/// expires on the server clock and a second instance (a `PostgresStore` on the table itself)
/// claims the key with another fingerprint and completes `B`. Then the lock is released: the
/// claim answers `A`, with the time `A` had left when the statement began, and the store
/// back-fills the cache.
///
/// `A` has expired by the time the answer arrives, so nothing may be cached. A back-fill that
/// took the expiry from a second query (which reads `B`'s) cached `A` for `B`'s ten minutes;
/// one that counted `A`'s time left from the answer's arrival rather than from the claim's
/// start cached `A` past its expiry. Either way the next request, `B`'s own retry, got `A`'s
/// fingerprint from the cache and failed with a payload mismatch. The test checks the cache
/// directly, then that retry, then that `B`'s own entry ends no later than `B`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_fill_caches_only_the_record_the_claim_returned() {
    let Some((table_store, tables)) = connect("idem_tiered_stale", 4).await else {
        return;
    };
    let table = table_store.table().to_owned();
    let pool = table_store.pool().clone();
    let gated = format!("{table}_gated");
    let gate_key = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        table.hash(&mut hasher);
        hasher.finish() as i64
    };
    // Dropped with the table (DROP TABLE ... CASCADE).
    sqlx::query(AssertSqlSafe(format!(
        "CREATE VIEW {gated} AS SELECT * FROM {table} \
         WHERE pg_advisory_xact_lock_shared({gate_key})::text IS NOT NULL"
    )))
    .execute(&pool)
    .await
    .expect("create the gated view");
    // The gate is an advisory lock the claim waits on: a lock timeout must not cut it short.
    let gated_store = PostgresStore::builder()
        .table(&gated)
        .lock_timeout(Duration::from_secs(30))
        .build(pool.clone())
        .expect("store on the view");
    let cache_prefix = support::unique_name("idem_tiered_stale");
    let _guards = (tables, DeleteCacheKeys(cache_prefix.clone()));
    // A generous cache timeout: a busy machine must not make the store skip the cache, which
    // would hide what it caches.
    let url = support::redis_url();
    let store = match TieredStore::builder()
        .cache_prefix(&cache_prefix)
        .cache_timeout(Duration::from_secs(2))
        .connect(gated_store, &url)
        .await
    {
        Ok(store) => store,
        Err(error) => return support::unavailable("Redis", &url, error).unwrap_or(()),
    };
    let Some(redis) = RawRedis::connect().await else {
        return;
    };
    let cache_key = store.cache_key("tiered", "k");
    let (old, new) = (Fingerprint::of_bytes(b"old"), Fingerprint::of_bytes(b"new"));

    // `A`: completed through the tiered store, then given a short time left on the server clock.
    let Ok(Claim::Acquired(lease)) = store.claim(&request_k(old)).await else {
        panic!("expected to acquire the fresh key");
    };
    store
        .complete(
            &lease,
            bytes::Bytes::from_static(b"A"),
            Duration::from_secs(600),
        )
        .await
        .expect("complete A");
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET expires_at = statement_timestamp() + interval '3 seconds'"
    )))
    .execute(&pool)
    .await
    .expect("shorten A's ttl");

    // Close the gate, and start a replay of `A` through the tiered store: it stops inside its
    // claim statement.
    let mut gate = PgConnection::connect(&support::postgres_url())
        .await
        .expect("gate connection");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(gate_key)
        .execute(&mut gate)
        .await
        .expect("close the gate");
    let replay = tokio::spawn({
        let store = store.clone();
        async move { store.claim(&request_k(old)).await }
    });
    let mut waiting = false;
    for _ in 0..200 {
        // A claim waiting for this test's gate (its statement text is too long for
        // pg_stat_activity to show the table name).
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND ((classid::bigint << 32) | objid::bigint) = $1",
        )
        .bind(gate_key)
        .fetch_one(&pool)
        .await
        .expect("pg_locks");
        if count > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the replay's claim never reached the gate");

    // Meanwhile `A` expires, and another instance claims the key afresh and completes `B`.
    let mut expired = false;
    for _ in 0..200 {
        let past: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT expires_at <= statement_timestamp() FROM {table}"
        )))
        .fetch_one(&pool)
        .await
        .expect("read A's expiry");
        if past {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(expired, "A never expired");
    let Ok(Claim::Acquired(lease)) = table_store.claim(&request_k(new)).await else {
        panic!("the other instance should take the expired key over");
    };
    table_store
        .complete(
            &lease,
            bytes::Bytes::from_static(b"B"),
            Duration::from_secs(600),
        )
        .await
        .expect("complete B");

    // Open the gate: the replay's claim answers `A` (its snapshot was taken while `A` was
    // live), and the store back-fills the cache.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(gate_key)
        .execute(&mut gate)
        .await
        .expect("open the gate");
    let _ = gate.close().await;
    match replay.await.expect("replay task") {
        Ok(Claim::Completed(record)) => assert_eq!(
            &record.payload[..],
            b"A",
            "the replay's claim read A while it was live"
        ),
        other => panic!("the replay's claim should have read A while it was live: {other:?}"),
    }

    // `A` had expired before the answer arrived: it must not be in the cache at all.
    assert_eq!(
        redis.command(&[b"GET", cache_key.as_bytes()]).await,
        RawReply::Nil,
        "the back-fill cached A although A had expired"
    );
    // `B`'s retry replays `B`, and `A`'s request is a mismatch now, as PostgreSQL says.
    match store.claim(&request_k(new)).await {
        Ok(Claim::Completed(record)) => assert_eq!(&record.payload[..], b"B"),
        other => panic!("B's retry must replay B, got {other:?}"),
    }
    assert_eq!(
        store.claim(&request_k(old)).await.expect("claim"),
        Claim::PayloadMismatch
    );
    // And the cache entry (now `B`'s, back-filled by the retry) ends no later than its record.
    let remaining_ms: f64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000 AS float8) \
         FROM {table}"
    )))
    .fetch_one(&pool)
    .await
    .expect("read B's expiry");
    let RawReply::Int(pttl) = redis.command(&[b"PTTL", cache_key.as_bytes()]).await else {
        panic!("unexpected PTTL reply");
    };
    // One millisecond for Redis's clock, which counts whole milliseconds.
    assert!(
        pttl > 0 && pttl as f64 <= remaining_ms + 1.0,
        "cache entry pttl {pttl} ms, record has {remaining_ms} ms left"
    );
}

/// Two tiered stores over different tables, sharing one Redis server and one cache prefix:
/// the same scope, key and fingerprint in each must replay each table's own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_stores_over_different_tables_do_not_share_cache_entries() {
    let Some((first_durable, first_table)) = connect("idem_tiered_tab_a", 4).await else {
        return;
    };
    let Some((second_durable, second_table)) = connect("idem_tiered_tab_b", 4).await else {
        return;
    };
    let _tables = (first_table, second_table);
    let Some((first, second, _keys)) =
        sharing_one_cache(first_durable, second_durable, "idem_tiered_shared").await
    else {
        return;
    };
    assert_each_replays_its_own_result(&first, &second).await;
}

/// Cache keys name the table that decides, not the spelling of its name: a store configured
/// with `table` and one with `public.table` share entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_stores_over_one_table_share_cache_entries() {
    let Some((durable, tables)) = connect("idem_tiered_one", 4).await else {
        return;
    };
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(durable.pool())
        .await
        .expect("current_schema");
    let qualified = PostgresStore::builder()
        .table(format!("{schema}.{}", durable.table()))
        .build(durable.pool().clone())
        .expect("qualified store");
    let _tables = tables;
    let Some((first, second, _keys)) =
        sharing_one_cache(durable, qualified, "idem_tiered_one").await
    else {
        return;
    };
    assert_eq!(
        first.cache_key("tiered", "k"),
        second.cache_key("tiered", "k")
    );
    let fingerprint = Fingerprint::of_bytes(b"req");
    assert_eq!(
        call_k(&first, fingerprint, "one").await,
        ("one".into(), false)
    );
    assert_eq!(
        call_k(&first, fingerprint, "one").await,
        ("one".into(), true)
    );
    assert_eq!(
        call_k(&second, fingerprint, "two").await,
        ("one".into(), true)
    );
}

/// Two tiered stores over tables of the same name in two databases of one server, sharing
/// one Redis server and one cache prefix: each replays its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_stores_over_different_databases_do_not_share_cache_entries() {
    let Some((first_durable, first_table)) = connect("idem_tiered_db", 4).await else {
        return;
    };
    let url = support::postgres_url();
    let database = support::unique_name("idem_tiered_db");
    {
        let mut admin = PgConnection::connect(&url).await.expect("connect");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
            .execute(&mut admin)
            .await
            .expect("create the second database");
        let _ = admin.close().await;
    }
    let _database = DropDatabase {
        url: url.clone(),
        name: database.clone(),
    };
    let options: PgConnectOptions = url.parse().expect("postgres url");
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.database(&database))
        .await
        .expect("connect to the second database");
    let second_durable = PostgresStore::builder()
        .table(first_durable.table())
        .build(pool.clone())
        .expect("store in the second database");
    second_durable.migrate().await.expect("migrate");
    let _tables = first_table;
    let Some((first, second, _keys)) =
        sharing_one_cache(first_durable, second_durable, "idem_tiered_db").await
    else {
        return;
    };
    assert_each_replays_its_own_result(&first, &second).await;
    drop((first, second));
    pool.close().await;
}

/// An entry whose header is intact but whose payload was damaged must cost a cache miss,
/// not fail every call with a decode error for the entry's lifetime: PostgreSQL's good record
/// is replayed, and the damaged entry is deleted (and back-filled again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_entry_with_a_valid_header_and_a_corrupt_payload_is_bypassed() {
    let Some((store, redis, _guards)) = tiered_with_raw("idem_tiered_flip").await else {
        return;
    };
    let fingerprint = Fingerprint::of_bytes(b"req");
    completed_once(&store, "k", fingerprint).await;
    let runs = AtomicUsize::new(0);
    let call = || {
        Call::new(&store, "tiered", "k")
            .fingerprint(fingerprint)
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, Error>(8)
            })
    };
    // The first replay back-fills a real entry.
    assert_eq!(call().await.expect("replay").value, 7);
    let cache_key = store.cache_key("tiered", "k");
    let RawReply::Data(good) = redis.command(&[b"GET", cache_key.as_bytes()]).await else {
        panic!("the replay should have back-filled the cache");
    };
    // Flip the entry's last byte: the engine's payload is now `0x01` and one byte that is not
    // JSON, while the header before it is untouched.
    let mut damaged = good.clone();
    *damaged.last_mut().expect("a non-empty entry") ^= 0xff;
    assert_eq!(
        redis
            .command(&[b"SET", cache_key.as_bytes(), &damaged, b"KEEPTTL"])
            .await,
        RawReply::Status("OK".to_owned())
    );

    for _ in 0..3 {
        let outcome = call()
            .await
            .expect("the damaged entry must not fail the call");
        assert!(outcome.is_replayed());
        assert_eq!(outcome.value, 7);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the body never runs again");
    match redis.command(&[b"GET", cache_key.as_bytes()]).await {
        RawReply::Nil => {}
        RawReply::Data(entry) => assert_eq!(entry, good, "the damaged entry was replaced"),
        other => panic!("unexpected GET reply {other:?}"),
    }
}

/// A forget puts a stand-in over the record's cache entry for as long as the record would
/// have lived, and a back-fill never writes over it: a claim that read the record just before
/// the forget cannot put the forgotten result back in the cache.
#[tokio::test]
async fn a_forgotten_record_leaves_a_stand_in_no_back_fill_overwrites() {
    let Some((store, redis, _guards)) = tiered_with_raw("idem_tiered_forget").await else {
        return;
    };
    let fingerprint = Fingerprint::of_bytes(b"req");
    completed_once(&store, "k", fingerprint).await;
    // The replay back-fills the cache.
    assert!(matches!(
        store.claim(&request_k(fingerprint)).await,
        Ok(Claim::Completed(_))
    ));
    let cache_key = store.cache_key("tiered", "k");
    let RawReply::Data(entry) = redis.command(&[b"GET", cache_key.as_bytes()]).await else {
        panic!("the replay must have cached the record");
    };
    assert_ne!(entry, b"\x00");

    match store.forget("tiered", "k", Forget::UnlessLeased).await {
        Ok(RecordState::Completed { payload, .. }) => assert_eq!(&payload[..], b"\x017"),
        other => panic!("forget must return the completed record, got {other:?}"),
    }
    assert_eq!(
        redis.command(&[b"GET", cache_key.as_bytes()]).await,
        RawReply::Data(b"\x00".to_vec()),
        "the entry is replaced by the stand-in"
    );
    let RawReply::Int(pttl) = redis.command(&[b"PTTL", cache_key.as_bytes()]).await else {
        panic!("unexpected PTTL reply");
    };
    assert!(
        pttl > 0 && pttl <= 600_000,
        "the stand-in lives as long as the record would have: pttl {pttl}"
    );

    // The next call runs; the replays of its result come from PostgreSQL, whose back-fill
    // leaves the stand-in in place.
    let Ok(Claim::Acquired(lease)) = store.claim(&request_k(fingerprint)).await else {
        panic!("the key must be claimable after a forget");
    };
    store
        .complete(
            &lease,
            bytes::Bytes::from_static(b"\x018"),
            Duration::from_secs(600),
        )
        .await
        .expect("complete");
    for _ in 0..2 {
        match store.claim(&request_k(fingerprint)).await {
            Ok(Claim::Completed(record)) => assert_eq!(&record.payload[..], b"\x018"),
            other => panic!("expected the new record, got {other:?}"),
        }
    }
    assert_eq!(
        redis.command(&[b"GET", cache_key.as_bytes()]).await,
        RawReply::Data(b"\x00".to_vec()),
        "a back-fill never writes over the stand-in"
    );
}

/// The cache on the application's own connection manager, and on a client it built: the
/// first replay back-fills the entry through that connection.
#[tokio::test]
async fn the_cache_works_on_the_applications_manager_and_client() {
    use idempotent_core::stores::redis::redis;
    let Some(raw) = RawRedis::connect().await else {
        return;
    };
    for with_manager in [true, false] {
        let Some((durable, _tables)) = connect("idem_tiered_app_conn", 4).await else {
            return;
        };
        let prefix = support::unique_name("idem_tiered_app_conn");
        let _keys = DeleteCacheKeys(prefix.clone());
        let client = redis::Client::open(support::redis_url()).expect("client");
        let builder = TieredStore::builder().cache_prefix(&prefix);
        let store = if with_manager {
            let manager = client.get_connection_manager().await.expect("manager");
            builder.connect_with_manager(durable, manager).await
        } else {
            builder.connect_with_client(durable, client).await
        }
        .expect("build the tiered store");
        let fingerprint = Fingerprint::of_bytes(b"req");
        completed_once(&store, "k", fingerprint).await;
        assert!(matches!(
            store.claim(&request_k(fingerprint)).await,
            Ok(Claim::Completed(_))
        ));
        let entry = store.cache_key("tiered", "k");
        assert_eq!(
            raw.command(&[b"EXISTS", entry.as_bytes()]).await,
            RawReply::Int(1),
            "with_manager {with_manager}: the replay back-filled the cache"
        );
    }
}
