//! `PostgresStore` against a live server: the conformance suite, the attribute under 1,000
//! concurrent duplicates, transactional mode, unreadable rows, table names, and round trips
//! counted on the server.
//!
//! The server comes from `IDEMPOTENT_POSTGRES_URL` (default: the local one). Each test uses
//! tables of its own (`support::unique_name`) and drops them when it ends, so runs can repeat
//! and overlap.

#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, Lease, OwnerId};
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe, PgConnection};
use idempotent_core::testing::RawRecords;
use idempotent_core::{Call, Disposition, Error, IdempotencyStore, PostgresStore, idempotent};
use support::postgres::{DropTables, RawRows, connect, statement_calls};
use support::{acquire, assert_duplicates_run_once, request};
use tokio::sync::Barrier;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs one statement on the store's pool (test setup and inspection).
async fn exec(store: &PostgresStore, statement: String) {
    sqlx::query(AssertSqlSafe(statement))
        .execute(store.pool())
        .await
        .expect("statement");
}

async fn count(store: &PostgresStore, statement: String) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(statement))
        .fetch_one(store.pool())
        .await
        .expect("count query")
}

// ---------------------------------------------------------------------------------------------
// The conformance suite

idempotent_core::store_conformance_tests!(postgres, with_raw_records, async {
    let (store, tables) = crate::connect("idem_conf", 16).await?;
    let raw: Arc<dyn RawRecords> = Arc::new(RawRows::of(&store));
    Some((
        Arc::new(support::Guarded::new(store, tables)) as Arc<dyn IdempotencyStore>,
        raw,
    ))
});

// ---------------------------------------------------------------------------------------------
// The attribute under contention

const DUPLICATES: usize = 1_000;

#[idempotent(key = "id", store = store, skip = "runs", lease = "30s")]
async fn ship(store: PostgresStore, runs: Arc<AtomicUsize>, id: u64) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!("shipment-{id}-run-{run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attribute_collapses_a_thousand_concurrent_duplicates_into_one_execution() {
    let Some((store, _tables)) = connect("idem_attr", 16).await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    assert_duplicates_run_once(DUPLICATES, &runs, "shipment-7-run-1".to_owned(), || {
        ship(store.clone(), runs.clone(), 7)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Transactional mode

/// A store plus a user table `(id bigint primary key, note text)` the bodies write to.
async fn transactional_setup(prefix: &str) -> Option<(PostgresStore, String, DropTables)> {
    let (store, mut tables) = connect(prefix, 8).await?;
    let user_table = support::unique_name(&format!("{prefix}_user"));
    exec(
        &store,
        format!("CREATE TABLE {user_table} (id bigint PRIMARY KEY, note text NOT NULL)"),
    )
    .await;
    tables.tables.push(user_table.clone());
    Some((store, user_table, tables))
}

async fn insert_user_row(
    tx: &mut PgConnection,
    user_table: &str,
    id: i64,
    note: &str,
) -> Result<(), Error> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {user_table} (id, note) VALUES ($1, $2)"
    )))
    .bind(id)
    .bind(note)
    .execute(tx)
    .await
    .map(|_| ())
    .map_err(|error| Error::store("postgres", error))
}

