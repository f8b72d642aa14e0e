//! Messages per second through the consumer helper, against the same consumer without it, per
//! store and per broker, in one run.
//!
//! - raw: the adapter ([`Broker`]) drained by the same loop the helper uses (at most
//!   `CONCURRENCY` messages in flight, one task each): receive, run the handler, acknowledge.
//!   Its handler does nothing.
//! - helper/memory, helper/redis: [`Consumer`] on a `MemoryStore` or a `RedisStore`, with the
//!   same empty handler: the cost of a claim and a completion per message, and the helper.
//! - raw/redis-set: the raw consumer deduplicating by hand with the two cheapest Redis
//!   commands that can (`SET key NX PX`, then `SET key XX PX` once handled), as the patterns
//!   document's consumer does: the floor for any Redis-backed deduplication on this machine.
//! - raw/tx: each message's effect (one row) in a transaction of its own, committed, then
//!   acknowledged. helper/pg-tx: the transactional inbox, whose transaction also records the
//!   message. These two are compared with each other.
//!
//! Every case consumes `MESSAGES` fresh messages from a fresh queue (RabbitMQ) or stream
//! (JetStream), published before the clock starts; the clock stops at the last
//! acknowledgement. Cases take turns, `ROUNDS` rounds, and the table shows each case's best
//! round (noise only slows a round down) and the median.
//!
//! Run with `cargo bench -p idempotent-tests --features rabbitmq,nats,redis --bench
//! consumer_throughput`; servers from `IDEMPOTENT_AMQP_URL`, `IDEMPOTENT_NATS_URL`,
//! `IDEMPOTENT_REDIS_URL` and `IDEMPOTENT_POSTGRES_URL` (defaults: the local ones). Queues,
//! streams, keys and tables are the run's own and deleted at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idempotent_core::consumer::nats::JetStream;
use idempotent_core::consumer::rabbitmq::RabbitMq;
use idempotent_core::consumer::{
    Broker, BrokerError, Consumer, DeadLetter, Delivery, Message, Redelivery,
};
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe};
use idempotent_core::{CallOptions, IdempotencyStore, MemoryStore, RedisStore};
use support::brokers::{Effects, Order, nats, rabbit};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

const MESSAGES: usize = 3_000;
const ROUNDS: usize = 3;
const CONCURRENCY: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Raw,
    Memory,
    RawRedis,
    Redis,
    RawTx,
    PgTx,
}

