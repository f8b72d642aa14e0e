//! `#[idempotent(store = ..., transaction = "tx")]` against a live PostgreSQL: the body's writes
//! and the record commit together, an `Err` rolls both back and releases the key, a replay
//! does not run the body, and the body's own SQL errors stay the caller's error type.
//!
//! The server comes from `IDEMPOTENT_POSTGRES_URL` (default: the local one). Each test uses
//! tables of its own and drops them when it ends.

#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe};
use idempotent_core::{Disposition, Error, PostgresStore, idempotent, observe};
use support::postgres::{DropTables, connect};

#[derive(Debug)]
enum ShipError {
    /// A unique violation in the body's own insert.
    AlreadyShipped,
    /// The body decided not to ship.
    Refused,
    // Read through `Debug`, in the tests' failure messages.
    #[allow(dead_code)]
    Database(sqlx::Error),
    Idempotency(Error),
}

impl From<Error> for ShipError {
    fn from(error: Error) -> Self {
        ShipError::Idempotency(error)
    }
}

impl From<sqlx::Error> for ShipError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(database) if database.is_unique_violation() => {
                ShipError::AlreadyShipped
            }
            _ => ShipError::Database(error),
        }
    }
}

/// A store on a table of its own, and a user table `(id bigint primary key, note text)`.
async fn setup(prefix: &str) -> Option<(PostgresStore, String, DropTables)> {
    let (store, mut tables) = connect(prefix, 8).await?;
    let user_table = support::unique_name(&format!("{prefix}_user"));
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {user_table} (id bigint PRIMARY KEY, note text NOT NULL)"
    )))
    .execute(store.pool())
    .await
    .expect("create the user table");
    tables.tables.push(user_table.clone());
    Some((store, user_table, tables))
}

async fn rows(store: &PostgresStore, table: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .expect("count")
}

/// The states of the records of `scope`.
async fn record_states(store: &PostgresStore, scope: &str) -> Vec<String> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT state FROM {} WHERE scope = $1",
        store.table()
    )))
    .bind(scope.as_bytes())
    .fetch_all(store.pool())
    .await
    .expect("record states")
}

const SHIP: &str = "postgres_attribute.ship";

/// Inserts a row for the order in the transaction, checks that it is not visible outside it
/// yet, and fails with `Refused` if `refuse` is set (once).
#[idempotent(
    key = "order_id",
    store = store,
    transaction = "tx",
    skip = "table, runs, refuse",
    scope = "postgres_attribute.ship"
)]
async fn ship(
    store: &PostgresStore,
    table: &str,
    runs: &AtomicUsize,
    refuse: &AtomicBool,
    order_id: i64,
    carrier: String,
) -> Result<String, ShipError> {
    runs.fetch_add(1, Ordering::SeqCst);
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, note) VALUES ($1, $2)"
    )))
    .bind(order_id)
    .bind(&carrier)
    .execute(&mut *tx)
    .await?;
    let outside: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE id = $1"
    )))
    .bind(order_id)
    .fetch_one(store.pool())
    .await?;
    assert_eq!(outside, 0, "the insert is visible outside its transaction");
    if refuse.swap(false, Ordering::SeqCst) {
        return Err(ShipError::Refused);
    }
    Ok(format!("shipment-{order_id}-{carrier}"))
}

