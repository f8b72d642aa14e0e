//! The tour on `RedisStore`: records shared by every instance that uses the same Redis server,
//! each decision one Lua script.
//!
//! Run it with `cargo run -p idempotent-examples --example redis` (Redis at
//! `IDEMPOTENT_REDIS_URL`, default `redis://127.0.0.1:6379/`).

use idempotent_core::{Error, RedisStore};
use idempotent_examples::{redis_url, tour, unique_name, unreachable};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = redis_url();
    let prefix = unique_name("idempotent_example");
    let store = match RedisStore::builder()
        .key_prefix(&prefix)
        .connect(&url)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            unreachable("Redis", &url, &error);
            return Ok(());
        }
    };
    println!("== RedisStore at {url}, keys under `{prefix}:`");
    tour(&store).await?;
    println!("  (the record expires by itself within two minutes: a 1 m ttl plus the retention)");
    Ok(())
}