const CASES: [Case; 6] = [
    Case::Raw,
    Case::Memory,
    Case::RawRedis,
    Case::Redis,
    Case::RawTx,
    Case::PgTx,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Raw => "raw",
            Case::Memory => "helper/memory",
            Case::RawRedis => "raw/redis-set",
            Case::Redis => "helper/redis",
            Case::RawTx => "raw/tx",
            Case::PgTx => "helper/pg-tx",
        }
    }

    /// What it is compared with.
    fn baseline(self) -> Option<Case> {
        match self {
            Case::Memory | Case::Redis | Case::RawRedis => Some(Case::Raw),
            Case::PgTx => Some(Case::RawTx),
            Case::Raw | Case::RawTx => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    RabbitMq,
    JetStream,
}

/// Counts acknowledgements and says when the last one is in.
#[derive(Clone)]
struct Acks {
    count: Arc<AtomicUsize>,
    all_in: Arc<Notify>,
}

impl Acks {
    fn new() -> Self {
        Acks {
            count: Arc::new(AtomicUsize::new(0)),
            all_in: Arc::new(Notify::new()),
        }
    }

    fn one(&self) {
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == MESSAGES {
            self.all_in.notify_one();
        }
    }
}

/// The adapter, with every acknowledgement counted: the same wrapper for raw and helper.
struct Counted<B>(B, Acks);

struct CountedDelivery<D>(D, Acks);

#[async_trait]
impl<B: Broker> Broker for Counted<B> {
    type Delivery = CountedDelivery<B::Delivery>;
    async fn receive(&mut self) -> Result<Option<Self::Delivery>, BrokerError> {
        Ok(self
            .0
            .receive()
            .await?
            .map(|d| CountedDelivery(d, self.1.clone())))
    }
}

#[async_trait]
impl<D: Delivery> Delivery for CountedDelivery<D> {
    fn message(&self) -> &Message {
        self.0.message()
    }
    async fn ack(&self) -> Result<(), BrokerError> {
        let acked = self.0.ack().await;
        self.1.one();
        acked
    }
    async fn nack(&self, redelivery: Redelivery) -> Result<(), BrokerError> {
        self.0.nack(redelivery).await
    }
    async fn dead_letter(&self, reason: &DeadLetter) -> Result<(), BrokerError> {
        self.0.dead_letter(reason).await
    }
    async fn in_progress(&self) -> Result<(), BrokerError> {
        self.0.in_progress().await
    }
}

struct Env {
    redis: RedisStore,
    /// A connection of its own for the hand-rolled consumer's commands.
    raw: support::redis::RawRedis,
    prefix: String,
    effects: Effects,
    rabbit: lapin::Connection,
    nats: async_nats::Client,
    queues: Vec<String>,
    streams: Vec<String>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let redis_url = support::redis_url();
    let prefix = support::unique_name("idem-bench-consumer");
    let _keys = support::redis::DeleteKeys(prefix.clone());
    let Ok(redis) = RedisStore::builder()
        .key_prefix(&prefix)
        .connect(&redis_url)
        .await
    else {
        eprintln!("Redis unreachable at {redis_url}");
        return;
    };
    let Some(effects) = Effects::new("bench_consumer").await else {
        return;
    };
    let (Some(rabbit), Some(nats)) = (rabbit::connect().await, nats::connect().await) else {
        return;
    };
    let Some(raw) = support::redis::RawRedis::connect().await else {
        return;
    };
    let mut env = Env {
        redis,
        raw,
        prefix: prefix.clone(),
        effects,
        rabbit,
        nats,
        queues: Vec::new(),
        streams: Vec::new(),
    };
    println!(
        "{MESSAGES} messages per case, {CONCURRENCY} in flight, {ROUNDS} rounds; messages per second"
    );
    let mut results: Vec<(Which, Case, Vec<f64>, Duration)> = Vec::new();
    for which in [Which::RabbitMq, Which::JetStream] {
        for case in CASES {
            results.push((which, case, Vec::new(), Duration::ZERO));
        }
    }
    for round in 0..ROUNDS {
        for (which, case, rates, cpu) in &mut results {
            let (rate, used) = one_case(&mut env, *which, *case, round).await;
            eprintln!("round {round} {which:?} {}: {rate:.0} msg/s", case.name());
            rates.push(rate);
            *cpu += used;
        }
    }
    let _queues = rabbit::DeleteQueues(std::mem::take(&mut env.queues));
    let _streams = nats::DeleteStreams(std::mem::take(&mut env.streams));

    println!();
    println!("| broker | case | best msg/s | median msg/s | best / baseline | client CPU µs/msg |");
    println!("|---|---|---:|---:|---:|---:|");
    let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);
    for (which, case, rates, cpu) in &results {
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let ratio = case
            .baseline()
            .and_then(|base| {
                results
                    .iter()
                    .find(|(w, c, _, _)| w == which && *c == base)
                    .map(|(_, _, base_rates, _)| best(rates) / best(base_rates))
            })
            .map(|ratio| format!("{ratio:.2} (cost {:.0}%)", (1.0 - ratio) * 100.0))
            .unwrap_or_else(|| "baseline".to_owned());
        let cpu_per_message = cpu.as_secs_f64() * 1e6 / (ROUNDS * MESSAGES) as f64;
        println!(
            "| {which:?} | {} | {:.0} | {median:.0} | {ratio} | {cpu_per_message:.1} |",
            case.name(),
            best(rates)
        );
    }
}

/// Publishes fresh messages, then times their consumption: messages per second, and the
/// CPU this process spent meanwhile (all threads: the consumer, the broker client, the store
/// client).
async fn one_case(env: &mut Env, which: Which, case: Case, round: usize) -> (f64, Duration) {
    let tag = format!("{}-{round}", case.name().replace('/', "-"));
    let orders = support::brokers::orders(&support::unique_name(&tag), MESSAGES, 0.0);
    let acks = Acks::new();
    match which {
        Which::RabbitMq => {
            let queue = support::unique_name("idem-bench");
            env.queues.push(queue.clone());
            rabbit::publish(&env.rabbit, &queue, &orders, true).await;
            let broker = RabbitMq::builder(rabbit::url(), &queue)
                .prefetch(CONCURRENCY as u16)
                .connect()
                .await
                .expect("connect to RabbitMQ");
            timed(env, case, Counted(broker, acks.clone()), &acks).await
        }
        Which::JetStream => {
            let stream = support::unique_name("idem_bench");
            let subject = format!("{stream}.orders");
            nats::create_stream(&env.nats, &stream, vec![subject.clone()]).await;
            env.streams.push(stream.clone());
            publish_nats(env, &subject, &orders).await;
            let broker = JetStream::builder(nats::url(), &stream, &subject)
                .prefetch(CONCURRENCY as u16)
                .connect()
                .await
                .expect("connect to NATS");
            let measured = timed(env, case, Counted(broker, acks.clone()), &acks).await;
            let _ = async_nats::jetstream::new(env.nats.clone())
                .delete_stream(&stream)
                .await;
            env.streams.retain(|s| *s != stream);
            measured
        }
    }
}