#[tokio::test]
async fn transactional_writes_and_completion_commit_together_then_replay() {
    let Some((store, user_table, _tables)) = transactional_setup("idem_tx_commit").await else {
        return;
    };
    let runs = AtomicUsize::new(0);
    let call = store.transactional("tx.commit", "order-1");
    let first = call
        .run(async |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            insert_user_row(tx, &user_table, 1, "shipped").await?;
            Ok::<_, Error>(String::from("shipment-1"))
        })
        .await
        .unwrap();
    assert_eq!(first.disposition, Disposition::Executed);
    assert_eq!(first.value, "shipment-1");
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {user_table}")).await,
        1
    );
    let state: String = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT state FROM {} WHERE scope = $1 AND key = $2",
        store.table()
    )))
    .bind(&b"tx.commit"[..])
    .bind(&b"order-1"[..])
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(state, "completed");

    // A duplicate replays without running the body (it would fail on the primary key).
    let second = call
        .run(async |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            insert_user_row(tx, &user_table, 1, "shipped again").await?;
            Ok::<_, Error>(String::from("shipment-2"))
        })
        .await
        .unwrap();
    assert_eq!(second.disposition, Disposition::Replayed);
    assert_eq!(second.value, "shipment-1");
    // The plain Call API replays the same record: one payload format.
    let plain = Call::new(&store, "tx.commit", "order-1")
        .run(async { Ok::<String, Error>(String::from("never")) })
        .await
        .unwrap();
    assert_eq!(plain.value, "shipment-1");
    assert!(plain.is_replayed());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn transactional_lost_lease_rolls_back_the_bodys_writes() {
    let Some((store, user_table, _tables)) = transactional_setup("idem_tx_lost").await else {
        return;
    };
    let (scope, key) = ("tx.lost", "order-2");
    let thief = OwnerId::new();
    let result = store
        .transactional(scope, key)
        .run(async |tx| {
            insert_user_row(tx, &user_table, 2, "written by the stale owner").await?;
            // Another worker takes the key over while this body runs: the lease is made to
            // expire (as if this process had paused past it) and a new owner claims.
            exec(
                &store,
                format!(
                    "UPDATE {} SET lease_until = statement_timestamp() - interval '1 second' \
                     WHERE scope = 'tx.lost'::bytea AND key = 'order-2'::bytea",
                    store.table()
                ),
            )
            .await;
            match store.claim(&request(scope, key, thief)).await {
                Ok(Claim::Acquired(lease)) => {
                    let stale = idempotent_core::current_epoch().unwrap();
                    assert!(
                        lease.epoch() > stale,
                        "{} must exceed {stale}",
                        lease.epoch()
                    );
                }
                other => panic!("the takeover must acquire, got {other:?}"),
            }
            Ok::<_, Error>(2u64)
        })
        .await;
    assert!(
        matches!(result, Err(Error::LeaseLost)),
        "expected LeaseLost, got {result:?}"
    );
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {user_table}")).await,
        0,
        "the stale owner's writes must roll back"
    );
    // The new owner's claim is intact.
    match store.claim(&request(scope, key, OwnerId::new())).await {
        Ok(Claim::InFlight { .. }) => {}
        other => panic!("the new owner's claim must survive, got {other:?}"),
    }
}

#[tokio::test]
async fn transactional_body_error_rolls_back_and_releases_the_key() {
    let Some((store, user_table, _tables)) = transactional_setup("idem_tx_error").await else {
        return;
    };
    let body_epoch = std::sync::atomic::AtomicU64::new(0);
    let result = store
        .transactional("tx.error", "order-3")
        .run(async |tx| {
            body_epoch.store(idempotent_core::current_epoch().unwrap(), Ordering::SeqCst);
            insert_user_row(tx, &user_table, 3, "half done").await?;
            Err::<u64, _>(Error::InvalidInput {
                reason: "the carrier refused".into(),
            })
        })
        .await;
    assert!(
        matches!(result, Err(Error::InvalidInput { .. })),
        "{result:?}"
    );
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {user_table}")).await,
        0
    );
    // Released: the next claim acquires, and the epoch keeps counting.
    let lease = acquire(&store, &request("tx.error", "order-3", OwnerId::new())).await;
    assert!(lease.epoch() > body_epoch.load(Ordering::SeqCst));
}

