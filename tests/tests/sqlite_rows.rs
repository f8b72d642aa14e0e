#![cfg(feature = "sqlite")]
//! `SqliteStore` seen through a raw connection to its database file: the persisted row format
//! (written and read), and rows the store did not write, which must be errors that never run
//! the body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::{Call, Error, IdempotencyStore, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};
use support::request;
use support::sqlite::TempDb;

fn unix_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

use std::sync::atomic::{AtomicUsize, Ordering};

async fn raw(db: &TempDb) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(db.path())
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("raw connection")
}

/// The fingerprint of this file's claims, and of the rows it writes by hand.
fn request_fingerprint() -> Fingerprint {
    Fingerprint::of_bytes(b"request")
}

/// A row written behind the store's back, and why it must not decode.
#[derive(Clone)]
struct BadRow {
    key: &'static str,
    state: &'static str,
    owner: Option<Vec<u8>>,
    epoch: &'static str,
    fingerprint: Vec<u8>,
    lease_until_ms: Option<i64>,
    payload: Option<Vec<u8>>,
    reason: &'static str,
}

/// A far-future deadline for hand-written rows.
const LATER: i64 = 4_102_444_800_000; // 2100-01-01

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_written_in_the_documented_format() {
    let db = TempDb::new("format-write");
    let store = SqliteStore::open(db.path()).await.expect("open");
    let mut raw = raw(&db).await;
    let owner = OwnerId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
    let before = unix_ms();

    let Claim::Acquired(lease) = store
        .claim(&ClaimRequest {
            fingerprint: request_fingerprint(),
            ..request("fmt", "k", owner)
        })
        .await
        .expect("claim")
    else {
        panic!("expected to acquire");
    };
    let row = sqlx::query(
        r#"SELECT state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload
           FROM "idempotency_records" WHERE scope = 'fmt' AND "key" = 'k'"#,
    )
    .fetch_one(&mut raw)
    .await
    .expect("row");
    assert_eq!(row.get::<String, _>(0), "in_progress");
    assert_eq!(
        row.get::<Vec<u8>, _>(1),
        (1u8..=16).collect::<Vec<u8>>(),
        "owner: 16 bytes, big-endian"
    );
    assert_eq!(
        row.get::<i64, _>(2),
        i64::try_from(lease.epoch()).expect("epoch fits")
    );
    assert!(
        lease.epoch() >= u64::try_from(before).expect("after 1970") * 1000,
        "a new record's epoch is at least the clock in microseconds"
    );
    assert_eq!(
        row.get::<Vec<u8>, _>(3),
        Fingerprint::of_bytes(b"request").as_bytes().to_vec()
    );
    let lease_until: i64 = row.get(4);
    assert!((before + 30_000..before + 32_000).contains(&lease_until));
    let expires_at: i64 = row.get(5);
    assert!((before + 60_000..before + 62_000).contains(&expires_at));
    assert_eq!(row.get::<Option<Vec<u8>>, _>(6), None);

    store
        .complete(
            &lease,
            Bytes::from_static(b"\x01\"ok\""),
            Duration::from_secs(3600),
        )
        .await
        .expect("complete");
    let row = sqlx::query(
        r#"SELECT state, epoch, lease_until_ms, expires_at_ms, payload
           FROM "idempotency_records" WHERE scope = 'fmt' AND "key" = 'k'"#,
    )
    .fetch_one(&mut raw)
    .await
    .expect("row");
    assert_eq!(row.get::<String, _>(0), "completed");
    assert_eq!(
        row.get::<i64, _>(1),
        i64::try_from(lease.epoch()).expect("epoch fits")
    );
    assert_eq!(row.get::<Option<i64>, _>(2), None);
    let expires_at: i64 = row.get(3);
    assert!((before + 3_600_000..before + 3_602_000).contains(&expires_at));
    assert_eq!(row.get::<Vec<u8>, _>(4), b"\x01\"ok\"".to_vec());

    let Claim::Acquired(lease) = store
        .claim(&ClaimRequest {
            fingerprint: request_fingerprint(),
            ..request("fmt", "released", owner)
        })
        .await
        .expect("claim")
    else {
        panic!("expected to acquire");
    };
    store.release(&lease).await.expect("release");
    let row = sqlx::query(
        r#"SELECT state, epoch, lease_until_ms FROM "idempotency_records"
           WHERE scope = 'fmt' AND "key" = 'released'"#,
    )
    .fetch_one(&mut raw)
    .await
    .expect("row");
    assert_eq!(row.get::<String, _>(0), "released");
    assert_eq!(
        row.get::<i64, _>(1),
        i64::try_from(lease.epoch()).expect("epoch fits"),
        "a tombstone keeps its epoch"
    );
    assert_eq!(row.get::<Option<i64>, _>(2), None);

    // The schema itself: columns, types, nullability, key order; the index; WAL.
    let columns: Vec<(String, String, i64, i64)> =
        sqlx::query(r#"PRAGMA table_info("idempotency_records")"#)
            .fetch_all(&mut raw)
            .await
            .expect("table_info")
            .iter()
            .map(|row| (row.get(1), row.get(2), row.get(3), row.get(5)))
            .collect();
    let expected = [
        ("scope", "TEXT", 1, 1),
        ("key", "TEXT", 1, 2),
        ("state", "TEXT", 1, 0),
        ("owner", "BLOB", 0, 0),
        ("epoch", "INTEGER", 1, 0),
        ("fingerprint", "BLOB", 1, 0),
        ("lease_until_ms", "INTEGER", 0, 0),
        ("expires_at_ms", "INTEGER", 1, 0),
        ("payload", "BLOB", 0, 0),
    ]
    .map(|(name, ty, not_null, pk)| (name.to_owned(), ty.to_owned(), not_null, pk));
    assert_eq!(columns, expected);
    let index: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'idx_idempotency_records_expires_at'",
    )
    .fetch_one(&mut raw)
    .await
    .expect("expiry index");
    assert!(index.contains("(expires_at_ms)"), "{index}");
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .expect("journal_mode");
    assert_eq!(journal, "wal");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_in_the_documented_format_are_read() {
    let db = TempDb::new("format-read");
    let store = SqliteStore::open(db.path()).await.expect("open");
    let mut raw = raw(&db).await;
    let fingerprint = Fingerprint::of_bytes(b"request");
    let owner = OwnerId::new();
    let insert = r#"INSERT INTO "idempotency_records"
        (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"#;
    sqlx::query(insert)
        .bind("golden")
        .bind("completed")
        .bind("completed")
        .bind(Option::<Vec<u8>>::None)
        .bind(7_i64)
        .bind(&fingerprint.as_bytes()[..])
        .bind(Option::<i64>::None)
        .bind(LATER)
        .bind(&b"\x01{\"amount\":5}"[..])
        .execute(&mut raw)
        .await
        .expect("insert completed");
    sqlx::query(insert)
        .bind("golden")
        .bind("in_progress")
        .bind("in_progress")
        .bind(owner.as_u128().to_be_bytes().to_vec())
        .bind(3_i64)
        .bind(&fingerprint.as_bytes()[..])
        .bind(LATER)
        .bind(LATER)
        .bind(Option::<Vec<u8>>::None)
        .execute(&mut raw)
        .await
        .expect("insert in progress");
    sqlx::query(insert)
        .bind("golden")
        .bind("released")
        .bind("released")
        .bind(Option::<Vec<u8>>::None)
        .bind(4_i64)
        .bind(&fingerprint.as_bytes()[..])
        .bind(Option::<i64>::None)
        .bind(LATER)
        .bind(Option::<Vec<u8>>::None)
        .execute(&mut raw)
        .await
        .expect("insert released");

    match store
        .claim(&ClaimRequest {
            fingerprint: request_fingerprint(),
            ..request("golden", "completed", OwnerId::new())
        })
        .await
    {
        Ok(Claim::Completed(record)) => {
            assert_eq!(&record.payload[..], b"\x01{\"amount\":5}");
            assert_eq!(record.epoch, 7);
        }
        other => panic!("expected the hand-written record, got {other:?}"),
    }
    // The owner column decodes to the same owner: its retried claim keeps the epoch.
    match store
        .claim(&ClaimRequest {
            fingerprint: request_fingerprint(),
            ..request("golden", "in_progress", owner)
        })
        .await
    {
        Ok(Claim::Acquired(lease)) => assert_eq!(lease.epoch(), 3),
        other => panic!("expected the owner's own claim, got {other:?}"),
    }
    match store
        .claim(&ClaimRequest {
            fingerprint: request_fingerprint(),
            ..request("golden", "in_progress", OwnerId::new())
        })
        .await
    {
        Ok(Claim::InFlight { .. }) => {}
        other => panic!("expected in flight, got {other:?}"),
    }
    match store
        .claim(&ClaimRequest {
            fingerprint: request_fingerprint(),
            ..request("golden", "released", OwnerId::new())
        })
        .await
    {
        // Above the tombstone's epoch 4, and at least the clock in microseconds.
        Ok(Claim::Acquired(lease)) => assert!(lease.epoch() > 1_700_000_000_000_000),
        other => panic!("expected to acquire the tombstone, got {other:?}"),
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_are_errors_and_the_body_does_not_run() {
    let db = TempDb::new("corrupt");
    let store = SqliteStore::open(db.path()).await.expect("open");
    let mut raw = raw(&db).await;
    let valid = BadRow {
        key: "",
        state: "completed",
        owner: None,
        epoch: "1",
        fingerprint: Fingerprint::of_bytes(b"request").as_bytes().to_vec(),
        lease_until_ms: None,
        payload: Some(b"\x011".to_vec()),
        reason: "",
    };
    let owner = OwnerId::new().as_u128().to_be_bytes().to_vec();
    let rows = [
        BadRow {
            key: "unknown-state",
            state: "exploded",
            reason: "unknown state \"exploded\"",
            ..valid.clone()
        },
        BadRow {
            key: "completed-null-payload",
            payload: None,
            reason: "column `payload` is NULL",
            ..valid.clone()
        },
        BadRow {
            key: "short-fingerprint",
            fingerprint: vec![1, 2, 3],
            reason: "stored fingerprint is 3 bytes",
            ..valid.clone()
        },
        BadRow {
            key: "in-progress-no-owner",
            state: "in_progress",
            lease_until_ms: Some(LATER),
            payload: None,
            reason: "column `owner` is NULL",
            ..valid.clone()
        },
        BadRow {
            key: "in-progress-no-lease",
            state: "in_progress",
            owner: Some(owner.clone()),
            payload: None,
            reason: "column `lease_until_ms` is NULL",
            ..valid.clone()
        },
        BadRow {
            key: "owner-wrong-size",
            state: "in_progress",
            owner: Some(vec![1; 8]),
            lease_until_ms: Some(LATER),
            payload: None,
            reason: "stored owner is 8 bytes",
            ..valid.clone()
        },
        BadRow {
            key: "text-epoch",
            epoch: "one",
            reason: "not compatible with SQL type `TEXT`",
            ..valid.clone()
        },
        BadRow {
            key: "negative-epoch",
            epoch: "-1",
            reason: "stored epoch -1 is negative",
            ..valid.clone()
        },
    ];
    for row in &rows {
        // `CAST` only where the text is a number, so "one" stays text in the INTEGER column.
        sqlx::query(
            r#"INSERT INTO "idempotency_records"
               (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
               VALUES ('corrupt', ?1, ?2, ?3,
                       CASE WHEN ?4 GLOB '*[0-9]' THEN CAST(?4 AS INTEGER) ELSE ?4 END,
                       ?5, ?6, ?7, ?8)"#,
        )
        .bind(row.key)
        .bind(row.state)
        .bind(row.owner.clone())
        .bind(row.epoch)
        .bind(row.fingerprint.clone())
        .bind(row.lease_until_ms)
        .bind(LATER)
        .bind(row.payload.clone())
        .execute(&mut raw)
        .await
        .expect("insert a bad row");
    }

    for BadRow { key, reason, .. } in &rows {
        match store
            .claim(&ClaimRequest {
                fingerprint: request_fingerprint(),
                ..request("corrupt", key, OwnerId::new())
            })
            .await
        {
            Err(Error::Decode { scope, source }) => {
                assert_eq!(scope, "corrupt");
                assert!(
                    source.to_string().contains(reason),
                    "row {key:?}: {source} (expected {reason:?})"
                );
            }
            other => panic!("row {key:?} must be a decode error, got {other:?}"),
        }
        let runs = AtomicUsize::new(0);
        let result = Call::new(&store, "corrupt", key)
            .fingerprint(Fingerprint::of_bytes(b"request"))
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, Error>(1)
            })
            .await;
        assert!(
            matches!(result, Err(Error::Decode { .. })),
            "row {key:?}: {result:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0, "row {key:?}: the body ran");
    }

    // Purging does not decode: an expired bad row is deleted like any other, and the key
    // is usable again.
    sqlx::query(
        r#"UPDATE "idempotency_records" SET expires_at_ms = 0 WHERE "key" = 'unknown-state'"#,
    )
    .execute(&mut raw)
    .await
    .expect("expire a bad row");
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    assert!(matches!(
        store
            .claim(&ClaimRequest {
                fingerprint: request_fingerprint(),
                ..request("corrupt", "unknown-state", OwnerId::new())
            })
            .await,
        Ok(Claim::Acquired(_))
    ));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_other_columns_is_refused_at_open() {
    let db = TempDb::new("foreign-table");
    {
        let mut raw = SqliteConnectOptions::new()
            .filename(db.path())
            .create_if_missing(true)
            .connect()
            .await
            .expect("raw connection");
        sqlx::query(r#"CREATE TABLE "idempotency_records" (id INTEGER PRIMARY KEY, body TEXT)"#)
            .execute(&mut raw)
            .await
            .expect("create a foreign table");
        raw.close().await.expect("close");
    }
    match SqliteStore::open(db.path()).await {
        Err(Error::Store { backend, source }) => {
            assert_eq!(backend, "sqlite");
            assert!(
                source.to_string().contains("idempotency_records"),
                "{source}"
            );
        }
        other => panic!("expected a store error, got {other:?}"),
    }
}
