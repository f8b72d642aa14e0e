//! RabbitMQ (feature `rabbitmq`): a [`Broker`] that consumes one queue with `lapin`.
//!
//! ```no_run
//! use idempotent_core::consumer::rabbitmq::RabbitMq;
//! use idempotent_core::consumer::{Consumer, Message};
//! use idempotent_core::MemoryStore;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new(); // or a shared one: Redis, PostgreSQL, tiered
//! let broker = RabbitMq::builder("amqp://guest:guest@127.0.0.1:5672/%2f", "orders")
//!     .prefetch(32)
//!     .dead_letter_queue("orders.dead")
//!     .connect()
//!     .await?;
//! let stats = Consumer::builder("orders.worker")
//!     .concurrency(32)
//!     .build(store, broker, |message: Message| async move {
//!         println!("order {}", String::from_utf8_lossy(&message.body));
//!         Ok::<(), std::io::Error>(())
//!     })?
//!     .run()
//!     .await?;
//! println!("{} processed, {} duplicates", stats.processed, stats.duplicates);
//! # Ok(())
//! # }
//! ```
//!
//! - The key is the AMQP `message_id` property by default.
//! - Acknowledgements are manual; the channel's prefetch (`basic.qos`) bounds what the broker
//!   pushes ahead of the consumer, so set it at least to the consumer's concurrency.
//! - A requeue with a delay ([`Redelivery::After`]) holds the message for the delay, then
//!   negatively acknowledges it with `requeue = true`: RabbitMQ cannot delay a redelivery.
//! - [`Redelivery::Never`] rejects without requeue: the queue's own dead-letter exchange gets
//!   the message if the queue has one.
//! - With [`dead_letter_queue`](RabbitMqBuilder::dead_letter_queue), a dead-lettered message is
//!   published there (properties kept, reason in the `x-idempotent-dead-letter` and
//!   `x-idempotent-dead-letter-reason` headers), confirmed by the broker, and only then
//!   acknowledged; without it, it is rejected as with [`Redelivery::Never`].
//! - RabbitMQ has no acknowledgement deadline to extend (its `consumer_timeout` is a safety
//!   net of 30 minutes by default), so [`Delivery::in_progress`] does nothing.
//! - When the connection is lost, [`receive`](Broker::receive) reconnects (for at most
//!   [`reconnect_for`](RabbitMqBuilder::reconnect_for)); the messages that were in flight are
//!   redelivered by the broker, and their records make them duplicates.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::time::Instant;

use super::{Broker, BrokerError, DeadLetter, Delivery, Message, Redelivery};

const BROKER: &str = "rabbitmq";

fn broker_error(error: impl Into<crate::BoxError>) -> BrokerError {
    BrokerError::new(BROKER, error)
}

/// Configures a [`RabbitMq`] broker; made with [`RabbitMq::builder`].
#[derive(Debug, Clone)]
pub struct RabbitMqBuilder {
    url: String,
    queue: String,
    prefetch: u16,
    declare: bool,
    dead_letter_queue: Option<String>,
    consumer_tag: String,
    reconnect_for: Duration,
}

impl RabbitMqBuilder {
    /// How many unacknowledged messages the broker pushes to this consumer (`basic.qos`).
    /// Default 32; at least 1.
    pub fn prefetch(mut self, messages: u16) -> Self {
        self.prefetch = messages.max(1);
        self
    }

    /// Whether to declare the queue (durable, no arguments) before consuming. Default `true`;
    /// turn it off for a queue declared elsewhere with arguments of its own.
    pub fn declare(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// Where dead-lettered messages are published (through the default exchange); declared
    /// durable when [`declare`](Self::declare) is on.
    pub fn dead_letter_queue(mut self, queue: impl Into<String>) -> Self {
        self.dead_letter_queue = Some(queue.into());
        self
    }

    /// The consumer tag; default empty (the broker picks one).
    pub fn consumer_tag(mut self, tag: impl Into<String>) -> Self {
        self.consumer_tag = tag.into();
        self
    }

    /// How long [`receive`](Broker::receive) keeps trying to reconnect after the connection
    /// is lost, before it returns the error. Default 60 s.
    pub fn reconnect_for(mut self, patience: Duration) -> Self {
        self.reconnect_for = patience;
        self
    }

    /// Connects, opens a channel, and starts consuming.
    pub async fn connect(self) -> Result<RabbitMq, BrokerError> {
        let settings = Arc::new(self);
        let (connection, channel, consumer) = open(&settings).await.map_err(broker_error)?;
        Ok(RabbitMq {
            settings,
            connection,
            channel,
            consumer,
        })
    }
}

/// A RabbitMQ queue as a [`Broker`]; see the [module docs](self).
pub struct RabbitMq {
    settings: Arc<RabbitMqBuilder>,
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq")
            .field("queue", &self.settings.queue)
            .field("prefetch", &self.settings.prefetch)
            .finish_non_exhaustive()
    }
}