async fn publish_nats(env: &Env, subject: &str, orders: &[Order]) {
    nats::publish(&env.nats, subject, orders, |_, order| {
        Some(order.id.clone())
    })
    .await;
}

async fn timed<B: Broker + 'static>(
    env: &Env,
    case: Case,
    broker: B,
    acks: &Acks,
) -> (f64, Duration) {
    let all_in = Arc::clone(&acks.all_in);
    let done = async move { all_in.notified().await };
    let started = Instant::now();
    let cpu_before = support::bench::process_cpu();
    let options = CallOptions::new().lease(Duration::from_secs(30));
    let noop = |_: Message| async { Ok::<(), std::io::Error>(()) };
    let builder = || {
        Consumer::builder(format!("bench.{}", case.name()))
            .concurrency(CONCURRENCY)
            .call_options(options)
    };
    let limit = Duration::from_secs(120);
    let finished = match case {
        Case::Raw => tokio::time::timeout(limit, raw(broker, done, Effect::None))
            .await
            .is_ok(),
        Case::RawRedis => {
            let effect = Effect::RedisSet(env.raw.clone(), env.prefix.clone());
            tokio::time::timeout(limit, raw(broker, done, effect))
                .await
                .is_ok()
        }
        Case::RawTx => {
            let effect = Effect::Row(env.effects.direct.clone(), env.effects.table.clone());
            tokio::time::timeout(limit, raw(broker, done, effect))
                .await
                .is_ok()
        }
        Case::Memory => {
            let consumer = builder().build(MemoryStore::new(), broker, noop).unwrap();
            tokio::time::timeout(limit, consumer.run_until(done))
                .await
                .is_ok()
        }
        Case::Redis => {
            let store: Arc<dyn IdempotencyStore> = Arc::new(env.redis.clone());
            let consumer = builder().build(store, broker, noop).unwrap();
            tokio::time::timeout(limit, consumer.run_until(done))
                .await
                .is_ok()
        }
        Case::PgTx => {
            let consumer = builder()
                .transactional(env.effects.store.clone(), broker, env.effects.handler())
                .unwrap();
            tokio::time::timeout(limit, consumer.run_until(done))
                .await
                .is_ok()
        }
    };
    assert!(finished, "{case:?} did not finish");
    let elapsed = started.elapsed();
    let cpu = support::bench::process_cpu().saturating_sub(cpu_before);
    assert!(acks.count.load(Ordering::SeqCst) >= MESSAGES);
    (MESSAGES as f64 / elapsed.as_secs_f64(), cpu)
}

/// What the raw consumer does per message.
#[derive(Clone)]
enum Effect {
    None,
    /// Deduplicate by hand: `SET NX PX`, then `SET XX PX`.
    RedisSet(support::redis::RawRedis, String),
    /// One row in a transaction of its own.
    Row(sqlx::PgPool, String),
}

impl Effect {
    async fn apply(&self, message: &Message) {
        match self {
            Effect::None => {}
            Effect::RedisSet(redis, prefix) => {
                let key = format!("{prefix}:raw:{}", message.id.as_deref().unwrap_or(""));
                let ttl = b"86400000";
                redis
                    .command(&[b"SET", key.as_bytes(), b"claimed", b"NX", b"PX", ttl])
                    .await;
                redis
                    .command(&[b"SET", key.as_bytes(), b"\x01null", b"XX", b"PX", ttl])
                    .await;
            }
            Effect::Row(pool, table) => {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table} (message_id, order_id) VALUES ($1, $2)"
                )))
                .bind(message.id.clone().unwrap_or_default())
                .bind(support::brokers::order_id(message).unwrap())
                .execute(&mut *tx)
                .await
                .expect("insert");
                tx.commit().await.expect("commit");
            }
        }
    }
}

/// The consumer without the helper: the same in-flight limit and tasks, the handler, the
/// acknowledgement, with `effect` as the handler.
async fn raw<B: Broker>(
    mut broker: B,
    done: impl std::future::Future<Output = ()>,
    effect: Effect,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    let mut done = std::pin::pin!(done);
    loop {
        let permit = tokio::select! {
            () = &mut done => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.unwrap(),
        };
        let delivery = tokio::select! {
            () = &mut done => break,
            delivery = broker.receive() => delivery.expect("receive").expect("a message"),
        };
        let effect = effect.clone();
        tasks.spawn(async move {
            effect.apply(delivery.message()).await;
            let _ = delivery.ack().await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}
