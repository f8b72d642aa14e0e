//! Operations per second of `RedisStore` against the plainest commands that do the same job,
//! on the same server through the same client library and connection type (the `redis`
//! crate's multiplexed `ConnectionManager`; the raw commands go on one of their own).
//!
//! - fresh: a `Call` that claims and completes a new key (two script round trips), against
//!   `SET key val NX PX` then `SET key result XX PX`;
//! - replay: a `Call` on a completed key (one script round trip), against `GET key`.
//!
//! A third column, "lua", sends the same raw commands wrapped in one-line scripts
//! (`EVALSHA` of `return redis.call('SET', ...)` and of `GET`): the cheapest any
//! script-per-operation design can be, to separate the cost of running a script at all from
//! the cost of the store's own scripts.
//!
//! Each cell runs `callers` concurrent loops for one second (bounded in count too). The four
//! kinds take turns, three rounds each, and the table shows each cell's best round: noise from
//! other work on the machine only ever slows a round down. A second table gives the CPU each
//! operation cost, in this process (all threads) and in the Redis server (`INFO cpu`, so other
//! clients of the server count too), averaged over all rounds.
//!
//! Run with `cargo bench -p idempotent-tests --features redis --bench redis_throughput`; the
//! server comes from `IDEMPOTENT_REDIS_URL` (default `redis://127.0.0.1:6379/`). Keys live
//! under a unique prefix and are deleted at the end.

use std::sync::Arc;
use std::time::Duration;

use idempotent_core::{Call, CallOptions, Error, RedisStore};
use support::bench::{micros_per_op, process_cpu};
use support::redis::{RawRedis, RawReply};
use tokio::time::Instant;

const CALLERS: [usize; 3] = [1, 16, 64];
const ROUNDS: usize = 3;
const CELL_TIME: Duration = Duration::from_secs(1);
const MAX_OPS_PER_CALLER: u64 = 1_000_000;
const SCOPE: &str = "bench";
const TTL_MS: &[u8] = b"60000";

const LUA_SET: &str = "return redis.call('SET', KEYS[1], ARGV[1], ARGV[2], 'PX', ARGV[3])";
const LUA_GET: &str = "return redis.call('GET', KEYS[1])";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StoreFresh,
    RawFresh,
    LuaFresh,
    StoreReplay,
    RawReplay,
    LuaReplay,
}

const KINDS: [Kind; 6] = [
    Kind::StoreFresh,
    Kind::RawFresh,
    Kind::LuaFresh,
    Kind::StoreReplay,
    Kind::RawReplay,
    Kind::LuaReplay,
];

struct Bench {
    store: RedisStore,
    /// The raw commands' connection.
    raw: RawRedis,
    options: CallOptions,
    /// SHA-1 of [`LUA_SET`] and [`LUA_GET`], loaded on the server.
    lua_set: Vec<u8>,
    lua_get: Vec<u8>,
}