#[tokio::test]
async fn the_bodys_insert_and_the_record_commit_together_and_a_replay_does_not_run_the_body() {
    let Some((store, table, _tables)) = setup("idem_attr_commit").await else {
        return;
    };
    let (runs, refuse) = (AtomicUsize::new(0), AtomicBool::new(false));
    let (first, how) = observe(ship(&store, &table, &runs, &refuse, 1, "ups".into())).await;
    assert_eq!(first.unwrap(), "shipment-1-ups");
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(rows(&store, &table).await, 1);
    assert_eq!(record_states(&store, SHIP).await, ["completed"]);

    // The body would fail on the primary key if it ran again.
    let (second, how) = observe(ship(&store, &table, &runs, &refuse, 1, "ups".into())).await;
    assert_eq!(second.unwrap(), "shipment-1-ups");
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a replay does not run the body"
    );
    assert_eq!(rows(&store, &table).await, 1);

    // Same key, other arguments: the attribute's fingerprint, as for any function.
    let other = ship(&store, &table, &runs, &refuse, 1, "dhl".into()).await;
    assert!(
        matches!(
            other,
            Err(ShipError::Idempotency(Error::PayloadMismatch { .. }))
        ),
        "{other:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_error_rolls_back_its_insert_and_releases_the_key() {
    let Some((store, table, _tables)) = setup("idem_attr_error").await else {
        return;
    };
    let (runs, refuse) = (AtomicUsize::new(0), AtomicBool::new(true));
    let refused = ship(&store, &table, &runs, &refuse, 2, "ups".into()).await;
    assert!(matches!(refused, Err(ShipError::Refused)), "{refused:?}");
    assert_eq!(rows(&store, &table).await, 0, "the insert rolled back");
    assert_eq!(record_states(&store, SHIP).await, ["released"]);

    // Released: the retry runs the body, and this time it commits.
    let retried = ship(&store, &table, &runs, &refuse, 2, "ups".into()).await;
    assert_eq!(retried.unwrap(), "shipment-2-ups");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(rows(&store, &table).await, 1);
    assert_eq!(record_states(&store, SHIP).await, ["completed"]);
}

#[tokio::test]
async fn the_bodys_own_sql_error_is_the_callers_error_not_a_store_error() {
    let Some((store, table, _tables)) = setup("idem_attr_sql").await else {
        return;
    };
    // Another request shipped order 3 already, without this key.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, note) VALUES (3, 'elsewhere')"
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let (runs, refuse) = (AtomicUsize::new(0), AtomicBool::new(false));
    let duplicate = ship(&store, &table, &runs, &refuse, 3, "ups".into()).await;
    assert!(
        matches!(duplicate, Err(ShipError::AlreadyShipped)),
        "a unique violation must reach the caller as its own error, got {duplicate:?}"
    );
    // Rolled back and released like any `Err`: a retry runs the body again.
    assert_eq!(record_states(&store, SHIP).await, ["released"]);
    let again = ship(&store, &table, &runs, &refuse, 3, "ups".into()).await;
    assert!(matches!(again, Err(ShipError::AlreadyShipped)), "{again:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(rows(&store, &table).await, 1);
}

/// A service with its store in an `Arc`, as an axum state would hold it.
struct Shipping {
    db: Arc<PostgresStore>,
    table: String,
    runs: AtomicUsize,
}

impl Shipping {
    #[idempotent(
        key = "order_id",
        store = self.db,
        transaction = "conn",
        scope = "postgres_attribute.method"
    )]
    async fn ship(&self, order_id: i64) -> Result<i64, ShipError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (id, note) VALUES ($1, 'method')",
            self.table
        )))
        .bind(order_id)
        .execute(&mut *conn)
        .await?;
        Ok(order_id * 10 + i64::try_from(inserted.rows_affected()).unwrap_or_default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_method_with_an_arc_store_under_concurrent_duplicates_writes_once() {
    let Some((store, table, _tables)) = setup("idem_attr_method").await else {
        return;
    };
    let shipping = Arc::new(Shipping {
        db: Arc::new(store.clone()),
        table: table.clone(),
        runs: AtomicUsize::new(0),
    });
    // Spawned: the annotated method's future is `Send`.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let shipping = shipping.clone();
            tokio::spawn(async move { shipping.ship(4).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 41);
    }
    assert_eq!(shipping.runs.load(Ordering::SeqCst), 1);
    assert_eq!(rows(&store, &table).await, 1);
    assert_eq!(
        record_states(&store, "postgres_attribute.method").await,
        ["completed"]
    );
}
