//! Per-call overhead of `#[idempotent]` next to a plain `async fn` and a `#[cached]` hit.
//!
//! Run: `cargo bench -p idempotent-tests --features bench --bench overhead`
//! (results and ratios are written up in `BENCHMARKS.md`).
//!
//! Every measurement drives its futures itself: one current-thread tokio runtime, and one
//! `block_on` per criterion sample wrapping the whole batch of `iters` calls (criterion's async
//! support is not enabled), so the per-call figure is not dominated by `block_on`.
//!
//! Groups:
//! - `per_call`: the plain function, `#[cached]` hits, `#[idempotent]` replay and fresh calls,
//!   and the `Call` API replay.
//! - `replay_vs_records`: `#[idempotent]` replays spread over a store holding 1k vs 1M
//!   completed records (each store pre-filled once, lazily, never per sample), and a control
//!   replaying only 1k keys of the 1M store (cache effects vs work that grows with the store).
//! - `breakdown`: the pieces of a replay measured alone (key derivation, one `claim` on the
//!   store, decoding the stored payload), to show where the replay time goes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cached::proc_macro::cached;
use criterion::{Criterion, criterion_group, criterion_main};
use idempotent_core::key::{Fingerprint, IdempotencyKey};
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::{Call, Error, IdempotencyStore, MemoryStore, idempotent};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// The small result every variant computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount: u64,
}

const ACTION: &str = "capture";

fn receipt(order_id: u64, action: &str) -> Receipt {
    Receipt {
        charge_id: format!("ch_{order_id}_{action}"),
        amount: order_id.wrapping_mul(100),
    }
}

/// 1. Baseline: the plain function.
async fn plain(order_id: u64, action: &str) -> Result<Receipt, Error> {
    Ok(receipt(order_id, action))
}

// 2. `cached` 0.56 memoizes `async fn` only with its `async` feature, which this workspace does
// not enable, so the memoized twin is a sync fn called inside the same `block_on` batch (that
// flatters `cached` slightly: no future state machine around it). `&str` cannot be stored in
// the process-wide cache, so the key is `(u64, String)`: every lookup, hit or miss, allocates
// the `String` (as real uses of `cached` with a `&str` argument do). `result = true` caches
// only `Ok` values, like `#[idempotent]`.

/// `#[cached]` with its default `UnboundCache` (a `HashMap` behind a `Mutex`).
#[cached(
    key = "(u64, String)",
    convert = r#"{ (order_id, action.to_owned()) }"#,
    result = true
)]
fn cached_unbound(order_id: u64, action: &str) -> Result<Receipt, Error> {
    Ok(receipt(order_id, action))
}

/// `#[cached(size = ...)]`: a `SizedCache` (LRU; a hit also reorders the LRU list).
#[cached(
    size = 1024,
    key = "(u64, String)",
    convert = r#"{ (order_id, action.to_owned()) }"#,
    result = true
)]
fn cached_sized(order_id: u64, action: &str) -> Result<Receipt, Error> {
    Ok(receipt(order_id, action))
}

// 3.-5. `#[idempotent]` on a dedicated store passed as an argument (`store = store`, so the
// argument is neither key nor fingerprint). Key: `(order_id, action)`; nothing else is
// fingerprinted, so the fingerprint is `Fingerprint::NONE` (no second SHA-256).

#[idempotent(key = "order_id, action", store = store, scope = "bench.charge")]
async fn idem_charge(store: &MemoryStore, order_id: u64, action: &str) -> Result<Receipt, Error> {
    Ok(receipt(order_id, action))
}

/// Everything measured runs on this runtime, one `block_on` per batch.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("build the benchmark runtime")
}

/// A store that never fills up during a benchmark.
fn big_store(capacity: usize) -> MemoryStore {
    MemoryStore::builder().capacity(capacity).build()
}

fn per_call(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("per_call");

    group.bench_function("plain_async_fn", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(plain(black_box(42), black_box(ACTION)).await.ok());
                }
                start.elapsed()
            })
        })
    });

    cached_unbound(42, ACTION).expect("prime the cache");
    group.bench_function("cached_hit_unbound", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cached_unbound(black_box(42), black_box(ACTION)).ok());
                }
                start.elapsed()
            })
        })
    });

    cached_sized(42, ACTION).expect("prime the cache");
    group.bench_function("cached_hit_sized_lru", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(cached_sized(black_box(42), black_box(ACTION)).ok());
                }
                start.elapsed()
            })
        })
    });

    let replay_store = MemoryStore::new();
    rt.block_on(idem_charge(&replay_store, 42, ACTION))
        .expect("complete the replayed key");
    group.bench_function("idempotent_replay", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let store = black_box(&replay_store);
                    black_box(
                        idem_charge(store, black_box(42), black_box(ACTION))
                            .await
                            .ok(),
                    );
                }
                start.elapsed()
            })
        })
    });

    // A new store for every sample (created and dropped outside the timed region), holding one
    // record per iteration of the sample: each call claims a key never seen before, runs the
    // body, encodes the result and completes the record. The store grows from empty during the
    // sample, so the cost of growing its hash maps is included, amortised.
    group.bench_function("idempotent_fresh", |b| {
        b.iter_custom(|iters| {
            let store = big_store(usize::try_from(iters).unwrap_or(usize::MAX) + 16);
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                for order_id in 0..iters {
                    let store = black_box(&store);
                    black_box(idem_charge(store, black_box(order_id), ACTION).await.ok());
                }
                start.elapsed()
            });
            assert_eq!(store.len() as u64, iters);
            drop(store);
            elapsed
        })
    });

    // The programmatic API on the same kind of store: key derived on every call (as the
    // attribute does), then without the key derivation to isolate the engine and store.
    let call_store = MemoryStore::new();
    let call_key = |order_id: u64, action: &str| {
        IdempotencyKey::builder("bench.call")
            .part(&order_id)
            .part(action)
            .finish()
    };
    {
        let key = call_key(42, ACTION);
        rt.block_on(Call::new(&call_store, "bench.call", key.as_str()).run(plain(42, ACTION)))
            .expect("complete the replayed key");
    }
    group.bench_function("call_api_replay", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (order_id, action) = (black_box(42), black_box(ACTION));
                    let key = call_key(order_id, action);
                    let outcome = Call::new(black_box(&call_store), "bench.call", key.as_str())
                        .run(plain(order_id, action))
                        .await;
                    black_box(outcome.ok());
                }
                start.elapsed()
            })
        })
    });
    let prekeyed = call_key(42, ACTION);
    group.bench_function("call_api_replay_prekeyed", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let key = black_box(&prekeyed);
                    let outcome = Call::new(black_box(&call_store), "bench.call", key.as_str())
                        .run(plain(42, ACTION))
                        .await;
                    black_box(outcome.ok());
                }
                start.elapsed()
            })
        })
    });

    group.finish();
}