#[tokio::test]
async fn transactional_cancelled_body_rolls_back_and_releases_the_key() {
    let Some((store, user_table, _tables)) = transactional_setup("idem_tx_cancel").await else {
        return;
    };
    let started = Arc::new(tokio::sync::Notify::new());
    let body_epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let task = {
        let (store, user_table, started) = (store.clone(), user_table.clone(), started.clone());
        let body_epoch = body_epoch.clone();
        tokio::spawn(async move {
            store
                .transactional("tx.cancel", "order-4")
                .run(async |tx| {
                    body_epoch.store(idempotent_core::current_epoch().unwrap(), Ordering::SeqCst);
                    insert_user_row(tx, &user_table, 4, "never committed").await?;
                    started.notify_one();
                    std::future::pending::<()>().await;
                    Ok::<_, Error>(4u64)
                })
                .await
        })
    };
    started.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store
            .claim(&request("tx.cancel", "order-4", OwnerId::new()))
            .await
        {
            Ok(Claim::Acquired(lease)) => {
                assert!(lease.epoch() > body_epoch.load(Ordering::SeqCst));
                break;
            }
            Ok(Claim::InFlight { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("a cancelled call must release its key, got {other:?}"),
        }
    }
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {user_table}")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactional_concurrent_duplicates_write_once() {
    const CALLS: usize = 50;
    let Some((store, user_table, _tables)) = transactional_setup("idem_tx_dups").await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CALLS));
    // Spawned: the transactional call's future is `Send`.
    let tasks: Vec<_> = (0..CALLS)
        .map(|_| {
            let (store, user_table, runs, barrier) = (
                store.clone(),
                user_table.clone(),
                runs.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .transactional("tx.dups", "order-5")
                    .run(async |tx| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        insert_user_row(tx, &user_table, 5, "once").await?;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, Error>(5u64)
                    })
                    .await
            })
        })
        .collect();
    let mut replayed = 0;
    for task in tasks {
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(outcome.value, 5);
        replayed += usize::from(outcome.is_replayed());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(replayed, CALLS - 1);
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {user_table}")).await,
        1
    );
}

#[tokio::test]
async fn complete_in_commits_or_rolls_back_with_the_callers_transaction() {
    let Some((store, user_table, _tables)) = transactional_setup("idem_tx_manual").await else {
        return;
    };
    let lease = acquire(&store, &request("tx.manual", "order-6", OwnerId::new())).await;
    // A transaction that writes the user row and completes the record.
    let write_and_complete = async |note: &str| {
        let mut tx = store.pool().begin().await.unwrap();
        insert_user_row(&mut tx, &user_table, 6, note)
            .await
            .unwrap();
        store
            .complete_in(
                &mut tx,
                &lease,
                Bytes::from_static(b"\x016"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        tx
    };

    // Rolled back: neither the write nor the record survives; the claim is still held.
    let tx = write_and_complete("rolled back").await;
    tx.rollback().await.unwrap();
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {user_table}")).await,
        0
    );
    assert!(matches!(
        store
            .claim(&request("tx.manual", "order-6", OwnerId::new()))
            .await,
        Ok(Claim::InFlight { .. })
    ));

    // Committed: both are there, and the record replays.
    let tx = write_and_complete("committed").await;
    tx.commit().await.unwrap();
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {user_table}")).await,
        1
    );
    match store
        .claim(&request("tx.manual", "order-6", OwnerId::new()))
        .await
    {
        Ok(Claim::Completed(record)) => assert_eq!(&record.payload[..], b"\x016"),
        other => panic!("expected the committed record, got {other:?}"),
    }

    // A stale lease cannot complete, in a transaction or not.
    let stale_lease = Lease::new(lease.scope(), lease.key(), OwnerId::new(), lease.epoch());
    let mut tx = store.pool().begin().await.unwrap();
    let stale = store
        .complete_in(
            &mut tx,
            &stale_lease,
            Bytes::from_static(b"x"),
            Duration::from_secs(60),
        )
        .await;
    assert!(matches!(stale, Err(Error::LeaseLost)), "{stale:?}");
    tx.rollback().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Unreadable rows

/// Writes a row with raw SQL; `values` fills (state, owner, epoch, lease_until, expires_at,
/// payload).
async fn write_raw(store: &PostgresStore, scope: &str, key: &str, values: &str) {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (scope, key, fingerprint, state, owner, epoch, lease_until, expires_at, \
         payload) VALUES ($1, $2, $3, {values})",
        store.table()
    )))
    .bind(scope.as_bytes())
    .bind(key.as_bytes())
    .bind(&Fingerprint::NONE.as_bytes()[..])
    .execute(store.pool())
    .await
    .expect("raw insert");
}

