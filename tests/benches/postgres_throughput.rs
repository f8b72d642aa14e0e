//! `PostgresStore` throughput against raw SQL through the same sqlx pool.
//!
//! For 1, 16 and 64 concurrent callers, operations per second of:
//! - store fresh: an `idempotent_core::Call` on a new key (claim + complete);
//! - raw fresh: `INSERT ... ON CONFLICT DO NOTHING` + `UPDATE` on a table of the same shape;
//! - store replay: a `Call` on a completed key (one claim statement);
//! - raw replay: a `SELECT` by primary key.
//!
//! Store and raw run on the same callers in alternating 100 ms slices for 2.5 s each (after a
//! warm-up), so load from other processes weighs on both alike. Both share one pool of
//! `POOL_SIZE` connections.
//!
//! ```text
//! cargo bench -p idempotent-tests --features postgres --bench postgres_throughput
//! ```
//!
//! The server comes from `IDEMPOTENT_POSTGRES_URL` (default: the local one); without a
//! server the benchmark prints one line and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe, PgPool};
use idempotent_core::{Call, Error, PostgresStore};

const POOL_SIZE: u32 = 16;
const CALLERS: [usize; 3] = [1, 16, 64];
/// Measured time per pair of cells (store and raw, half each), in alternating slices.
const CELL: Duration = Duration::from_secs(5);
const SLICE: Duration = Duration::from_millis(100);
const WARM_UP: Duration = Duration::from_millis(400);
/// Completed keys the replay cells cycle through.
const REPLAY_KEYS: u64 = 2_000;

#[derive(Clone, Copy)]
enum Workload {
    StoreFresh,
    RawFresh,
    StoreReplay,
    RawReplay,
}

#[derive(Clone)]
struct Bench {
    store: PostgresStore,
    raw_table: Arc<str>,
    raw_insert: Arc<str>,
    raw_update: Arc<str>,
    raw_select: Arc<str>,
    /// Makes every fresh key unique across cells.
    next_key: Arc<AtomicU64>,
}

impl Bench {
    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    async fn one(&self, workload: Workload, n: u64) -> Result<(), Error> {
        match workload {
            Workload::StoreFresh => {
                let key = format!("fresh-{}", self.next_key.fetch_add(1, Ordering::Relaxed));
                let outcome = Call::new(&self.store, "bench", &key)
                    .run(async { Ok::<u64, Error>(n) })
                    .await?;
                assert!(!outcome.is_replayed());
            }
            Workload::StoreReplay => {
                let key = format!("replay-{}", n % REPLAY_KEYS);
                let outcome = Call::new(&self.store, "bench", &key)
                    .run(async { Ok::<u64, Error>(n) })
                    .await?;
                assert!(outcome.is_replayed());
            }
            Workload::RawFresh => {
                let key = format!("fresh-{}", self.next_key.fetch_add(1, Ordering::Relaxed));
                let store_error = |error| Error::store("postgres", error);
                sqlx::query(AssertSqlSafe(Arc::clone(&self.raw_insert)))
                    .bind(&b"bench"[..])
                    .bind(key.as_bytes())
                    .bind(&[0u8; 32][..])
                    .bind(&n.to_be_bytes().repeat(2)[..])
                    .execute(self.pool())
                    .await
                    .map_err(store_error)?;
                sqlx::query(AssertSqlSafe(Arc::clone(&self.raw_update)))
                    .bind(&b"bench"[..])
                    .bind(key.as_bytes())
                    .bind(format!("\x01{n}").into_bytes())
                    .execute(self.pool())
                    .await
                    .map_err(store_error)?;
            }
            Workload::RawReplay => {
                let key = format!("replay-{}", n % REPLAY_KEYS);
                let row = sqlx::query(AssertSqlSafe(Arc::clone(&self.raw_select)))
                    .bind(&b"bench"[..])
                    .bind(key.as_bytes())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(|error| Error::store("postgres", error))?;
                assert!(row.is_some());
            }
        }
        Ok(())
    }

