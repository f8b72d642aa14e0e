#![cfg(feature = "consumer")]
//! The consumer helper's decisions, against an in-memory fake broker: fast and deterministic.
//! Each test checks one row of the helper's table (what a call's result does to the delivery).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::consumer::{
    Broker, BrokerError, Consumer, DeadLetter, Delivery, Message, MissingKey, Redelivery,
};
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, RecordState};
use idempotent_core::{CallOptions, Error, IdempotencyStore, MemoryStore};

/// What happened to a delivery, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Ack,
    Nack(Redelivery),
    DeadLetter(DeadLetter),
    Progress,
}

#[derive(Default)]
struct Queue {
    waiting: Mutex<VecDeque<Message>>,
    /// Delivered and not yet settled.
    outstanding: AtomicUsize,
    most_outstanding: AtomicUsize,
    /// Deliveries handed out so far.
    delivered: AtomicUsize,
    /// Ends the stream after this many deliveries.
    deliver_at_most: Option<usize>,
    /// Ends the stream once nothing is waiting or outstanding.
    end_when_drained: bool,
    events: Mutex<Vec<(Option<String>, Event)>>,
    changed: tokio::sync::Notify,
}

/// An in-memory broker: a queue that redelivers what is requeued, and a log of settlements.
#[derive(Clone)]
struct Fake(Arc<Queue>);

impl Fake {
    fn new() -> Self {
        Fake(Arc::new(Queue {
            end_when_drained: true,
            ..Queue::default()
        }))
    }

    fn delivering_at_most(deliveries: usize) -> Self {
        Fake(Arc::new(Queue {
            deliver_at_most: Some(deliveries),
            ..Queue::default()
        }))
    }

    /// A queue that never ends by itself.
    fn endless() -> Self {
        Fake(Arc::new(Queue::default()))
    }

    /// The messages left waiting, for the next worker, which ends after `deliveries` or when
    /// the queue is drained.
    async fn with_limit(&self, deliveries: usize) -> Self {
        // Messages requeued with a delay come back first.
        for _ in 0..500 {
            if self.0.outstanding.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let queue = Queue {
            deliver_at_most: Some(deliveries),
            end_when_drained: true,
            ..Queue::default()
        };
        let moved = std::mem::take(&mut *self.0.waiting.lock().unwrap());
        *queue.waiting.lock().unwrap() = moved;
        Fake(Arc::new(queue))
    }

    fn publish(&self, id: Option<&str>, body: &str) {
        let message = Message::new(id.map(str::to_owned), Bytes::from(body.to_owned()));
        self.0.waiting.lock().unwrap().push_back(message);
        self.0.changed.notify_waiters();
    }

    fn events(&self) -> Vec<(Option<String>, Event)> {
        self.0.events.lock().unwrap().clone()
    }

    fn events_of(&self, id: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|(of, event)| of.as_deref() == Some(id) && *event != Event::Progress)
            .map(|(_, event)| event)
            .collect()
    }

    fn count(&self, wanted: impl Fn(&Event) -> bool) -> usize {
        self.events().iter().filter(|(_, e)| wanted(e)).count()
    }
}

struct FakeDelivery {
    message: Message,
    queue: Arc<Queue>,
}

impl FakeDelivery {
    /// Logs the settlement; a requeued message counts as outstanding until it is back in
    /// the queue, after its delay.
    fn settle(&self, event: Event) {
        let id = self.message.id.clone();
        let requeue = match event {
            Event::Nack(Redelivery::After(delay)) => Some(delay),
            _ => None,
        };
        self.queue.events.lock().unwrap().push((id, event));
        let Some(delay) = requeue else {
            self.queue.outstanding.fetch_sub(1, Ordering::SeqCst);
            self.queue.changed.notify_waiters();
            return;
        };
        let deliveries = self.message.deliveries.unwrap_or(1) + 1;
        let again = self.message.clone().with_deliveries(deliveries);
        let queue = Arc::clone(&self.queue);
        let back = move || {
            queue.waiting.lock().unwrap().push_back(again);
            queue.outstanding.fetch_sub(1, Ordering::SeqCst);
            queue.changed.notify_waiters();
        };
        if delay.is_zero() {
            back();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                back();
            });
        }
    }
}

#[async_trait]
impl Broker for Fake {
    type Delivery = FakeDelivery;