/// Coprime with every power of ten, so `i * STRIDE mod n` visits all `n` keys in a scattered
/// order (no two consecutive replays touch neighbouring records).
const STRIDE: u64 = 999_983;

/// Resident memory of this process in bytes (Linux), to report the cost of a stored record.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A store holding `n` completed records, keys `0..n`, written by the function itself.
fn prefilled(rt: &Runtime, n: u64) -> MemoryStore {
    let started = Instant::now();
    let before = resident_bytes();
    let store = big_store(2 * n as usize);
    rt.block_on(async {
        for order_id in 0..n {
            idem_charge(&store, order_id, ACTION)
                .await
                .expect("pre-fill the store");
        }
    });
    assert_eq!(store.len() as u64, n);
    // Too coarse to mean anything for small stores (allocator reuse, page granularity).
    let per_record = match (before, resident_bytes()) {
        (Some(before), Some(after)) if n >= 100_000 => {
            format!(
                ", ~{} B resident per record",
                after.saturating_sub(before) / n
            )
        }
        _ => String::new(),
    };
    eprintln!(
        "pre-filled {n} records in {:?}{per_record}",
        started.elapsed()
    );
    store
}

fn replay_vs_records(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("replay_vs_records");

    // Each store is filled on first use only: once per run, never per sample, and not at all
    // when its benchmarks are filtered out. The 1M store serves two benchmarks.
    let mut thousand: Option<MemoryStore> = None;
    let mut million: Option<MemoryStore> = None;
    // (name, records stored, distinct keys replayed)
    let cases: [(&str, u64, u64); 3] = [
        ("1k_records", 1_000, 1_000),
        ("1M_records", 1_000_000, 1_000_000),
        // Control: the 1M store, replaying only 1k of its keys. If this matches `1k_records`,
        // any gap between `1k_records` and `1M_records` comes from the working set no longer
        // fitting in the CPU caches and TLB, not from work that grows with the record count.
        ("1M_records_1k_hot_keys", 1_000_000, 1_000),
    ];
    for (name, records, hot) in cases {
        let slot = if records == 1_000 {
            &mut thousand
        } else {
            &mut million
        };
        let mut cursor = 0u64;
        group.bench_function(name, |b| {
            let store = slot.get_or_insert_with(|| prefilled(&rt, records));
            b.iter_custom(|iters| {
                let first = cursor;
                cursor = cursor.wrapping_add(iters);
                rt.block_on(async {
                    let start = Instant::now();
                    for i in first..first + iters {
                        let order_id = i.wrapping_mul(STRIDE) % hot;
                        black_box(idem_charge(&*store, black_box(order_id), ACTION).await.ok());
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// The pieces of one `#[idempotent]` replay, measured alone.
fn breakdown(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("breakdown");

    // SHA-256 over the scope and the two parts, then hex: what the expansion does first.
    group.bench_function("key_derivation", |b| {
        b.iter(|| {
            IdempotencyKey::builder(black_box("bench.charge"))
                .part(black_box(&42u64))
                .part(black_box(ACTION))
                .finish()
        })
    });

    // One `claim` that finds the completed record: the store's whole share of a replay
    // (boxed `async_trait` future, clock read, shard hash, lock, map lookup, payload clone).
    let store = MemoryStore::new();
    rt.block_on(idem_charge(&store, 42, ACTION))
        .expect("complete the key");
    let key = IdempotencyKey::builder("bench.charge")
        .part(&42u64)
        .part(ACTION)
        .finish();
    let mut payload = None;
    group.bench_function("store_claim_completed", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let request = ClaimRequest {
                        scope: "bench.charge",
                        key: key.as_str(),
                        fingerprint: Fingerprint::NONE,
                        owner: OwnerId::new(),
                        lease: Duration::from_secs(30),
                        ttl: Duration::from_secs(24 * 60 * 60),
                    };
                    let claim = black_box(&store).claim(black_box(&request)).await;
                    if let Ok(Claim::Completed(record)) = claim {
                        payload = Some(record.payload);
                    } else {
                        panic!("expected a completed record");
                    }
                }
                start.elapsed()
            })
        })
    });

    // Turning the stored bytes back into a `Receipt` (tag byte, then JSON).
    let payload = payload.expect("the claim returned the payload");
    group.bench_function("decode_payload", |b| {
        b.iter(|| {
            let bytes = black_box(&payload[..]);
            serde_json::from_slice::<Receipt>(&bytes[1..]).ok()
        })
    });

    // The clock read the engine and the store each do per call.
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = per_call, replay_vs_records, breakdown
}
criterion_main!(benches);