    /// Operations per second of `store` and `raw` with `callers` concurrent callers.
    ///
    /// The two alternate in short slices on the same callers, and each operation counts for
    /// the side it started on, so load that drifts during the run (other processes sharing
    /// the machine) weighs on both sides alike.
    async fn pair(&self, store: Workload, raw: Workload, callers: usize) -> (f64, f64) {
        let side = Arc::new(AtomicUsize::new(0)); // 0: store, 1: raw
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let done = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let bench = self.clone();
                let (side, stop, measuring, done) =
                    (side.clone(), stop.clone(), measuring.clone(), done.clone());
                tokio::spawn(async move {
                    let mut n = caller as u64 * 7_919;
                    while !stop.load(Ordering::Relaxed) {
                        let this = side.load(Ordering::Relaxed);
                        let workload = if this == 0 { store } else { raw };
                        if let Err(error) = bench.one(workload, n).await {
                            panic!("benchmark operation failed: {error} ({error:?})");
                        }
                        if measuring.load(Ordering::Relaxed) {
                            done[this].fetch_add(1, Ordering::Relaxed);
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        // Warm up both sides.
        for this in [0, 1] {
            side.store(this, Ordering::Relaxed);
            tokio::time::sleep(WARM_UP / 2).await;
        }
        measuring.store(true, Ordering::Relaxed);
        let mut elapsed = [Duration::ZERO; 2];
        let slices = (CELL.as_millis() / SLICE.as_millis()).max(2) as usize;
        for slice in 0..slices {
            let this = slice % 2;
            side.store(this, Ordering::Relaxed);
            let started = Instant::now();
            tokio::time::sleep(SLICE).await;
            elapsed[this] += started.elapsed();
        }
        measuring.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            if let Err(error) = task.await {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        let rate =
            |this: usize| done[this].load(Ordering::Relaxed) as f64 / elapsed[this].as_secs_f64();
        (rate(0), rate(1))
    }
}

async fn run() -> Result<(), Error> {
    let url = support::postgres_url();
    let store_table = support::unique_name("idem_bench");
    let raw_table = support::unique_name("idem_bench_raw");
    let store = match PostgresStore::builder()
        .table(&store_table)
        .max_connections(POOL_SIZE)
        .connect(&url)
        .await
    {
        Ok(store) => store,
        Err(error) => {
            support::unavailable::<()>("PostgreSQL", &url, error);
            return Ok(());
        }
    };
    store.migrate().await?;
    // The raw table has the store's shape (same columns, primary key and expiry index).
    PostgresStore::builder()
        .table(&raw_table)
        .build(store.pool().clone())?
        .migrate()
        .await?;
    let bench = Bench {
        raw_insert: format!(
            "INSERT INTO {raw_table} (scope, key, state, owner, epoch, fingerprint, lease_until, \
             expires_at, payload) VALUES ($1, $2, 'in_progress', $4, 1, $3, \
             statement_timestamp() + interval '30 seconds', \
             statement_timestamp() + interval '1 day', NULL) \
             ON CONFLICT (scope, key) DO NOTHING"
        )
        .into(),
        raw_update: format!(
            "UPDATE {raw_table} SET state = 'completed', payload = $3, lease_until = NULL, \
             expires_at = statement_timestamp() + interval '1 day' \
             WHERE scope = $1 AND key = $2"
        )
        .into(),
        raw_select: format!(
            "SELECT state, epoch, fingerprint, payload FROM {raw_table} \
             WHERE scope = $1 AND key = $2"
        )
        .into(),
        raw_table: raw_table.into(),
        store,
        next_key: Arc::new(AtomicU64::new(0)),
    };

    let measured = measure(&bench, &store_table).await;
    // Dropped whether or not the measurement succeeded.
    for table in [store_table.as_str(), &bench.raw_table] {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(bench.pool())
            .await
            .map_err(|error| Error::store("postgres", error))?;
    }
    measured
}

/// Fills the replay keys and prints the table.
async fn measure(bench: &Bench, store_table: &str) -> Result<(), Error> {
    // The replay keys, completed in both tables.
    for n in 0..REPLAY_KEYS {
        let key = format!("replay-{n}");
        Call::new(&bench.store, "bench", &key)
            .run(async { Ok::<u64, Error>(n) })
            .await?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} SELECT * FROM {store_table}",
        bench.raw_table
    )))
    .execute(bench.pool())
    .await
    .map_err(|error| Error::store("postgres", error))?;

    println!(
        "PostgresStore vs raw sqlx, pool of {POOL_SIZE} connections, {:.1} s per cell (ops/s)",
        CELL.as_secs_f64() / 2.0
    );
    println!(
        "{:>7} | {:>11} {:>11} {:>6} | {:>12} {:>11} {:>6}",
        "callers", "store fresh", "raw fresh", "ratio", "store replay", "raw replay", "ratio"
    );
    for callers in CALLERS {
        let (store_fresh, raw_fresh) = bench
            .pair(Workload::StoreFresh, Workload::RawFresh, callers)
            .await;
        let (store_replay, raw_replay) = bench
            .pair(Workload::StoreReplay, Workload::RawReplay, callers)
            .await;
        println!(
            "{callers:>7} | {store_fresh:>11.0} {raw_fresh:>11.0} {:>5.0}% | {store_replay:>12.0} {raw_replay:>11.0} {:>5.0}%",
            100.0 * store_fresh / raw_fresh,
            100.0 * store_replay / raw_replay,
        );
    }

    Ok(())
}

fn main() {
    support::bench::main("postgres_throughput", run());
}
