//! Replay throughput of `TieredStore` next to `RedisStore` and `PostgresStore` alone.
//!
//! For 1, 16 and 64 concurrent callers, operations per second of an
//! `idempotent_core::Call` with a trivial body on a key that has already completed:
//! - tiered: `TieredStore` whose cache has been back-filled, so every replay is one Redis
//!   `GET` (PostgreSQL is not asked; the PostgreSQL statements run on the tiered table during
//!   its cells are counted with `pg_stat_statements` where it is installed, to check this);
//! - redis: `RedisStore` (one `EVALSHA` per replay);
//! - postgres: `PostgresStore` (one claim statement per replay), pool of `POOL_SIZE`.
//!
//! Each store first completes `KEYS` keys; every tiered key is then replayed once to back-fill
//! the cache, and the bench checks that all of them are cached. The callers replay keys
//! spread over all of them. Each cell runs for `CELL_TIME` (and at most
//! `MAX_OPS_PER_CALLER` per caller) after a short unmeasured warm-up; the three stores take
//! turns, `ROUNDS` rounds each (the order rotates every round), and the table shows each
//! cell's best round: noise from other work on the machine only ever slows a round down.
//!
//! ```text
//! cargo bench -p idempotent-tests --features tiered --bench tiered_throughput
//! ```
//!
//! The servers come from `IDEMPOTENT_POSTGRES_URL` and `IDEMPOTENT_REDIS_URL` (defaults: the
//! local ones); without them the bench prints one line and exits. Tables and key prefixes are
//! unique to the run; the tables are dropped and the keys deleted at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe};
use idempotent_core::{
    Call, CallOptions, Error, IdempotencyStore, PostgresStore, RedisStore, TieredStore,
};
use support::bench::{micros_per_op, process_cpu};
use support::postgres::statement_calls;
use support::redis::{RawRedis, RawReply};

const CALLERS: [usize; 3] = [1, 16, 64];
const ROUNDS: usize = 3;
const CELL_TIME: Duration = Duration::from_secs(2);
const WARM_UP: Duration = Duration::from_millis(300);
const MAX_OPS_PER_CALLER: u64 = 1_000_000;
/// Completed keys per store; the replays are spread over all of them.
const KEYS: u64 = 1_000;
/// Concurrent callers while completing and back-filling the keys.
const FILL_CALLERS: u64 = 16;
const POOL_SIZE: u32 = 16;
const SCOPE: &str = "bench";

const NAMES: [&str; 3] = ["tiered", "redis", "postgres"];
const TIERED: usize = 0;

/// A failed check (a panic would skip the clean-up).
fn failed(reason: String) -> Error {
    Error::store("bench", reason)
}

struct Bench {
    /// Tiered, redis, postgres (the order of [`NAMES`]).
    stores: [Arc<dyn IdempotencyStore>; 3],
    keys: Arc<[String]>,
    options: CallOptions,
}

impl Bench {
    /// One call on key `n % KEYS` of store `which`; `expect_replay` checks it was replayed.
    async fn call(&self, which: usize, n: u64, expect_replay: bool) -> Result<(), Error> {
        let index = n % KEYS;
        let outcome = Call::new(
            self.stores[which].as_ref(),
            SCOPE,
            &self.keys[index as usize],
        )
        .options(self.options)
        .run(async { Ok::<u64, Error>(index) })
        .await?;
        if expect_replay && !outcome.is_replayed() {
            return Err(failed(format!(
                "{}: key {index} was not replayed",
                NAMES[which]
            )));
        }
        if outcome.value != index {
            return Err(failed(format!(
                "{}: key {index} gave {}",
                NAMES[which], outcome.value
            )));
        }
        Ok(())
    }