impl Bench {
    async fn op(&self, kind: Kind, cell: &str, caller: usize, i: u64) -> Result<(), Error> {
        let (store, raw) = (&self.store, &self.raw);
        let prefix = store.key_prefix();
        match kind {
            Kind::StoreFresh => {
                let key = format!("fresh-{cell}-{caller}-{i}");
                let outcome = Call::new(store, SCOPE, &key)
                    .options(self.options)
                    .run(async { Ok::<u64, Error>(i) })
                    .await?;
                assert!(!outcome.is_replayed());
            }
            Kind::RawFresh => {
                let key = format!("{prefix}:raw-fresh-{cell}-{caller}-{i}");
                let claimed = raw
                    .try_command(&[b"SET", key.as_bytes(), b"claimed", b"NX", b"PX", TTL_MS])
                    .await?;
                assert_eq!(claimed, RawReply::Status("OK".to_owned()));
                let value = format!("\x01{i}");
                raw.try_command(&[
                    b"SET",
                    key.as_bytes(),
                    value.as_bytes(),
                    b"XX",
                    b"PX",
                    TTL_MS,
                ])
                .await?;
            }
            Kind::LuaFresh => {
                let key = format!("{prefix}:lua-fresh-{cell}-{caller}-{i}");
                let claimed = raw
                    .try_command(&[
                        b"EVALSHA",
                        &self.lua_set,
                        b"1",
                        key.as_bytes(),
                        b"claimed",
                        b"NX",
                        TTL_MS,
                    ])
                    .await?;
                assert_eq!(claimed, RawReply::Status("OK".to_owned()));
                let value = format!("\x01{i}");
                raw.try_command(&[
                    b"EVALSHA",
                    &self.lua_set,
                    b"1",
                    key.as_bytes(),
                    value.as_bytes(),
                    b"XX",
                    TTL_MS,
                ])
                .await?;
            }
            Kind::StoreReplay => {
                let key = format!("replay-{caller}");
                let outcome = Call::new(store, SCOPE, &key)
                    .options(self.options)
                    .run(async { Ok::<u64, Error>(0) })
                    .await?;
                assert!(outcome.is_replayed() && outcome.value == 42);
            }
            Kind::RawReplay => {
                let key = format!("{prefix}:raw-replay-{caller}");
                let value = raw.try_command(&[b"GET", key.as_bytes()]).await?;
                assert_eq!(value, RawReply::Data(b"\x0142".to_vec()));
            }
            Kind::LuaReplay => {
                let key = format!("{prefix}:raw-replay-{caller}");
                let value = raw
                    .try_command(&[b"EVALSHA", &self.lua_get, b"1", key.as_bytes()])
                    .await?;
                assert_eq!(value, RawReply::Data(b"\x0142".to_vec()));
            }
        }
        Ok(())
    }

