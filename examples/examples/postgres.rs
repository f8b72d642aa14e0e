//! The tour on `PostgresStore`: records shared by every instance and durable, each claim one
//! statement on the server's clock. Creates a table of its own and drops it at the end.
//!
//! Run it with `cargo run -p idempotent-examples --example postgres` (PostgreSQL at
//! `IDEMPOTENT_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe};
use idempotent_core::{Error, PostgresStore};
use idempotent_examples::{postgres_url, tour, unique_name, unreachable};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = postgres_url();
    let table = unique_name("idempotent_example");
    let store = match PostgresStore::builder().table(&table).connect(&url).await {
        Ok(store) => store,
        Err(error) => {
            unreachable("PostgreSQL", &url, &error);
            return Ok(());
        }
    };
    store.migrate().await?;
    println!("== PostgresStore at {url}, table `{table}`");
    let toured = tour(&store).await;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(store.pool())
        .await
        .map_err(|error| Error::store("postgres", error))?;
    println!("dropped table `{table}`");
    toured
}