    async fn receive(&mut self) -> Result<Option<FakeDelivery>, BrokerError> {
        let queue = &self.0;
        loop {
            let changed = queue.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if queue
                .deliver_at_most
                .is_some_and(|most| queue.delivered.load(Ordering::SeqCst) >= most)
            {
                return Ok(None);
            }
            if let Some(message) = queue.waiting.lock().unwrap().pop_front() {
                let message = match message.deliveries {
                    Some(_) => message,
                    None => message.with_deliveries(1),
                };
                queue.delivered.fetch_add(1, Ordering::SeqCst);
                let now = queue.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                queue.most_outstanding.fetch_max(now, Ordering::SeqCst);
                return Ok(Some(FakeDelivery {
                    message,
                    queue: Arc::clone(queue),
                }));
            }
            if queue.end_when_drained && queue.outstanding.load(Ordering::SeqCst) == 0 {
                return Ok(None);
            }
            changed.await;
        }
    }
}

#[async_trait]
impl Delivery for FakeDelivery {
    fn message(&self) -> &Message {
        &self.message
    }
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle(Event::Ack);
        Ok(())
    }
    async fn nack(&self, redelivery: Redelivery) -> Result<(), BrokerError> {
        self.settle(Event::Nack(redelivery));
        Ok(())
    }
    async fn dead_letter(&self, reason: &DeadLetter) -> Result<(), BrokerError> {
        self.settle(Event::DeadLetter(reason.clone()));
        Ok(())
    }
    async fn in_progress(&self) -> Result<(), BrokerError> {
        let id = self.message.id.clone();
        self.queue
            .events
            .lock()
            .unwrap()
            .push((id, Event::Progress));
        Ok(())
    }
}

/// Counts handler runs, per message body.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<String>>>);

impl Runs {
    fn record(&self, message: &Message) {
        let body = String::from_utf8_lossy(&message.body).into_owned();
        self.0.lock().unwrap().push(body);
    }
    fn total(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn of(&self, body: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|b| *b == body).count()
    }
}

fn counting(runs: &Runs) -> impl Fn(Message) -> std::future::Ready<Result<(), Error>> + use<> {
    let runs = runs.clone();
    move |message: Message| {
        runs.record(&message);
        std::future::ready(Ok(()))
    }
}

fn quick() -> idempotent_core::consumer::ConsumerBuilder {
    Consumer::builder("tests.consumer").retry_delay(Duration::from_millis(5))
}

