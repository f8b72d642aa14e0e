#![cfg(feature = "nats")]
//! The consumer on a real NATS JetStream, with the transactional inbox on PostgreSQL.
//!
//! JetStream drops a publish whose `Nats-Msg-Id` it saw within its duplicate window, so a
//! duplicate test that only republishes under the same id would test the server, not the
//! consumer. Here duplicates reach the consumer two ways, and each test checks they did:
//! orders republished under new ids (keyed by the body's `order_id`), and redeliveries of
//! messages whose acknowledgement was lost (keyed by `Nats-Msg-Id`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idempotent_core::consumer::nats::JetStream;
use idempotent_core::consumer::{
    Broker, BrokerError, Consumer, DeadLetter, Delivery, Message, Redelivery, StatsSnapshot,
};
use idempotent_core::{CallOptions, MemoryStore, PostgresStore};
use support::brokers::nats::{self, DeleteStreams};
use support::brokers::{Effects, Order, eventually, orders, worker_settings};

const LIMIT: Duration = Duration::from_secs(90);

/// A stream and subject of the test's own, deleted when it ends.
struct Topic {
    stream: String,
    subject: String,
    _cleanup: DeleteStreams,
}

async fn topic(client: &async_nats::Client) -> Topic {
    let stream = support::unique_name("idem_orders");
    let subject = format!("{stream}.orders");
    nats::create_stream(client, &stream, vec![subject.clone()]).await;
    Topic {
        _cleanup: DeleteStreams(vec![stream.clone()]),
        stream,
        subject,
    }
}

/// Publishes `orders`: the first copy of each order under its id, a second copy (the
/// duplicates) under a new id, as a publisher retrying after a lost acknowledgement does.
async fn publish_with_retries(
    client: &async_nats::Client,
    subject: &str,
    orders: &[Order],
) -> usize {
    let mut seen = std::collections::HashSet::new();
    nats::publish(client, subject, orders, |_, order| {
        let first = seen.insert(order.id.clone());
        Some(if first {
            order.id.clone()
        } else {
            format!("{}-retry", order.id)
        })
    })
    .await
}

fn broker(topic: &Topic) -> idempotent_core::consumer::nats::JetStreamBuilder {
    JetStream::builder(nats::url(), &topic.stream, &topic.subject)
        .prefetch(16)
        .ack_wait(Duration::from_secs(3))
}

async fn run<B: Broker>(consumer: Consumer<B>) -> StatsSnapshot {
    tokio::time::timeout(LIMIT, consumer.run())
        .await
        .expect("the worker did not finish in time")
        .expect("the worker failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_takes_effect_once_through_duplicates_and_a_killed_worker() {
    let Some(client) = nats::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_nats_kill").await else {
        return;
    };
    let topic = topic(&client).await;
    let orders = orders("kill", 1_000, 0.2);
    assert_eq!(
        publish_with_retries(&client, &topic.subject, &orders).await,
        1_200
    );
    // The same ids again: JetStream's duplicate window drops every one of them, which is why
    // the duplicates above carry new ids.
    let repeated = nats::publish(&client, &topic.subject, &orders[..50], |_, o| {
        Some(o.id.clone())
    })
    .await;
    assert_eq!(repeated, 0);
    assert_eq!(nats::stream_messages(&client, &topic.stream).await, 1_200);

    let worker = async || {
        worker_settings("tests.nats.orders")
            .key_from_json_field("order_id")
            // Past the killed worker's ack_wait, so its messages come back before this one
            // gives up.
            .stop_when_idle(Duration::from_secs(5))
            .transactional(
                effects.store.clone(),
                broker(&topic).connect().await.unwrap(),
                effects.handler(),
            )
            .unwrap()
    };
    let first = worker().await;
    let first_stats = first.stats();
    let killed = tokio::spawn(first.run());
    assert!(eventually(LIMIT, async || effects.rows().await >= 300).await);
    killed.abort();
    let _ = killed.await;
    let before = first_stats.snapshot();
    assert!(before.processed < 1_000, "killed too late: {before:?}");

    let second = run(worker().await).await;
    effects.assert_exactly_once(&orders).await;
    assert!(
        before.duplicates + second.duplicates >= 200,
        "the duplicates reached the consumers: {before:?} {second:?}"
    );
}