    /// One completed key per caller, for both replay kinds.
    async fn prepare_replays(&self, callers: usize) -> Result<(), Error> {
        for caller in 0..callers {
            Call::new(&self.store, SCOPE, &format!("replay-{caller}"))
                .options(self.options)
                .run(async { Ok::<u64, Error>(42) })
                .await?;
            let raw_key = format!("{}:raw-replay-{caller}", self.store.key_prefix());
            self.raw
                .try_command(&[b"SET", raw_key.as_bytes(), b"\x0142", b"PX", TTL_MS])
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    best_ops_per_sec: f64,
    ops: u64,
    client_cpu: Duration,
    server_cpu: Duration,
}

impl Cell {
    fn record(&mut self, ops: u64, elapsed: Duration, client: Duration, server: Duration) {
        self.best_ops_per_sec = self
            .best_ops_per_sec
            .max(ops as f64 / elapsed.as_secs_f64());
        self.ops += ops;
        self.client_cpu += client;
        self.server_cpu += server;
    }
}

fn main() {
    // `run` reports its own failures.
    support::bench::main("redis_throughput", async {
        run().await;
        Ok(())
    });
}

async fn run() {
    let url = support::redis_url();
    let store = match RedisStore::builder()
        .key_prefix(support::unique_name("idem-bench"))
        .connect(&url)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            support::unavailable::<()>("Redis", &url, error);
            return;
        }
    };
    let Some(raw) = RawRedis::connect().await else {
        return;
    };
    let (lua_set, lua_get) = match (load(&raw, LUA_SET).await, load(&raw, LUA_GET).await) {
        (Ok(set), Ok(get)) => (set, get),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("redis_throughput: loading the baseline scripts failed: {error}");
            return;
        }
    };
    let bench = Arc::new(Bench {
        store: store.clone(),
        raw: raw.clone(),
        options: CallOptions::new()
            .lease(Duration::from_secs(30))
            .ttl(Duration::from_secs(60)),
        lua_set,
        lua_get,
    });
    if let Err(error) = bench.prepare_replays(CALLERS[CALLERS.len() - 1]).await {
        eprintln!("redis_throughput: preparing replays failed: {error}");
        return;
    }

    let mut results = Vec::new();
    for callers in CALLERS {
        let mut cells = [Cell::default(); 6];
        for round in 0..ROUNDS {
            for (kind, cell) in KINDS.iter().zip(cells.iter_mut()) {
                let name = format!("{callers}-{round}");
                let client_before = process_cpu();
                let server_before = raw.server_cpu().await;
                let started = Instant::now();
                let ops = match measure(&bench, *kind, &name, callers).await {
                    Ok(ops) => ops,
                    Err(error) => {
                        eprintln!("redis_throughput: {kind:?} with {callers} callers: {error}");
                        return;
                    }
                };
                let elapsed = started.elapsed();
                let client = process_cpu().saturating_sub(client_before);
                let server = raw.server_cpu().await.saturating_sub(server_before);
                cell.record(ops, elapsed, client, server);
            }
        }
        results.push((callers, cells));
    }

    println!(
        "\nredis_throughput: ops/s, best of {ROUNDS} rounds of {CELL_TIME:?}, one connection each, {url}"
    );
    println!(
        "{:>7} | {:>8} {:>8} {:>8} {:>9} {:>9} | {:>8} {:>8} {:>8} {:>9} {:>9}",
        "callers",
        "store",
        "raw",
        "lua",
        "store/raw",
        "store/lua",
        "store",
        "raw",
        "lua",
        "store/raw",
        "store/lua"
    );
    println!(
        "{:>7} | {:^46} | {:^46}",
        "", "fresh (claim + complete)", "replay"
    );
    for (callers, cells) in &results {
        let ops = |kind: usize| cells[kind].best_ops_per_sec;
        let percent = |a: usize, b: usize| 100.0 * ops(a) / ops(b);
        println!(
            "{callers:>7} | {:>8.0} {:>8.0} {:>8.0} {:>8.0}% {:>8.0}% | {:>8.0} {:>8.0} {:>8.0} {:>8.0}% {:>8.0}%",
            ops(0),
            ops(1),
            ops(2),
            percent(0, 1),
            percent(0, 2),
            ops(3),
            ops(4),
            ops(5),
            percent(3, 4),
            percent(3, 5),
        );
    }
    println!("\nCPU µs per operation, client (this process) / server (Redis), all rounds");
    println!(
        "{:>7} | {:>11} {:>11} {:>11} | {:>11} {:>11} {:>11}",
        "callers", "store", "raw", "lua", "store", "raw", "lua"
    );
    for (callers, cells) in &results {
        let columns: Vec<String> = cells
            .iter()
            .map(|cell| {
                format!(
                    "{:.1} / {:.1}",
                    micros_per_op(cell.client_cpu, cell.ops),
                    micros_per_op(cell.server_cpu, cell.ops)
                )
            })
            .collect();
        println!(
            "{callers:>7} | {:>11} {:>11} {:>11} | {:>11} {:>11} {:>11}",
            columns[0], columns[1], columns[2], columns[3], columns[4], columns[5]
        );
    }

    match raw.delete_prefix(store.key_prefix()).await {
        Ok(deleted) => println!("\nredis_throughput: deleted {deleted} keys"),
        Err(error) => eprintln!("redis_throughput: cleanup failed: {error}"),
    }
}

/// Loads a script and returns its SHA-1.
async fn load(raw: &RawRedis, code: &str) -> Result<Vec<u8>, Error> {
    match raw
        .try_command(&[b"SCRIPT", b"LOAD", code.as_bytes()])
        .await?
    {
        RawReply::Data(sha) => Ok(sha),
        RawReply::Status(sha) => Ok(sha.into_bytes()),
        other => panic!("unexpected SCRIPT LOAD reply {other:?}"),
    }
}

/// Runs `callers` loops of one kind for [`CELL_TIME`] (at most [`MAX_OPS_PER_CALLER`] each)
/// and returns how many operations completed.
async fn measure(bench: &Arc<Bench>, kind: Kind, cell: &str, callers: usize) -> Result<u64, Error> {
    let deadline = Instant::now() + CELL_TIME;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (bench, cell) = (bench.clone(), cell.to_owned());
            tokio::spawn(async move {
                let mut done = 0u64;
                while done < MAX_OPS_PER_CALLER && Instant::now() < deadline {
                    bench.op(kind, &cell, caller, done).await?;
                    done += 1;
                }
                Ok::<u64, Error>(done)
            })
        })
        .collect();
    let mut total = 0u64;
    for task in tasks {
        match task.await {
            Ok(done) => total += done?,
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        }
    }
    Ok(total)
}