/// Bounds every test: a consumer that never settles would otherwise hang the suite.
async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the consumer did not finish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_processed_message_is_acknowledged_without_running() {
    let broker = Fake::new();
    broker.publish(Some("m-1"), "a");
    broker.publish(Some("m-1"), "a");
    broker.publish(Some("m-2"), "b");
    let runs = Runs::default();
    let consumer = quick()
        .concurrency(1)
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!((runs.of("a"), runs.of("b")), (1, 1));
    assert_eq!(broker.events_of("m-1"), [Event::Ack, Event::Ack]);
    assert_eq!(broker.events_of("m-2"), [Event::Ack]);
    assert_eq!(
        (stats.processed, stats.duplicates, stats.received),
        (2, 1, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_message_in_flight_is_requeued_and_acknowledged_once_recorded() {
    let broker = Fake::new();
    broker.publish(Some("m-1"), "slow");
    broker.publish(Some("m-1"), "slow");
    let runs = Runs::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let (runs, release, broker) = (runs.clone(), Arc::clone(&release), broker.clone());
        move |message: Message| {
            let (runs, release, broker) = (runs.clone(), Arc::clone(&release), broker.clone());
            async move {
                runs.record(&message);
                // Finish only once the duplicate has been requeued.
                while broker.count(|e| matches!(e, Event::Nack(_))) == 0 {
                    tokio::time::timeout(Duration::from_millis(5), release.notified())
                        .await
                        .ok();
                }
                Ok::<(), Error>(())
            }
        }
    };
    let consumer = quick()
        .concurrency(2)
        .max_in_flight_delay(Duration::from_millis(10))
        .build(MemoryStore::new(), broker.clone(), handler)
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 1);
    let events = broker.events_of("m-1");
    // The duplicate was requeued (not acknowledged) while the first ran, with a delay no
    // longer than the configured cap; then both were acknowledged.
    assert!(
        matches!(events[0], Event::Nack(Redelivery::After(delay)) if delay <= Duration::from_millis(10)),
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| **e == Event::Ack).count(), 2);
    assert!(
        events
            .iter()
            .all(|e| *e == Event::Ack || matches!(e, Event::Nack(Redelivery::After(_))))
    );
    assert!(
        stats.in_flight >= 1 && stats.processed == 1 && stats.duplicates == 1,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_releases_the_claim_and_requeues() {
    let broker = Fake::new();
    broker.publish(Some("m-1"), "flaky");
    let attempts = Arc::new(AtomicUsize::new(0));
    let handler = {
        let attempts = Arc::clone(&attempts);
        move |_: Message| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt == 1 {
                    Err("the downstream service is down")
                } else {
                    Ok(())
                }
            }
        }
    };
    let consumer = quick()
        .retry_delay(Duration::from_millis(7))
        .build(MemoryStore::new(), broker.clone(), handler)
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    // Released: the redelivery ran the handler at once rather than waiting out a lease.
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(
        broker.events_of("m-1"),
        [
            Event::Nack(Redelivery::After(Duration::from_millis(7))),
            Event::Ack
        ]
    );
    assert_eq!((stats.failed, stats.processed), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_attempt() {
    let broker = Fake::new();
    broker.publish(Some("m-1"), "boom");
    let attempts = Arc::new(AtomicUsize::new(0));
    let handler = {
        let attempts = Arc::clone(&attempts);
        move |_: Message| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                assert!(attempt > 1, "first attempt panics");
                Ok::<(), Error>(())
            }
        }
    };
    let consumer = quick()
        .build(MemoryStore::new(), broker.clone(), handler)
        .unwrap();
    bounded(consumer.run()).await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let events = broker.events_of("m-1");
    assert!(
        matches!(events[..], [Event::Nack(Redelivery::After(_)), Event::Ack]),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_failures_counted_across_workers() {
    let store = Arc::new(MemoryStore::new());
    let runs = Runs::default();
    let failing = {
        let runs = runs.clone();
        move |message: Message| {
            runs.record(&message);
            async { Err::<(), _>("cannot parse the order") }
        }
    };
    let dead = Arc::new(Mutex::new(Vec::new()));
    let on_dead = {
        let dead = Arc::clone(&dead);
        move |message: &Message, reason: &DeadLetter| {
            dead.lock()
                .unwrap()
                .push((message.id.clone(), reason.clone()));
        }
    };

    // The first worker fails the message once and stops (a restart); the count lives in the
    // store, so the second worker dead-letters it at the third failure, not the fifth.
    let first = Fake::delivering_at_most(1);
    first.publish(Some("poison"), "bad");
    let consumer = quick()
        .max_attempts(3)
        .build(Arc::clone(&store), first.clone(), failing.clone())
        .unwrap();
    bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 1);

    let second = first.with_limit(10).await;
    let consumer = quick()
        .max_attempts(3)
        .on_dead_letter(on_dead)
        .build(Arc::clone(&store), second.clone(), failing)
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 3);
    let reason = DeadLetter::Poison {
        attempts: 3,
        last_error: "cannot parse the order".to_owned(),
    };
    assert_eq!(
        second.events_of("poison"),
        [
            Event::Nack(Redelivery::After(Duration::from_millis(5))),
            Event::DeadLetter(reason.clone())
        ]
    );
    assert_eq!(*dead.lock().unwrap(), [(Some("poison".to_owned()), reason)]);
    assert_eq!(stats.dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_key_is_dead_lettered_by_default_never_run() {
    let broker = Fake::new();
    broker.publish(None, "anonymous");
    let runs = Runs::default();
    let consumer = quick()
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 0);
    assert_eq!(
        broker.events(),
        [(None, Event::DeadLetter(DeadLetter::MissingKey))]
    );
    assert_eq!(stats.dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_key_can_be_rejected_or_processed_unprotected() {
    let broker = Fake::new();
    broker.publish(None, "anonymous");
    let runs = Runs::default();
    let consumer = quick()
        .on_missing_key(MissingKey::Reject)
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 0);
    assert_eq!(broker.events(), [(None, Event::Nack(Redelivery::Never))]);
    assert_eq!(stats.rejected, 1);

    let broker = Fake::new();
    broker.publish(None, "anonymous");
    broker.publish(None, "anonymous");
    let consumer = quick()
        .on_missing_key(MissingKey::ProcessUnprotected)
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    // Unprotected means exactly that: the duplicate ran too.
    assert_eq!(runs.total(), 2);
    assert_eq!(broker.count(|e| *e == Event::Ack), 2);
    assert_eq!(stats.unprotected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_json_field_recognise_duplicates_published_under_new_ids() {
    let broker = Fake::new();
    broker.publish(Some("publish-1"), r#"{"order_id": "o-7", "qty": 1}"#);
    broker.publish(Some("publish-2"), r#"{"order_id": "o-7", "qty": 1}"#);
    broker.publish(Some("publish-3"), r#"{"qty": 1}"#);
    let runs = Runs::default();
    let consumer = quick()
        .key_from_json_field("order_id")
        .concurrency(1)
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 1);
    assert_eq!(broker.events_of("publish-2"), [Event::Ack]);
    assert_eq!(
        broker.events_of("publish-3"),
        [Event::DeadLetter(DeadLetter::MissingKey)]
    );
    assert_eq!(
        (stats.processed, stats.duplicates, stats.dead_lettered),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_body_is_dead_lettered_not_acknowledged() {
    let broker = Fake::new();
    broker.publish(Some("m-1"), "first body");
    broker.publish(Some("m-1"), "another body");
    let runs = Runs::default();
    let consumer = quick()
        .concurrency(1)
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 1);
    assert_eq!(
        broker.events_of("m-1"),
        [Event::Ack, Event::DeadLetter(DeadLetter::PayloadMismatch)]
    );

    // Without the body in the fingerprint, the key alone decides.
    let broker = Fake::new();
    broker.publish(Some("m-1"), "first body");
    broker.publish(Some("m-1"), "another body");
    let consumer = quick()
        .concurrency(1)
        .fingerprint_body(false)
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    bounded(consumer.run()).await.unwrap();
    assert_eq!(broker.events_of("m-1"), [Event::Ack, Event::Ack]);
}

/// A store whose operations fail while `down` is set, as during an outage.
struct Flaky {
    store: MemoryStore,
    claims_down: AtomicBool,
    completes_down: AtomicBool,
}

#[async_trait]
impl IdempotencyStore for Flaky {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        if self.claims_down.load(Ordering::SeqCst) {
            return Err(Error::store("flaky", "connection refused"));
        }
        self.store.claim(request).await
    }
    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        if self.completes_down.load(Ordering::SeqCst) {
            return Err(Error::store("flaky", "connection reset"));
        }
        self.store.complete(lease, payload, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.store.release(lease).await
    }
    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.store.extend(lease, lease_for).await
    }
    fn release_in_background(&self, lease: Lease) {
        self.store.release_in_background(lease);
    }
    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        self.store.abandon_claim_in_background(request);
    }
    async fn purge_expired(&self) -> Result<u64, Error> {
        self.store.purge_expired().await
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.store.inspect(scope, key).await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.store.forget(scope, key, mode).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_that_the_store_did_not_record() {
    let store = Arc::new(Flaky {
        store: MemoryStore::new(),
        claims_down: AtomicBool::new(true),
        completes_down: AtomicBool::new(false),
    });
    // Claims fail: the handler does not run, the message is requeued.
    let broker = Fake::delivering_at_most(1);
    broker.publish(Some("m-1"), "order");
    let runs = Runs::default();
    let options = CallOptions::new().lease(Duration::from_secs(1));
    let consumer = quick()
        .call_options(options)
        .build(Arc::clone(&store), broker.clone(), counting(&runs))
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 0);
    assert_eq!(
        broker.events_of("m-1"),
        [Event::Nack(Redelivery::After(Duration::from_millis(5)))]
    );
    assert_eq!(stats.store_errors, 1);

    // The claim works but recording the result fails: the effect happened, the message is
    // still not acknowledged. Its claim stays until the lease ends (the engine cannot tell
    // whether the completion landed), then a redelivery takes it over and is acknowledged.
    store.claims_down.store(false, Ordering::SeqCst);
    store.completes_down.store(true, Ordering::SeqCst);
    let broker = broker.with_limit(1).await;
    let consumer = quick()
        .call_options(options)
        .build(Arc::clone(&store), broker.clone(), counting(&runs))
        .unwrap();
    bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 1);
    assert_eq!(broker.count(|e| *e == Event::Ack), 0);

    store.completes_down.store(false, Ordering::SeqCst);
    let broker = broker.with_limit(100).await;
    let consumer = quick()
        .call_options(options)
        .max_in_flight_delay(Duration::from_millis(50))
        .build(Arc::clone(&store), broker.clone(), counting(&runs))
        .unwrap();
    bounded(consumer.run()).await.unwrap();
    let events = broker.events_of("m-1");
    assert_eq!(events.last(), Some(&Event::Ack), "{events:?}");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| matches!(e, Event::Nack(_)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_messages_in_flight() {
    let broker = Fake::new();
    for i in 0..24 {
        broker.publish(Some(&format!("m-{i}")), &format!("{i}"));
    }
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        move |_: Message| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), Error>(())
            }
        }
    };
    let consumer = quick()
        .concurrency(4)
        .build(MemoryStore::new(), broker.clone(), handler)
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(stats.processed, 24);
    assert_eq!(most.load(Ordering::SeqCst), 4, "four handlers at once");
    // Backpressure: never more than four messages taken from the broker and unsettled.
    assert_eq!(broker.0.most_outstanding.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_messages_finish_and_receives_no_more() {
    let broker = Fake::endless();
    for i in 0..6 {
        broker.publish(Some(&format!("m-{i}")), &format!("{i}"));
    }
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = {
        let started = Arc::clone(&started);
        move |_: Message| {
            started.add_permits(1);
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<(), Error>(())
            }
        }
    };
    let consumer = quick()
        .concurrency(2)
        .build(MemoryStore::new(), broker.clone(), handler)
        .unwrap();
    let shutdown = {
        let started = Arc::clone(&started);
        async move {
            let _ = started.acquire_many(2).await;
        }
    };
    let stats = bounded(consumer.run_until(shutdown)).await.unwrap();
    assert_eq!(stats.processed, 2);
    assert_eq!(broker.count(|e| *e == Event::Ack), 2);
    assert_eq!(broker.0.delivered.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_grace_releases_and_requeues_never_acknowledges() {
    let store = Arc::new(MemoryStore::new());
    let broker = Fake::endless();
    broker.publish(Some("m-1"), "stuck");
    let started = Arc::new(tokio::sync::Notify::new());
    let stuck = {
        let started = Arc::clone(&started);
        move |_: Message| {
            started.notify_one();
            std::future::pending::<Result<(), Error>>()
        }
    };
    let consumer = quick()
        .shutdown_grace(Duration::from_millis(100))
        .build(Arc::clone(&store), broker.clone(), stuck)
        .unwrap();
    let stats = bounded(consumer.run_until(started.notified()))
        .await
        .unwrap();
    assert_eq!(stats.cancelled, 1);
    assert_eq!(
        broker.events_of("m-1"),
        [Event::Nack(Redelivery::After(Duration::ZERO))]
    );

    // The claim was released (in the background, as the call was dropped): the next worker
    // runs the message at once instead of waiting out the lease.
    let runs = Runs::default();
    let next = broker.with_limit(50).await;
    let consumer = quick()
        .max_in_flight_delay(Duration::from_millis(10))
        .build(Arc::clone(&store), next.clone(), counting(&runs))
        .unwrap();
    let started = tokio::time::Instant::now();
    bounded(consumer.run()).await.unwrap();
    assert_eq!(runs.total(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_extend_the_broker_deadline_while_the_handler_runs() {
    let broker = Fake::new();
    broker.publish(Some("m-1"), "long");
    let handler = |_: Message| async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        Ok::<(), Error>(())
    };
    let consumer = quick()
        .call_options(CallOptions::new().lease(Duration::from_secs(1)))
        .build(MemoryStore::new(), broker.clone(), handler)
        .unwrap();
    bounded(consumer.run()).await.unwrap();
    // One beat every lease / 3 (333 ms): four in 1.5 s, at least two on a loaded machine.
    let beats = broker.count(|e| *e == Event::Progress);
    assert!(beats >= 2, "{beats} heartbeats reached the broker");
    assert_eq!(broker.events_of("m-1"), [Event::Ack]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_stops_when_asked_to() {
    let broker = Fake::endless();
    broker.publish(Some("m-1"), "only");
    let runs = Runs::default();
    let consumer = quick()
        .stop_when_idle(Duration::from_millis(100))
        .build(MemoryStore::new(), broker.clone(), counting(&runs))
        .unwrap();
    let stats = bounded(consumer.run()).await.unwrap();
    assert_eq!(stats.processed, 1);
}

#[tokio::test]
async fn a_lease_the_heartbeat_cannot_hold_is_refused_when_building() {
    let built = quick()
        .call_options(CallOptions::new().lease(Duration::from_millis(10)))
        .build(MemoryStore::new(), Fake::new(), counting(&Runs::default()));
    assert!(matches!(built, Err(Error::LeaseTooShort { .. })));
}