#[tokio::test]
async fn unreadable_rows_are_errors_and_never_run_the_body() {
    let Some((store, _tables)) = connect("idem_corrupt", 4).await else {
        return;
    };
    let live = "statement_timestamp() + interval '1 hour'";
    let cases = [
        (
            "unknown-state",
            format!("'archived', NULL, 1, NULL, {live}, '\\x0131'"),
        ),
        (
            "completed-without-payload",
            format!("'completed', NULL, 1, NULL, {live}, NULL"),
        ),
        (
            "negative-epoch",
            format!("'completed', NULL, -4, NULL, {live}, '\\x0131'"),
        ),
        (
            "in-progress-without-lease",
            format!("'in_progress', uuid_send(gen_random_uuid()), 1, NULL, {live}, NULL"),
        ),
    ];
    let runs = AtomicUsize::new(0);
    for (key, values) in &cases {
        write_raw(&store, "corrupt", key, values).await;
        let claim = store.claim(&request("corrupt", key, OwnerId::new())).await;
        assert!(
            matches!(claim, Err(Error::Decode { ref scope, .. }) if scope == "corrupt"),
            "{key}: expected Error::Decode, got {claim:?}"
        );
        let call = Call::new(&store, "corrupt", key)
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, Error>(1)
            })
            .await;
        assert!(
            matches!(call, Err(Error::Decode { .. })),
            "{key}: expected Error::Decode from the call, got {call:?}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the body must never run");

    // Past its ttl, an unreadable row is still not taken over (its epoch cannot be trusted to
    // continue from), but purging deletes it whatever it holds, and the key is claimed again.
    write_raw(
        &store,
        "corrupt",
        "expired",
        "'archived', NULL, 7, NULL, statement_timestamp() - interval '1 second', NULL",
    )
    .await;
    let claim = store
        .claim(&request("corrupt", "expired", OwnerId::new()))
        .await;
    assert!(
        matches!(claim, Err(Error::Decode { .. })),
        "an expired unreadable row: {claim:?}"
    );
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    let epoch = acquire(&store, &request("corrupt", "expired", OwnerId::new()))
        .await
        .epoch();
    assert!(
        epoch > 1_700_000_000_000_000,
        "above 7 and the clock: {epoch}"
    );
}

#[tokio::test]
async fn rows_a_claim_could_take_over_are_validated_before_they_are_written() {
    let Some((store, _tables)) = connect("idem_validate", 4).await else {
        return;
    };
    // Released rows (takeable if they could be read), each wrong in one way, and what the
    // error must say.
    let live = "statement_timestamp() + interval '1 hour'";
    let cases = [
        (
            "short-fingerprint",
            "'\\x0102'::bytea",
            "NULL",
            "5",
            "fingerprint is not 32 bytes",
        ),
        (
            "short-owner",
            "$3",
            "'\\x0102'::bytea",
            "5",
            "owner is not 16 bytes",
        ),
        (
            "epoch-at-maximum",
            "$3",
            "NULL",
            "9223372036854775807",
            "epoch at its maximum",
        ),
        ("unknown-state", "$3", "NULL", "5", "unknown state"),
    ];
    for (key, fingerprint, owner, epoch, reason) in cases {
        let state = if key == "unknown-state" {
            "archived"
        } else {
            "released"
        };
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (scope, key, fingerprint, state, owner, epoch, lease_until, \
             expires_at, payload) VALUES ($1, $2, {fingerprint}, '{state}', {owner}, {epoch}, \
             NULL, {live}, NULL)",
            store.table()
        )))
        .bind(&b"validate"[..])
        .bind(key.as_bytes())
        .bind(&Fingerprint::NONE.as_bytes()[..])
        .execute(store.pool())
        .await
        .expect("raw insert");
        let before = row_text(&store, "validate", key).await;
        for _ in 0..2 {
            match store.claim(&request("validate", key, OwnerId::new())).await {
                Err(Error::Decode { source, .. }) => assert!(
                    source.to_string().contains(reason),
                    "{key}: {source} (expected {reason:?})"
                ),
                other => panic!("{key}: expected Error::Decode, got {other:?}"),
            }
        }
        assert_eq!(
            row_text(&store, "validate", key).await,
            before,
            "{key}: the row must stay as it was"
        );
    }
}

