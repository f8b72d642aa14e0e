//! Process each queue message's effect once, on brokers that deliver at least once.
//!
//! ```
//! use idempotent_core::consumer::{Broker, Consumer, Message};
//! use idempotent_core::MemoryStore;
//!
//! async fn ship_orders(broker: impl Broker) -> Result<(), Box<dyn std::error::Error>> {
//!     let consumer = Consumer::builder("orders.ship")
//!         .key_from_json_field("order_id") // or the broker's message id, the default
//!         .concurrency(32)
//!         .max_attempts(5)
//!         .build(MemoryStore::new(), broker, |message: Message| async move {
//!             println!("shipping {}", String::from_utf8_lossy(&message.body));
//!             Ok::<(), std::io::Error>(())
//!         })?;
//!     let stats = consumer.run().await?;
//!     println!("{} shipped, {} duplicates dropped", stats.processed, stats.duplicates);
//!     Ok(())
//! }
//! ```
//!
//! Brokers redeliver: a worker that crashes before acknowledging, a publisher that retries, a
//! rebalance. A [`Consumer`] takes each message from a [`Broker`], derives its idempotency key
//! (the message id, or a function of the message), and runs the handler as a
//! [`Call`](crate::Call) on an [`IdempotencyStore`](crate::IdempotencyStore), the same engine
//! `#[idempotent]` uses. The delivery is settled from what the call returned:
//!
//! | the call | the delivery |
//! |---|---|
//! | ran the handler, result recorded | acknowledged, only now |
//! | the message was processed before (a duplicate) | acknowledged; the handler does not run |
//! | another worker holds the message (in flight) | requeued, not acknowledged: it comes back and is recognised once the other worker has recorded it |
//! | the handler failed | claim released, failure counted in the store, requeued; dead-lettered after [`max_attempts`](ConsumerBuilder::max_attempts) |
//! | the store failed, or the claim was lost | requeued: never acknowledged without a durable record |
//! | the key was used before with another body | dead-lettered ([`DeadLetter::PayloadMismatch`]) |
//! | the message has no key | the [`MissingKey`] choice: reject, dead-letter (the default), or process unprotected with a warning |
//!
//! A worker that crashes mid-message leaves its claim to expire with its lease (the
//! [`CallOptions`](crate::CallOptions) of [`ConsumerBuilder::call_options`]); the broker
//! redelivers the unacknowledged message and the next worker takes it over. While a handler
//! runs, each heartbeat of its claim also calls [`Delivery::in_progress`], so a broker with an
//! acknowledgement deadline (JetStream's `ack_wait`) does not redeliver it meanwhile.
//!
//! # Exactly-once effects: the transactional inbox
//!
//! With [`Call`](crate::Call), the effect and the record are two writes: a worker that dies
//! between them runs the handler again after its lease. With PostgreSQL,
//! [`ConsumerBuilder::transactional`] gives the [`TransactionalHandler`] the transaction that
//! also records the message, so database effects commit together with the record, exactly
//! once, and the acknowledgement follows the commit.
//!
//! # Throughput, backpressure and shutdown
//!
//! At most [`concurrency`](ConsumerBuilder::concurrency) messages are in flight; the consumer
//! receives the next one only when a slot frees, so set the broker's prefetch at least as high.
//! [`Consumer::run_until`] stops receiving when its shutdown future completes, lets in-flight
//! messages finish for the [grace period](ConsumerBuilder::shutdown_grace), then cancels the
//! rest: their claims are released (a transaction rolled back) and they are requeued. No
//! message is acknowledged whose call did not return `Ok`.
//!
//! With the tiered store (`TieredStore`, Redis in front of PostgreSQL), duplicates
//! of processed messages are recognised from Redis without a PostgreSQL round trip.
//!
//! # Adapters
//!
//! - `rabbitmq` (feature `rabbitmq`): RabbitMQ with `lapin`.
//! - `nats` (feature `nats`): NATS JetStream pull consumers with `async-nats`.
//!
//! Another broker needs an implementation of [`Broker`] and [`Delivery`].

mod broker;
mod builder;
mod calls;
mod failures;
mod handler;
mod message;
#[cfg(feature = "nats")]
pub mod nats;
mod process;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
mod run;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use broker::{Broker, BrokerError, DeadLetter, Delivery, Redelivery};
pub use builder::{ConsumerBuilder, MissingKey};
pub use handler::Handler;
#[cfg(feature = "postgres")]
pub use handler::TransactionalHandler;
pub use message::Message;
pub use stats::{Stats, StatsSnapshot};

use process::Shared;

/// Runs a handler once per message of a [`Broker`]; see the [module docs](self).
pub struct Consumer<B> {
    broker: B,
    shared: Arc<Shared>,
    concurrency: usize,
    shutdown_grace: Duration,
    idle: Option<Duration>,
}

impl<B> std::fmt::Debug for Consumer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("scope", &self.shared.settings.scope)
            .field("concurrency", &self.concurrency)
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl Consumer<()> {
    /// Starts configuring a consumer whose messages' keys live in `scope` (like a function's
    /// scope: two consumers with one scope share their records, so a message processed
    /// by one is a duplicate to the other).
    pub fn builder(scope: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder::new(scope.into())
    }
}

impl<B: Broker> Consumer<B> {
    /// Live counters, readable while the consumer runs.
    pub fn stats(&self) -> Stats {
        self.shared.stats.clone()
    }

    /// Runs until the broker ends the stream or, with
    /// [`stop_when_idle`](ConsumerBuilder::stop_when_idle), the queue has been quiet long
    /// enough. Returns the counters, or the broker's error once in-flight messages are
    /// settled.
    pub async fn run(self) -> Result<StatsSnapshot, BrokerError> {
        self.run_loop(std::future::pending()).await
    }

    /// Like [`run`](Self::run), and also stops (gracefully, see the [module docs](self)) when
    /// `shutdown` completes, such as on a signal.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<StatsSnapshot, BrokerError> {
        self.run_loop(shutdown).await
    }
}