/// A broker whose acknowledgements are lost on the way: the messages stay unacknowledged and
/// JetStream redelivers them after `ack_wait`, under the same `Nats-Msg-Id`.
struct LoseAcks<B>(B);

struct LostAck<D>(D);

#[async_trait]
impl<B: Broker> Broker for LoseAcks<B> {
    type Delivery = LostAck<B::Delivery>;
    async fn receive(&mut self) -> Result<Option<Self::Delivery>, BrokerError> {
        Ok(self.0.receive().await?.map(LostAck))
    }
}

#[async_trait]
impl<D: Delivery> Delivery for LostAck<D> {
    fn message(&self) -> &Message {
        self.0.message()
    }
    async fn ack(&self) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn nack(&self, redelivery: Redelivery) -> Result<(), BrokerError> {
        self.0.nack(redelivery).await
    }
    async fn dead_letter(&self, reason: &DeadLetter) -> Result<(), BrokerError> {
        self.0.dead_letter(reason).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_after_lost_acknowledgements_are_recognised_by_message_id() {
    let Some(client) = nats::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_nats_redeliver").await else {
        return;
    };
    let topic = topic(&client).await;
    let orders = orders("redeliver", 100, 0.0);
    nats::publish(&client, &topic.subject, &orders, |_, o| Some(o.id.clone())).await;

    // Room for every message unacknowledged at once; redeliveries only after the first
    // worker has stopped.
    let lossy = broker(&topic)
        .prefetch(128)
        .ack_wait(Duration::from_secs(3))
        .connect()
        .await
        .unwrap();
    let lossy = LoseAcks(lossy);
    let first = worker_settings("tests.nats.redeliver")
        .stop_when_idle(Duration::from_millis(500))
        .transactional(effects.store.clone(), lossy, effects.handler())
        .unwrap();
    let first = run(first).await;
    assert_eq!(first.processed, 100);
    assert_eq!(effects.rows().await, 100);

    // Nothing was acknowledged: every message comes back, with its id and a delivery count
    // above one, and is acknowledged as a duplicate without running.
    let redelivered = Arc::new(AtomicUsize::new(0));
    let second = worker_settings("tests.nats.redeliver")
        .stop_when_idle(Duration::from_secs(5))
        .transactional(
            effects.store.clone(),
            Counting(
                broker(&topic).connect().await.unwrap(),
                Arc::clone(&redelivered),
            ),
            effects.handler(),
        )
        .unwrap();
    let second = run(second).await;
    effects.assert_exactly_once(&orders).await;
    assert_eq!(
        (second.processed, second.duplicates),
        (0, 100),
        "{second:?}"
    );
    assert_eq!(redelivered.load(Ordering::SeqCst), 100);
}

/// Counts the deliveries the broker marks as redeliveries.
struct Counting<B>(B, Arc<AtomicUsize>);

#[async_trait]
impl<B: Broker> Broker for Counting<B> {
    type Delivery = B::Delivery;
    async fn receive(&mut self) -> Result<Option<B::Delivery>, BrokerError> {
        let delivery = self.0.receive().await?;
        if let Some(delivery) = &delivery {
            let message = delivery.message();
            if message.redelivered && message.deliveries > Some(1) && message.id.is_some() {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(delivery)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_handler_from_being_redelivered() {
    let Some(client) = nats::connect().await else {
        return;
    };
    let topic = topic(&client).await;
    let orders = orders("long", 3, 0.0);
    nats::publish(&client, &topic.subject, &orders, |_, o| Some(o.id.clone())).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        move |_: Message| {
            runs.fetch_add(1, Ordering::SeqCst);
            // Twice the ack_wait: without the heartbeat's +WPI, JetStream would redeliver.
            async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<(), std::io::Error>(())
            }
        }
    };
    let consumer = worker_settings("tests.nats.long")
        .call_options(CallOptions::new().lease(Duration::from_secs(1)))
        .build(
            MemoryStore::new(),
            broker(&topic)
                .ack_wait(Duration::from_millis(1_500))
                .connect()
                .await
                .unwrap(),
            handler,
        )
        .unwrap();
    let stats = run(consumer).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(
        (stats.received, stats.in_flight, stats.processed),
        (3, 0, 3),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_durable_consumer_share_the_records() {
    let Some(client) = nats::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_nats_two").await else {
        return;
    };
    let topic = topic(&client).await;
    let orders = orders("two", 400, 0.2);
    publish_with_retries(&client, &topic.subject, &orders).await;
    let worker = async || {
        worker_settings("tests.nats.two")
            .key_from_json_field("order_id")
            .transactional(
                effects.store.clone(),
                broker(&topic).connect().await.unwrap(),
                effects.handler(),
            )
            .unwrap()
    };
    let (a, b) = tokio::join!(async { run(worker().await).await }, async {
        run(worker().await).await
    });
    effects.assert_exactly_once(&orders).await;
    assert_eq!(a.processed + b.processed, 400, "{a:?} {b:?}");
    assert!(
        a.processed > 0 && b.processed > 0,
        "both worked: {a:?} {b:?}"
    );
    assert!(a.duplicates + b.duplicates >= 80, "{a:?} {b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_are_redelivered_and_poison_goes_to_the_dead_letter_subject() {
    let Some(client) = nats::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_nats_poison").await else {
        return;
    };
    let topic = topic(&client).await;
    let dead = support::unique_name("idem_dead");
    let dead_subject = format!("{dead}.orders");
    nats::create_stream(&client, &dead, vec![dead_subject.clone()]).await;
    let _dead_cleanup = DeleteStreams(vec![dead.clone()]);
    let orders = orders("poison", 20, 0.0);
    nats::publish(&client, &topic.subject, &orders, |_, o| Some(o.id.clone())).await;
    let keyless = support::brokers::orders("keyless", 1, 0.0);
    nats::publish(&client, &topic.subject, &keyless, |_, _| None).await;

    let poisoned = orders[3].order_id.clone();
    let consumer = worker_settings("tests.nats.poison")
        .max_attempts(3)
        .transactional(
            effects.store.clone(),
            broker(&topic)
                .dead_letter_subject(&dead_subject)
                .connect()
                .await
                .unwrap(),
            effects
                .handler()
                .failing_first(1)
                .poisoned([poisoned.clone()]),
        )
        .unwrap();
    let stats = run(consumer).await;
    let healthy: Vec<Order> = orders
        .iter()
        .filter(|o| o.order_id != poisoned)
        .cloned()
        .collect();
    effects.assert_exactly_once(&healthy).await;
    // 19 orders failed once each; the poisoned one three times, then it was dead-lettered.
    assert_eq!(
        (stats.processed, stats.failed, stats.dead_lettered),
        (19, 22, 2),
        "{stats:?}"
    );
    assert_eq!(nats::stream_messages(&client, &dead).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_stream_acknowledges_nothing_that_did_not_commit() {
    let Some(client) = nats::connect().await else {
        return;
    };
    let builder = PostgresStore::builder().timeout(Duration::from_millis(500));
    let Some((store, proxy, guard)) =
        support::postgres::connect_through_proxy("consumer_nats_outage", builder, 8).await
    else {
        return;
    };
    let effects = Effects::with_store(store.clone(), guard).await.unwrap();
    let topic = topic(&client).await;
    let orders = orders("outage", 400, 0.2);
    publish_with_retries(&client, &topic.subject, &orders).await;

    let consumer = worker_settings("tests.nats.outage")
        .key_from_json_field("order_id")
        .transactional(
            store,
            broker(&topic).connect().await.unwrap(),
            effects.handler(),
        )
        .unwrap();
    let running = tokio::spawn(run(consumer));
    assert!(eventually(LIMIT, async || effects.rows().await >= 100).await);
    proxy.go_silent();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = effects.rows().await;
    proxy.resume();
    let stats = running.await.unwrap();
    effects.assert_exactly_once(&orders).await;
    assert!(during < 400, "the outage came too late to matter");
    assert!(stats.store_errors > 0, "{stats:?}");
}
