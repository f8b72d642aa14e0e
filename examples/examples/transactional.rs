//! `PostgresStore::transactional`: the body writes through the store's transaction, and the
//! result is recorded in the same transaction, so the write and the record commit together.
//! Runs one shipment twice and counts the rows: one. Creates two tables of its own and drops
//! them at the end.
//!
//! Run it with `cargo run -p idempotent-examples --example transactional` (PostgreSQL at
//! `IDEMPOTENT_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use idempotent_core::key::Fingerprint;
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe};
use idempotent_core::{Error, PostgresStore};
use idempotent_examples::{postgres_url, unique_name, unreachable};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = postgres_url();
    let records = unique_name("idempotent_example");
    let shipments = format!("{records}_shipments");
    let store = match PostgresStore::builder().table(&records).connect(&url).await {
        Ok(store) => store,
        Err(error) => {
            unreachable("PostgreSQL", &url, &error);
            return Ok(());
        }
    };
    store.migrate().await?;
    let sql = |text: String| sqlx::query(AssertSqlSafe(text));
    let store_error = |error| Error::store("postgres", error);
    sql(format!(
        "CREATE TABLE {shipments} (order_id bigint NOT NULL, carrier text NOT NULL)"
    ))
    .execute(store.pool())
    .await
    .map_err(store_error)?;
    println!("== transactional mode at {url}, tables `{records}` and `{shipments}`");

    for attempt in 1..=2 {
        let outcome = store
            .transactional("examples.ship", "order-17")
            .fingerprint(Fingerprint::builder().field("carrier", "ups").finish())
            .run(async |tx| {
                sql(format!(
                    "INSERT INTO {shipments} (order_id, carrier) VALUES (17, 'ups')"
                ))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                Ok::<_, Error>(String::from("shipment-17"))
            })
            .await?;
        println!(
            "  attempt {attempt}: {} -> {}",
            if outcome.is_replayed() {
                "replayed"
            } else {
                "ran     "
            },
            outcome.value
        );
    }
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {shipments}")))
        .fetch_one(store.pool())
        .await
        .map_err(store_error)?;
    println!("  rows in `{shipments}`: {rows} (the write and the record committed together)");

    for table in [&shipments, &records] {
        sql(format!("DROP TABLE IF EXISTS {table}"))
            .execute(store.pool())
            .await
            .map_err(store_error)?;
    }
    println!("dropped both tables");
    Ok(())
}