impl RabbitMq {
    /// Starts configuring a consumer of `queue` on the broker at `url`
    /// (`amqp://user:password@host:port/vhost`, the default vhost written `%2f`).
    pub fn builder(url: impl Into<String>, queue: impl Into<String>) -> RabbitMqBuilder {
        RabbitMqBuilder {
            url: url.into(),
            queue: queue.into(),
            prefetch: 32,
            declare: true,
            dead_letter_queue: None,
            consumer_tag: String::new(),
            reconnect_for: Duration::from_secs(60),
        }
    }

    /// Closes the connection. Unacknowledged messages go back to the queue.
    pub async fn close(self) -> Result<(), BrokerError> {
        self.connection
            .close(200, "bye".into())
            .await
            .map_err(broker_error)
    }

    /// Reconnects until it works or `reconnect_for` has passed.
    async fn reconnect(&mut self, cause: String) -> Result<(), BrokerError> {
        tracing::warn!(queue = %self.settings.queue, %cause, "RabbitMQ consumer lost; reconnecting");
        let deadline = Instant::now() + self.settings.reconnect_for;
        let mut pause = Duration::from_millis(100);
        loop {
            match open(&self.settings).await {
                Ok((connection, channel, consumer)) => {
                    self.connection = connection;
                    self.channel = channel;
                    self.consumer = consumer;
                    tracing::info!(queue = %self.settings.queue, "RabbitMQ consumer reconnected");
                    return Ok(());
                }
                Err(error) if Instant::now() + pause >= deadline => {
                    return Err(broker_error(format!(
                        "{cause}; reconnecting failed for {:?}: {error}",
                        self.settings.reconnect_for
                    )));
                }
                Err(error) => {
                    tracing::debug!(%error, "RabbitMQ reconnect failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

async fn open(
    settings: &RabbitMqBuilder,
) -> Result<(Connection, Channel, lapin::Consumer), lapin::Error> {
    let connection = Connection::connect(&settings.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    // Confirms, so a dead-lettered message is acknowledged only once the broker has it.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    if settings.declare {
        for queue in std::iter::once(&settings.queue).chain(&settings.dead_letter_queue) {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    let consumer = channel
        .basic_consume(
            settings.queue.as_str().into(),
            settings.consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, consumer))
}

#[async_trait]
impl Broker for RabbitMq {
    type Delivery = RabbitMqDelivery;

    async fn receive(&mut self) -> Result<Option<RabbitMqDelivery>, BrokerError> {
        loop {
            match self.consumer.next().await {
                Some(Ok(delivery)) => {
                    let id = delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|id| id.as_str().to_owned());
                    let message =
                        Message::new(id, delivery.data).with_redelivered(delivery.redelivered);
                    return Ok(Some(RabbitMqDelivery {
                        message,
                        acker: delivery.acker,
                        properties: delivery.properties,
                        channel: self.channel.clone(),
                        dead_letter_queue: self.settings.dead_letter_queue.clone(),
                    }));
                }
                Some(Err(error)) => self.reconnect(error.to_string()).await?,
                None if self.channel.status().connected() => return Ok(None),
                None => self.reconnect("the consumer ended".to_owned()).await?,
            }
        }
    }
}

/// One message received from RabbitMQ.
pub struct RabbitMqDelivery {
    message: Message,
    acker: lapin::Acker,
    properties: BasicProperties,
    channel: Channel,
    dead_letter_queue: Option<String>,
}

impl std::fmt::Debug for RabbitMqDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqDelivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl RabbitMqDelivery {
    /// The message's AMQP properties (headers, content type, correlation id, ...).
    pub fn properties(&self) -> &BasicProperties {
        &self.properties
    }

    async fn reject(&self) -> Result<(), BrokerError> {
        self.acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map(drop)
            .map_err(broker_error)
    }
}

#[async_trait]
impl Delivery for RabbitMqDelivery {
    fn message(&self) -> &Message {
        &self.message
    }

    async fn ack(&self) -> Result<(), BrokerError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(broker_error)
    }

    async fn nack(&self, redelivery: Redelivery) -> Result<(), BrokerError> {
        match redelivery {
            Redelivery::After(delay) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let options = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                self.acker
                    .nack(options)
                    .await
                    .map(drop)
                    .map_err(broker_error)
            }
            Redelivery::Never => self.reject().await,
        }
    }

    async fn dead_letter(&self, reason: &DeadLetter) -> Result<(), BrokerError> {
        let Some(queue) = &self.dead_letter_queue else {
            return self.reject().await;
        };
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        headers.insert(
            "x-idempotent-dead-letter".into(),
            AMQPValue::LongString(reason.kind().into()),
        );
        headers.insert(
            "x-idempotent-dead-letter-reason".into(),
            AMQPValue::LongString(reason.to_string().into()),
        );
        let properties = self
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let confirmation = self
            .channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &self.message.body,
                properties,
            )
            .await
            .map_err(broker_error)?
            .await
            .map_err(broker_error)?;
        if confirmation.is_nack() {
            return Err(broker_error(format!(
                "the broker refused the dead-lettered message on `{queue}`"
            )));
        }
        self.ack().await
    }
}