    /// Calls every key of store `which` once, `FILL_CALLERS` at a time.
    async fn every_key(self: &Arc<Self>, which: usize, expect_replay: bool) -> Result<(), Error> {
        let tasks: Vec<_> = (0..FILL_CALLERS)
            .map(|caller| {
                let bench = self.clone();
                tokio::spawn(async move {
                    let mut n = caller;
                    while n < KEYS {
                        bench.call(which, n, expect_replay).await?;
                        n += FILL_CALLERS;
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        for task in tasks {
            match task.await {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
        Ok(())
    }

    /// Replays on store `which` from `callers` concurrent loops until `time` has passed (or
    /// each did `MAX_OPS_PER_CALLER`); returns the number of replays and the elapsed time.
    async fn replays(
        self: &Arc<Self>,
        which: usize,
        callers: usize,
        time: Duration,
    ) -> Result<(u64, Duration), Error> {
        let started = Instant::now();
        let deadline = started + time;
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let bench = self.clone();
                tokio::spawn(async move {
                    // Callers start at different keys and stride through all of them.
                    let first = caller as u64 * 7_919;
                    let mut done = 0u64;
                    while done < MAX_OPS_PER_CALLER && Instant::now() < deadline {
                        bench.call(which, first + done, true).await?;
                        done += 1;
                    }
                    Ok::<u64, Error>(done)
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            match task.await {
                Ok(done) => total += done?,
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
        Ok((total, started.elapsed()))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    rounds: [f64; ROUNDS],
    ops: u64,
    client_cpu: Duration,
    redis_cpu: Duration,
}

impl Cell {
    fn best(&self) -> f64 {
        self.rounds.iter().copied().fold(0.0, f64::max)
    }

    fn worst(&self) -> f64 {
        self.rounds.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

fn main() {
    support::bench::main("tiered_throughput", run());
}

async fn run() -> Result<(), Error> {
    let postgres_url = support::postgres_url();
    let redis_url = support::redis_url();
    let pg_table = support::unique_name("idem_bench_tiered_pg");
    let tiered_table = support::unique_name("idem_bench_tiered_durable");
    let redis_prefix = support::unique_name("idem-bench-tiered-redis");
    let cache_prefix = support::unique_name("idem-bench-tiered-cache");

    let postgres = match PostgresStore::builder()
        .table(&pg_table)
        .max_connections(POOL_SIZE)
        .connect(&postgres_url)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            println!(
                "tiered_throughput: skipped, PostgreSQL not reachable at {postgres_url}: {error}"
            );
            return Ok(());
        }
    };
    let redis = match RedisStore::builder()
        .key_prefix(&redis_prefix)
        .connect(&redis_url)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            println!("tiered_throughput: skipped, Redis not reachable at {redis_url}: {error}");
            return Ok(());
        }
    };
    let raw = match RawRedis::connect_to(&redis_url).await {
        Ok(raw) => raw,
        Err(error) => {
            println!("tiered_throughput: skipped, Redis not reachable at {redis_url}: {error}");
            return Ok(());
        }
    };
    // The tiered store's durable half: its own table on the same pool.
    let durable = PostgresStore::builder()
        .table(&tiered_table)
        .build(postgres.pool().clone())?;

    let measured = async {
        postgres.migrate().await?;
        durable.migrate().await?;
        let tiered = TieredStore::builder()
            .cache_prefix(&cache_prefix)
            .connect(durable, &redis_url)
            .await?;
        measure(&postgres, &redis, &raw, tiered, &tiered_table, &redis_url).await
    }
    .await;

    // Cleaned up whether or not the measurement succeeded.
    for table in [&pg_table, &tiered_table] {
        if let Err(error) = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(postgres.pool())
            .await
        {
            eprintln!("tiered_throughput: dropping {table} failed: {error}");
        }
    }
    for prefix in [&redis_prefix, &cache_prefix] {
        match raw.delete_prefix(prefix).await {
            Ok(deleted) => println!("tiered_throughput: deleted {deleted} keys under {prefix}"),
            Err(error) => {
                eprintln!("tiered_throughput: deleting keys under {prefix} failed: {error}")
            }
        }
    }
    measured
}

async fn measure(
    postgres: &PostgresStore,
    redis: &RedisStore,
    raw: &RawRedis,
    tiered: TieredStore,
    tiered_table: &str,
    redis_url: &str,
) -> Result<(), Error> {
    let cache_keys: Vec<String> = (0..KEYS)
        .map(|n| tiered.cache_key(SCOPE, &format!("replay-{n}")))
        .collect();
    let bench = Arc::new(Bench {
        stores: [
            Arc::new(tiered),
            Arc::new(redis.clone()),
            Arc::new(postgres.clone()),
        ],
        keys: (0..KEYS).map(|n| format!("replay-{n}")).collect(),
        options: CallOptions::new()
            .lease(Duration::from_secs(30))
            .ttl(Duration::from_secs(600)),
    });

    // Complete every key in every store, then back-fill the tiered cache with one replay each.
    let started = Instant::now();
    for which in 0..NAMES.len() {
        bench.every_key(which, false).await?;
    }
    bench.every_key(TIERED, true).await?;
    let mut exists: Vec<&[u8]> = vec![b"EXISTS"];
    exists.extend(cache_keys.iter().map(String::as_bytes));
    match raw.try_command(&exists).await? {
        RawReply::Int(cached) if cached == KEYS as i64 => {}
        other => {
            return Err(failed(format!(
                "{other:?} of {KEYS} tiered keys are cached after back-fill"
            )));
        }
    }
    println!(
        "tiered_throughput: {KEYS} keys completed in each store and back-filled in the cache in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let statements_before = statement_calls(postgres, tiered_table).await.ok();
    let mut results = Vec::new();
    for callers in CALLERS {
        let mut cells = [Cell::default(); 3];
        for (which, _) in NAMES.iter().enumerate() {
            bench.replays(which, callers, WARM_UP).await?;
        }
        for round in 0..ROUNDS {
            for turn in 0..NAMES.len() {
                let which = (round + turn) % NAMES.len();
                let client_before = process_cpu();
                let redis_before = raw.server_cpu().await;
                let (ops, elapsed) = bench.replays(which, callers, CELL_TIME).await?;
                let cell = &mut cells[which];
                cell.rounds[round] = ops as f64 / elapsed.as_secs_f64();
                cell.ops += ops;
                cell.client_cpu += process_cpu().saturating_sub(client_before);
                cell.redis_cpu += raw.server_cpu().await.saturating_sub(redis_before);
            }
        }
        results.push((callers, cells));
    }
    let statements_after = statement_calls(postgres, tiered_table).await.ok();
    let tiered_ops: u64 = results.iter().map(|(_, cells)| cells[TIERED].ops).sum();

    println!(
        "\ntiered_throughput: replays/s, best of {ROUNDS} rounds of {CELL_TIME:?} per cell, \
         {KEYS} completed keys, PostgreSQL pool of {POOL_SIZE}, {redis_url}"
    );
    println!(
        "{:>7} | {:>9} {:>9} {:>9} | {:>12} {:>15}",
        "callers", "tiered", "redis", "postgres", "tiered/redis", "tiered/postgres"
    );
    for (callers, cells) in &results {
        let [tiered, redis, postgres] = cells.map(|cell| cell.best());
        println!(
            "{callers:>7} | {tiered:>9.0} {redis:>9.0} {postgres:>9.0} | {:>11.2}x {:>14.2}x",
            tiered / redis,
            tiered / postgres
        );
    }
    println!(
        "\nworst round (ops/s), and CPU µs per replay over all rounds: this process / Redis server"
    );
    println!(
        "{:>7} | {:>9} {:>9} {:>9} | {:>11} {:>11} {:>11}",
        "callers", "tiered", "redis", "postgres", "tiered", "redis", "postgres"
    );
    for (callers, cells) in &results {
        let [tiered, redis, postgres] = cells.map(|cell| cell.worst());
        let cpu = cells.map(|cell| {
            format!(
                "{:.1} / {:.1}",
                micros_per_op(cell.client_cpu, cell.ops),
                micros_per_op(cell.redis_cpu, cell.ops)
            )
        });
        println!(
            "{callers:>7} | {tiered:>9.0} {redis:>9.0} {postgres:>9.0} | {:>11} {:>11} {:>11}",
            cpu[0], cpu[1], cpu[2]
        );
    }
    match (statements_before, statements_after) {
        (Some(before), Some(after)) => println!(
            "\nPostgreSQL statements on the tiered table during the measured cells: {} \
             ({tiered_ops} tiered replays)",
            after - before
        ),
        _ => println!(
            "\n(pg_stat_statements not available: tiered PostgreSQL statements not counted)"
        ),
    }
    Ok(())
}
