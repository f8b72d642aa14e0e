#![cfg(feature = "rabbitmq")]
//! The consumer on a real RabbitMQ, with the transactional inbox on PostgreSQL: each order's
//! effect (a `processed_orders` row) happens once through duplicates, a killed worker,
//! handler errors, two workers, a store outage and a graceful shutdown. Each test has queues
//! and tables of its own.

use std::time::Duration;

use idempotent_core::consumer::rabbitmq::RabbitMq;
use idempotent_core::consumer::{Consumer, Message, StatsSnapshot};
use idempotent_core::{MemoryStore, PostgresStore};
use support::brokers::rabbit::{self, DeleteQueues};
use support::brokers::{Effects, eventually, orders, worker_settings};

const LIMIT: Duration = Duration::from_secs(90);

/// A worker on `queue`, recording orders in `effects` through the inbox.
async fn worker(effects: &Effects, store: &PostgresStore, queue: &str) -> Consumer<RabbitMq> {
    let broker = RabbitMq::builder(rabbit::url(), queue)
        .prefetch(16)
        .connect()
        .await
        .expect("connect the worker");
    worker_settings("tests.rabbitmq.orders")
        .transactional(store.clone(), broker, effects.handler())
        .expect("build the worker")
}

async fn run(consumer: Consumer<RabbitMq>) -> StatsSnapshot {
    tokio::time::timeout(LIMIT, consumer.run())
        .await
        .expect("the worker did not finish in time")
        .expect("the worker failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_takes_effect_once_through_duplicates_and_a_killed_worker() {
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_amqp_kill").await else {
        return;
    };
    let queue = support::unique_name("idem-orders");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let orders = orders("kill", 1_000, 0.2);
    assert_eq!(orders.len(), 1_200);
    rabbit::publish(&connection, &queue, &orders, true).await;

    // The first worker is killed mid-stream: its task is dropped with its connection, so
    // its unacknowledged messages go back to the queue, some of them already committed.
    let first = worker(&effects, &effects.store, &queue).await;
    let first_stats = first.stats();
    let killed = tokio::spawn(first.run());
    assert!(
        eventually(LIMIT, async || effects.rows().await >= 300).await,
        "the first worker processed too little"
    );
    killed.abort();
    let _ = killed.await;
    let before = first_stats.snapshot();
    assert!(before.processed < 1_000, "killed too late: {before:?}");

    let second = run(worker(&effects, &effects.store, &queue).await).await;
    effects.assert_exactly_once(&orders).await;
    // Every duplicate reached a consumer and was dropped there, not by the broker.
    assert!(
        before.duplicates + second.duplicates >= 200,
        "duplicates seen: {before:?} {second:?}"
    );
    // The counters may miss a message the killed worker committed but never counted; the
    // effect table is the truth.
    assert!(
        before.processed + second.processed <= 1_000,
        "{before:?} {second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_queue_share_the_records() {
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_amqp_two").await else {
        return;
    };
    let queue = support::unique_name("idem-orders");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let orders = orders("two", 400, 0.2);
    rabbit::publish(&connection, &queue, &orders, true).await;
    let (a, b) = tokio::join!(
        async { run(worker(&effects, &effects.store, &queue).await).await },
        async { run(worker(&effects, &effects.store, &queue).await).await },
    );
    effects.assert_exactly_once(&orders).await;
    assert_eq!(a.processed + b.processed, 400, "{a:?} {b:?}");
    assert!(
        a.processed > 0 && b.processed > 0,
        "both worked: {a:?} {b:?}"
    );
    assert!(a.duplicates + b.duplicates >= 80, "{a:?} {b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_are_redelivered_until_they_succeed() {
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_amqp_errors").await else {
        return;
    };
    let queue = support::unique_name("idem-orders");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let orders = orders("errors", 50, 0.0);
    rabbit::publish(&connection, &queue, &orders, true).await;
    let broker = RabbitMq::builder(rabbit::url(), &queue)
        .connect()
        .await
        .unwrap();
    let stats = Consumer::builder("tests.rabbitmq.errors")
        .retry_delay(Duration::from_millis(10))
        .max_attempts(5)
        .stop_when_idle(Duration::from_secs(2))
        .transactional(
            effects.store.clone(),
            broker,
            effects.handler().failing_first(2),
        )
        .unwrap();
    let stats = run(stats).await;
    effects.assert_exactly_once(&orders).await;
    assert_eq!((stats.failed, stats.processed), (100, 50), "{stats:?}");
    assert_eq!(stats.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_keyless_messages_go_to_the_dead_letter_queue() {
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_amqp_poison").await else {
        return;
    };
    let queue = support::unique_name("idem-orders");
    let dead = format!("{queue}.dead");
    let _cleanup = DeleteQueues(vec![queue.clone(), dead.clone()]);
    let orders = orders("poison", 10, 0.0);
    rabbit::publish(&connection, &queue, &orders, true).await;
    let keyless = support::brokers::orders("keyless", 1, 0.0);
    rabbit::publish(&connection, &queue, &keyless, false).await;

    let poisoned = orders[3].order_id.clone();
    let broker = RabbitMq::builder(rabbit::url(), &queue)
        .dead_letter_queue(&dead)
        .connect()
        .await
        .unwrap();
    let consumer = Consumer::builder("tests.rabbitmq.poison")
        .retry_delay(Duration::from_millis(10))
        .max_attempts(3)
        .stop_when_idle(Duration::from_secs(2))
        .transactional(
            effects.store.clone(),
            broker,
            effects.handler().poisoned([poisoned.clone()]),
        )
        .unwrap();
    let stats = run(consumer).await;
    assert_eq!(effects.rows().await, 9);
    assert_eq!(
        (stats.processed, stats.failed, stats.dead_lettered),
        (9, 3, 2),
        "{stats:?}"
    );

    let dead_letters = rabbit::drain(&connection, &dead).await;
    assert_eq!(dead_letters.len(), 2);
    let kinds: Vec<(String, String)> = dead_letters
        .iter()
        .map(|(body, headers)| {
            let kind = headers
                .as_ref()
                .and_then(|h| h.inner().get("x-idempotent-dead-letter").cloned())
                .map(|value| match value {
                    lapin::types::AMQPValue::LongString(text) => text.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            (String::from_utf8_lossy(body).into_owned(), kind)
        })
        .collect();
    assert!(
        kinds
            .iter()
            .any(|(body, kind)| body.contains(&poisoned) && kind.contains("poison")),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|(body, kind)| body.contains("keyless") && kind.contains("missing_key")),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_stream_acknowledges_nothing_that_did_not_commit() {
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let builder = PostgresStore::builder().timeout(Duration::from_millis(500));
    let Some((store, proxy, guard)) =
        support::postgres::connect_through_proxy("consumer_amqp_outage", builder, 8).await
    else {
        return;
    };
    let effects = Effects::with_store(store.clone(), guard).await.unwrap();
    let queue = support::unique_name("idem-orders");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let orders = orders("outage", 400, 0.2);
    rabbit::publish(&connection, &queue, &orders, true).await;

    let consumer = worker(&effects, &store, &queue).await;
    let running = tokio::spawn(run(consumer));
    assert!(eventually(LIMIT, async || effects.rows().await >= 100).await);
    // The store goes silent for a few seconds: claims, completions and commits time out.
    proxy.go_silent();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = effects.rows().await;
    proxy.resume();
    let stats = running.await.unwrap();

    // A message acknowledged without a committed row would be missing here for good.
    effects.assert_exactly_once(&orders).await;
    assert!(during < 400, "the outage came too late to matter");
    assert!(stats.store_errors > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_key_a_memory_store_too() {
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let queue = support::unique_name("idem-orders");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let orders = orders("memory", 100, 0.2);
    rabbit::publish(&connection, &queue, &orders, true).await;
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = {
        let runs = std::sync::Arc::clone(&runs);
        move |_: Message| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<(), std::io::Error>(()) }
        }
    };
    let broker = RabbitMq::builder(rabbit::url(), &queue)
        .connect()
        .await
        .unwrap();
    let consumer = Consumer::builder("tests.rabbitmq.memory")
        .stop_when_idle(Duration::from_secs(1))
        .build(MemoryStore::new(), broker, handler)
        .unwrap();
    let stats = tokio::time::timeout(LIMIT, consumer.run())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 100);
    assert_eq!((stats.processed, stats.duplicates), (100, 20), "{stats:?}");
}

/// The patterns document's fast path: with the tiered store, a duplicate of a processed
/// message is recognised from Redis without PostgreSQL. Here PostgreSQL is silent while the
/// duplicate arrives, and it is still acknowledged as a duplicate, with no store error.
#[cfg(feature = "tiered")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_duplicates_are_recognised_from_redis_while_postgres_is_silent() {
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let builder = PostgresStore::builder().timeout(Duration::from_millis(500));
    let Some((durable, proxy, _tables)) =
        support::postgres::connect_through_proxy("consumer_amqp_tiered", builder, 4).await
    else {
        return;
    };
    let cache_prefix = support::unique_name("idem-consumer-tiered");
    let _keys = support::redis::DeleteKeys(cache_prefix.clone());
    let redis_url = support::redis_url();
    let store = match idempotent_core::TieredStore::builder()
        .cache_prefix(&cache_prefix)
        .connect(durable, &redis_url)
        .await
    {
        Ok(store) => std::sync::Arc::new(store),
        Err(error) => return support::unavailable("Redis", &redis_url, error).unwrap_or(()),
    };
    let queue = support::unique_name("idem-orders");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let order = orders("tiered", 1, 0.0);
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let consume = async || {
        let runs = std::sync::Arc::clone(&runs);
        let handler = move |_: Message| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<(), std::io::Error>(()) }
        };
        let broker = RabbitMq::builder(rabbit::url(), &queue)
            .connect()
            .await
            .unwrap();
        let consumer = Consumer::builder("tests.rabbitmq.tiered")
            .concurrency(1)
            .retry_delay(Duration::from_millis(50))
            .stop_when_idle(Duration::from_secs(1))
            .build(std::sync::Arc::clone(&store), broker, handler)
            .unwrap();
        tokio::time::timeout(LIMIT, consumer.run())
            .await
            .unwrap()
            .unwrap()
    };
    // Processed, then a first duplicate, which PostgreSQL answers and Redis caches.
    rabbit::publish(&connection, &queue, &order, true).await;
    rabbit::publish(&connection, &queue, &order, true).await;
    let warm = consume().await;
    assert_eq!((warm.processed, warm.duplicates), (1, 1), "{warm:?}");

    proxy.go_silent();
    rabbit::publish(&connection, &queue, &order, true).await;
    let fast = consume().await;
    proxy.resume();
    assert_eq!(
        (fast.duplicates, fast.store_errors, fast.processed),
        (1, 0, 0),
        "{fast:?}"
    );
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Graceful shutdown on a real broker: the messages in flight when it is asked for finish and
/// are acknowledged, nothing else is handled, and every other message is still in the queue
/// afterwards (those the worker had prefetched are requeued when its channel closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_messages_and_leaves_the_rest_queued() {
    use std::sync::{Arc, Mutex};
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    let queue = support::unique_name("idem-shutdown");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let orders = orders("shutdown", 20, 0.0);
    rabbit::publish(&connection, &queue, &orders, true).await;

    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let finished: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let handler = {
        let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
        move |message: Message| {
            started.add_permits(1);
            let finished = Arc::clone(&finished);
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.lock().unwrap().push(message.body.to_vec());
                Ok::<(), std::io::Error>(())
            }
        }
    };
    let broker = RabbitMq::builder(rabbit::url(), &queue)
        .prefetch(4)
        .connect()
        .await
        .unwrap();
    let consumer = Consumer::builder("tests.rabbitmq.shutdown")
        .concurrency(2)
        .shutdown_grace(Duration::from_secs(10))
        .build(MemoryStore::new(), broker, handler)
        .unwrap();
    let shutdown = {
        let started = Arc::clone(&started);
        async move {
            let _ = started.acquire_many(2).await;
        }
    };
    let stats = tokio::time::timeout(LIMIT, consumer.run_until(shutdown))
        .await
        .expect("the worker did not stop in time")
        .expect("the worker failed");
    let finished = finished.lock().unwrap().clone();
    assert!(finished.len() >= 2, "the messages in flight finished");
    assert_eq!(stats.processed as usize, finished.len(), "{stats:?}");

    let mut left = Vec::new();
    let all_back = eventually(Duration::from_secs(10), async || {
        left.extend(rabbit::drain(&connection, &queue).await);
        left.len() + finished.len() >= orders.len()
    })
    .await;
    assert!(
        all_back,
        "{} left in the queue, {} finished",
        left.len(),
        finished.len()
    );
    assert_eq!(
        left.len() + finished.len(),
        orders.len(),
        "none lost, none twice"
    );
    assert!(
        left.iter().all(|(body, _)| !finished.contains(body)),
        "a finished message was not acknowledged"
    );
}
