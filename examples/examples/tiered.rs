//! The tour on `TieredStore`: PostgreSQL decides every claim, Redis serves replays. Creates a
//! table of its own and drops it at the end.
//!
//! Run it with `cargo run -p idempotent-examples --example tiered` (PostgreSQL and Redis at
//! `IDEMPOTENT_POSTGRES_URL` and `IDEMPOTENT_REDIS_URL`, default the local servers).

use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe};
use idempotent_core::{Error, PostgresStore, TieredStore};
use idempotent_examples::{postgres_url, redis_url, tour, unique_name, unreachable};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (pg_url, redis_url) = (postgres_url(), redis_url());
    let table = unique_name("idempotent_example");
    let durable = match PostgresStore::builder()
        .table(&table)
        .connect(&pg_url)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            unreachable("PostgreSQL", &pg_url, &error);
            return Ok(());
        }
    };
    durable.migrate().await?;
    let pool = durable.pool().clone();
    let toured = match TieredStore::builder()
        .cache_prefix(&table)
        .connect(durable, &redis_url)
        .await
    {
        Ok(store) => {
            println!("== TieredStore: table `{table}` at {pg_url}, cache at {redis_url}");
            let toured = tour(&store).await;
            println!(
                "  (the first replay read PostgreSQL and cached the record; later ones come from Redis)"
            );
            toured
        }
        Err(error) => {
            unreachable("Redis", &redis_url, &error);
            Ok(())
        }
    };
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await
        .map_err(|error| Error::store("postgres", error))?;
    println!("dropped table `{table}`");
    toured
}