/// The row as text, to compare it before and after.
async fn row_text(store: &PostgresStore, scope: &str, key: &str) -> Option<String> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CAST(t AS text) FROM {} AS t WHERE scope = $1 AND key = $2",
        store.table()
    )))
    .bind(scope.as_bytes())
    .bind(key.as_bytes())
    .fetch_optional(store.pool())
    .await
    .expect("read the row")
}

#[tokio::test]
async fn corrupt_negative_epoch_on_a_takeable_row_stays_an_error_and_is_not_overwritten() {
    let Some((store, _tables)) = connect("idem_neg_epoch", 4).await else {
        return;
    };
    // Rows a claim could take over if they were readable: released, in progress with an
    // expired lease, past their ttl. Each with a negative epoch, which the takeover's epoch
    // formula (`GREATEST(epoch + 1, clock)`) would otherwise quietly replace.
    let live = "statement_timestamp() + interval '1 hour'";
    let past = "statement_timestamp() - interval '1 second'";
    let cases = [
        (
            "released",
            format!("'released', NULL, -4, NULL, {live}, NULL"),
        ),
        (
            "lease-expired",
            format!("'in_progress', uuid_send(gen_random_uuid()), -4, {past}, {live}, NULL"),
        ),
        (
            "past-ttl",
            format!("'completed', NULL, -4, NULL, {past}, '\\x0131'"),
        ),
    ];
    let runs = AtomicUsize::new(0);
    for (key, values) in &cases {
        write_raw(&store, "neg", key, values).await;
        let before = row_text(&store, "neg", key).await;
        for attempt in 1..=2 {
            let call = Call::new(&store, "neg", key)
                .run(async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, Error>(1)
                })
                .await;
            assert!(
                matches!(call, Err(Error::Decode { ref scope, .. }) if scope == "neg"),
                "{key}, call {attempt}: expected Error::Decode, got {call:?}"
            );
            assert_eq!(
                row_text(&store, "neg", key).await,
                before,
                "{key}, call {attempt}: the unreadable row must stay as it was"
            );
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the body must never run");
}

// ---------------------------------------------------------------------------------------------
// Configuration and limits

#[tokio::test]
async fn table_names_are_validated_before_connecting() {
    for invalid in [
        "",
        "Records",
        "1records",
        "re-cords",
        "a.b.c",
        "records; DROP TABLE users",
        "\"records\"",
    ] {
        // No server is contacted: the name is checked first.
        let result = PostgresStore::builder()
            .table(invalid)
            .connect("postgres://nobody@127.0.0.1:1/none")
            .await;
        assert!(
            matches!(result, Err(Error::InvalidInput { .. })),
            "{invalid:?}: {result:?}"
        );
    }
    let too_long = "a".repeat(64);
    assert!(matches!(
        PostgresStore::builder()
            .table(&too_long)
            .connect("postgres://nobody@127.0.0.1:1/none")
            .await,
        Err(Error::InvalidInput { .. })
    ));
    let unreachable = PostgresStore::connect("postgres://nobody@127.0.0.1:1/none").await;
    assert!(
        matches!(
            unreachable,
            Err(Error::Store {
                backend: "postgres",
                ..
            })
        ),
        "{unreachable:?}"
    );
}

#[tokio::test]
async fn schema_qualified_table_on_an_existing_pool() {
    let Some((store, mut tables)) = connect("idem_schema_base", 4).await else {
        return;
    };
    let schema = support::unique_name("idem_schema");
    exec(&store, format!("CREATE SCHEMA {schema}")).await;
    tables.tables.push(format!("{schema}.records"));
    let qualified = format!("{schema}.records");
    let in_schema = PostgresStore::builder()
        .table(&qualified)
        .build(store.pool().clone())
        .unwrap();
    assert_eq!(in_schema.table(), qualified);
    assert!(matches!(
        PostgresStore::builder()
            .table("Bad.name")
            .build(store.pool().clone()),
        Err(Error::InvalidInput { .. })
    ));
    // Concurrent migrations of one table serialize on an advisory lock.
    let migrations: Vec<_> = (0..6)
        .map(|_| {
            let store = in_schema.clone();
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for migration in migrations {
        migration.await.unwrap().unwrap();
    }
    assert_eq!(
        count(
            &store,
            format!(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = '{schema}' \
                 AND tablename = 'records' AND indexdef LIKE '%(expires_at)%'"
            )
        )
        .await,
        1,
        "the expiry index exists"
    );
    let outcome = Call::new(&in_schema, "schema", "k")
        .run(async { Ok::<u8, Error>(3) })
        .await
        .unwrap();
    assert!(!outcome.is_replayed());
    assert!(
        Call::new(&in_schema, "schema", "k")
            .run(async { Ok::<u8, Error>(4) })
            .await
            .unwrap()
            .is_replayed()
    );
    // The default-table constructor works on the same pool (its table is not created here).
    assert_eq!(
        PostgresStore::from_pool(store.pool().clone()).table(),
        "idempotency_records"
    );
    drop(tables); // drops `schema.records` before the schema
    exec(&store, format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}

#[tokio::test]
async fn migrate_refuses_an_existing_table_with_another_shape() {
    let Some((store, mut tables)) = connect("idem_shape_base", 2).await else {
        return;
    };
    let good = "scope bytea NOT NULL, key bytea NOT NULL, state text NOT NULL, owner bytea, \
                epoch bigint NOT NULL, fingerprint bytea NOT NULL, lease_until timestamptz, \
                expires_at timestamptz NOT NULL, payload bytea, PRIMARY KEY (scope, key)";
    // (what is wrong, the table's columns, what the error must name)
    let cases = [
        (
            "epoch is an integer",
            good.replace("epoch bigint", "epoch integer"),
            "epoch",
        ),
        (
            "no payload column",
            good.replace(", payload bytea", ""),
            "payload",
        ),
        (
            "owner is NOT NULL",
            good.replace("owner bytea,", "owner bytea NOT NULL,"),
            "owner",
        ),
        (
            "key is text",
            good.replace("key bytea NOT NULL", "key text NOT NULL"),
            "key",
        ),
        (
            "an extra required column",
            format!("{good}, tenant text NOT NULL"),
            "tenant",
        ),
        (
            "no unique key on (scope, key)",
            good.replace(", PRIMARY KEY (scope, key)", ""),
            "(scope, key)",
        ),
    ];
    for (what, columns, named) in &cases {
        let table = support::unique_name("idem_shape");
        exec(&store, format!("CREATE TABLE {table} ({columns})")).await;
        tables.tables.push(table.clone());
        let other = PostgresStore::builder()
            .table(&table)
            .build(store.pool().clone())
            .unwrap();
        match other.migrate().await {
            Err(Error::InvalidInput { reason }) => assert!(
                reason.contains(named) && reason.contains(&table),
                "{what}: the error must name `{named}` and the table: {reason}"
            ),
            other => panic!("{what}: migrate must refuse the table, got {other:?}"),
        }
    }
    // The store's own shape passes, and so does one with an extra column the store never
    // writes (nullable or with a default).
    let table = support::unique_name("idem_shape_ok");
    exec(
        &store,
        format!("CREATE TABLE {table} ({good}, note text, created_at timestamptz NOT NULL DEFAULT now())"),
    )
    .await;
    tables.tables.push(table.clone());
    let extra = PostgresStore::builder()
        .table(&table)
        .build(store.pool().clone())
        .unwrap();
    extra.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let outcome = Call::new(&extra, "shape", "k")
        .run(async { Ok::<u8, Error>(1) })
        .await
        .unwrap();
    assert!(!outcome.is_replayed());
}

#[tokio::test]
async fn oversized_scope_and_key_are_invalid_input() {
    let Some((store, _tables)) = connect("idem_size", 2).await else {
        return;
    };
    let key = "k".repeat(2000);
    let result = store
        .claim(&request(&"s".repeat(100), &key, OwnerId::new()))
        .await;
    assert!(
        matches!(result, Err(Error::InvalidInput { .. })),
        "{result:?}"
    );
    // Right at the limit, with bytes PostgreSQL cannot compress, it still fits the index.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = |len: usize| -> String {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'!' + (state % 94) as u8)
            })
            .collect()
    };
    let (scope, key) = (noise(1024), noise(1024));
    acquire(&store, &request(&scope, &key, OwnerId::new())).await;
}

#[tokio::test]
async fn purge_removes_expired_rows_in_batches_and_keeps_live_ones() {
    let Some((store, _tables)) = connect("idem_purge", 4).await else {
        return;
    };
    exec(
        &store,
        format!(
            "INSERT INTO {} (scope, key, state, owner, epoch, fingerprint, lease_until, \
             expires_at, payload) \
             SELECT 'purge'::bytea, convert_to(i::text, 'UTF8'), 'completed', NULL, 1, \
                 '\\x00'::bytea, NULL, statement_timestamp() - interval '1 minute', '\\x01'::bytea \
             FROM generate_series(1, 2500) AS i",
            store.table()
        ),
    )
    .await;
    let live = acquire(&store, &request("purge", "live", OwnerId::new())).await;
    store
        .complete(&live, Bytes::from_static(b"\x01"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.purge_expired().await.unwrap(), 2500);
    assert_eq!(
        count(&store, format!("SELECT count(*) FROM {}", store.table())).await,
        1
    );
    assert_eq!(store.purge_expired().await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Round trips, counted on the server

#[tokio::test]
async fn a_fresh_call_costs_two_statements_and_a_replay_one() {
    const CALLS: i64 = 20;
    let Some((store, _tables)) = connect("idem_rt", 2).await else {
        return;
    };
    let available = async {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(store.pool())
            .await?;
        sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
            .execute(store.pool())
            .await
    }
    .await;
    if let Err(error) = available {
        return support::unavailable("pg_stat_statements", &support::postgres_url(), error)
            .unwrap_or(());
    }
    let table = store.table().to_owned();
    let statements = async || {
        statement_calls(&store, &table)
            .await
            .expect("pg_stat_statements")
    };
    let run = |id: i64| {
        let key = id.to_string();
        let store = store.clone();
        async move {
            Call::new(&store, "round-trips", &key)
                .run(async { Ok::<i64, Error>(id) })
                .await
                .unwrap()
        }
    };

    let before = statements().await;
    for id in 0..CALLS {
        assert!(!run(id).await.is_replayed());
    }
    let fresh = statements().await - before;

    let before = statements().await;
    for id in 0..CALLS {
        assert!(run(id).await.is_replayed());
    }
    let replay = statements().await - before;

    eprintln!(
        "round trips: fresh {} per call, replay {} per call",
        fresh as f64 / CALLS as f64,
        replay as f64 / CALLS as f64
    );
    assert_eq!(fresh, 2 * CALLS, "a fresh call is claim + complete");
    assert_eq!(replay, CALLS, "a replay is one claim statement");
}
