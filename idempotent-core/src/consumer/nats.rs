//! NATS JetStream (feature `nats`): a [`Broker`] over a durable pull consumer with
//! `async-nats`.
//!
//! ```no_run
//! use idempotent_core::consumer::nats::JetStream;
//! use idempotent_core::consumer::{Consumer, Message};
//! use idempotent_core::MemoryStore;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = JetStream::builder("nats://127.0.0.1:4222", "ORDERS", "orders")
//!     .durable("orders-worker")
//!     .prefetch(32)
//!     .connect()
//!     .await?;
//! let stats = Consumer::builder("orders.worker")
//!     .key_from_json_field("order_id")
//!     .concurrency(32)
//!     .build(MemoryStore::new(), broker, |message: Message| async move {
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
//! - The key is the `Nats-Msg-Id` header by default. JetStream itself drops a publish whose
//!   `Nats-Msg-Id` it saw within the stream's duplicate window (two minutes by default), so
//!   what reaches the consumer twice under one id is a redelivery: a message whose
//!   acknowledgement did not arrive in `ack_wait`, or that was negatively acknowledged. A
//!   publisher that retries under a new id, or beyond the window, is caught by a key from the
//!   body ([`key_from_json_field`](super::ConsumerBuilder::key_from_json_field)).
//! - The stream is created if it does not exist (file storage, on the subject), and so is the
//!   durable consumer (explicit acks, [`ack_wait`](JetStreamBuilder::ack_wait),
//!   `max_ack_pending` = [`prefetch`](JetStreamBuilder::prefetch)). Workers that use the same
//!   durable name share its messages.
//! - A requeue is a `NAK` with the delay: JetStream redelivers after it. [`Redelivery::Never`]
//!   is a `TERM`.
//! - Every heartbeat of a message's claim sends `+WPI` ([`Delivery::in_progress`]), which
//!   restarts the message's `ack_wait`, so a handler longer than `ack_wait` is not redelivered
//!   meanwhile.
//! - With [`dead_letter_subject`](JetStreamBuilder::dead_letter_subject), a dead-lettered
//!   message is published there (headers kept, reason in `Idempotent-Dead-Letter` and
//!   `Idempotent-Dead-Letter-Reason`) and must be acknowledged by a stream on that subject;
//!   only then is the original terminated. Without it, it is terminated.
//! - The client reconnects by itself; [`receive`](Broker::receive) resumes pulling and gives
//!   up after [`reconnect_for`](JetStreamBuilder::reconnect_for).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Broker, BrokerError, DeadLetter, Delivery, Message, Redelivery};

const BROKER: &str = "nats";
const MESSAGE_ID: &str = "Nats-Msg-Id";

fn broker_error(error: impl Into<crate::BoxError>) -> BrokerError {
    BrokerError::new(BROKER, error)
}

/// Configures a [`JetStream`] broker; made with [`JetStream::builder`].
#[derive(Debug, Clone)]
pub struct JetStreamBuilder {
    url: String,
    stream: String,
    subject: String,
    durable: String,
    prefetch: u16,
    ack_wait: Duration,
    dead_letter_subject: Option<String>,
    reconnect_for: Duration,
}

impl JetStreamBuilder {
    /// The durable consumer's name; default: the stream's name followed by `-consumer`.
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.durable = name.into();
        self
    }

    /// How many unacknowledged messages the server hands this consumer (`max_ack_pending`,
    /// shared by every worker on the durable consumer). Default 32; at least 1.
    pub fn prefetch(mut self, messages: u16) -> Self {
        self.prefetch = messages.max(1);
        self
    }

    /// How long the server waits for an acknowledgement (or a heartbeat's `+WPI`) before it
    /// redelivers. Default 30 s; the consumer's lease / 3 must be shorter, so the
    /// heartbeat arrives in time.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Where dead-lettered messages are published; a stream must capture the subject.
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    /// How long [`receive`](Broker::receive) keeps trying while the server is unreachable,
    /// before it returns the error. Default 60 s.
    pub fn reconnect_for(mut self, patience: Duration) -> Self {
        self.reconnect_for = patience;
        self
    }

    /// Connects, creates the stream and the durable consumer if missing, and starts pulling.
    pub async fn connect(self) -> Result<JetStream, BrokerError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(&self.url);
        let client = tokio::time::timeout(self.reconnect_for, client)
            .await
            .map_err(|_| broker_error(format!("no answer from {}", self.url)))?
            .map_err(broker_error)?;
        let context = jetstream::new(client);
        let stream = context
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(broker_error)?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &self.durable,
                pull::Config {
                    durable_name: Some(self.durable.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: i64::from(self.prefetch),
                    filter_subject: self.subject.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(broker_error)?;
        let messages = pull_stream(&consumer, self.prefetch).await?;
        Ok(JetStream {
            settings: self,
            context,
            consumer,
            messages,
        })
    }
}

async fn pull_stream(consumer: &PullConsumer, prefetch: u16) -> Result<pull::Stream, BrokerError> {
    consumer
        .stream()
        .max_messages_per_batch(usize::from(prefetch))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(broker_error)
}

/// A JetStream durable pull consumer as a [`Broker`]; see the [module docs](self).
pub struct JetStream {
    settings: JetStreamBuilder,
    context: jetstream::Context,
    consumer: PullConsumer,
    messages: pull::Stream,
}

impl std::fmt::Debug for JetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream")
            .field("stream", &self.settings.stream)
            .field("subject", &self.settings.subject)
            .field("durable", &self.settings.durable)
            .finish_non_exhaustive()
    }
}

impl JetStream {
    /// Starts configuring a consumer of `subject`, kept in `stream`, on the server at `url`.
    pub fn builder(
        url: impl Into<String>,
        stream: impl Into<String>,
        subject: impl Into<String>,
    ) -> JetStreamBuilder {
        let stream = stream.into();
        JetStreamBuilder {
            url: url.into(),
            durable: format!("{stream}-consumer"),
            stream,
            subject: subject.into(),
            prefetch: 32,
            ack_wait: Duration::from_secs(30),
            dead_letter_subject: None,
            reconnect_for: Duration::from_secs(60),
        }
    }

    /// Pulls again until it works or `reconnect_for` has passed since `since`.
    async fn resume(&mut self, since: Instant, cause: String) -> Result<(), BrokerError> {
        let deadline = since + self.settings.reconnect_for;
        let mut pause = Duration::from_millis(100);
        loop {
            if Instant::now() >= deadline {
                return Err(broker_error(format!(
                    "{cause}; no messages for {:?}",
                    self.settings.reconnect_for
                )));
            }
            tokio::time::sleep(pause).await;
            match pull_stream(&self.consumer, self.settings.prefetch).await {
                Ok(messages) => {
                    self.messages = messages;
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(%error, "JetStream pull failed; trying again");
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[async_trait]
impl Broker for JetStream {
    type Delivery = JetStreamDelivery;

    async fn receive(&mut self) -> Result<Option<JetStreamDelivery>, BrokerError> {
        let mut failing_since = None;
        loop {
            let failure = match self.messages.next().await {
                Some(Ok(message)) => return Ok(Some(self.delivery(message))),
                Some(Err(error)) => error.to_string(),
                None => "the pull stream ended".to_owned(),
            };
            let since = *failing_since.get_or_insert_with(Instant::now);
            tracing::warn!(stream = %self.settings.stream, error = %failure, "JetStream pull failed; resuming");
            self.resume(since, failure).await?;
        }
    }
}

impl JetStream {
    fn delivery(&self, message: jetstream::Message) -> JetStreamDelivery {
        let id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        let deliveries = message
            .info()
            .ok()
            .and_then(|info| u64::try_from(info.delivered).ok());
        let mut view = Message::new(id, message.payload.clone());
        if let Some(deliveries) = deliveries {
            view = view.with_deliveries(deliveries);
        }
        JetStreamDelivery {
            view,
            message,
            context: self.context.clone(),
            dead_letter_subject: self.settings.dead_letter_subject.clone(),
        }
    }
}

/// One message received from JetStream.
pub struct JetStreamDelivery {
    view: Message,
    message: jetstream::Message,
    context: jetstream::Context,
    dead_letter_subject: Option<String>,
}

impl std::fmt::Debug for JetStreamDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamDelivery")
            .field("message", &self.view)
            .finish_non_exhaustive()
    }
}

impl JetStreamDelivery {
    /// The message's subject.
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    async fn acknowledge(&self, kind: AckKind) -> Result<(), BrokerError> {
        self.message.ack_with(kind).await.map_err(broker_error)
    }
}

#[async_trait]
impl Delivery for JetStreamDelivery {
    fn message(&self) -> &Message {
        &self.view
    }

    async fn ack(&self) -> Result<(), BrokerError> {
        self.acknowledge(AckKind::Ack).await
    }

    async fn nack(&self, redelivery: Redelivery) -> Result<(), BrokerError> {
        match redelivery {
            Redelivery::After(delay) if delay.is_zero() => {
                self.acknowledge(AckKind::Nak(None)).await
            }
            Redelivery::After(delay) => self.acknowledge(AckKind::Nak(Some(delay))).await,
            Redelivery::Never => self.acknowledge(AckKind::Term).await,
        }
    }

    async fn dead_letter(&self, reason: &DeadLetter) -> Result<(), BrokerError> {
        if let Some(subject) = &self.dead_letter_subject {
            let mut headers = self.message.headers.clone().unwrap_or_default();
            // The dead letter is a message of its own: the stream must not take it for a
            // duplicate of the original.
            if let Some(id) = &self.view.id {
                headers.insert(MESSAGE_ID, format!("{id}-dead-letter").as_str());
            }
            headers.insert("Idempotent-Dead-Letter", reason.kind());
            headers.insert("Idempotent-Dead-Letter-Reason", reason.to_string().as_str());
            self.context
                .publish_with_headers(subject.clone(), headers, Bytes::clone(&self.view.body))
                .await
                .map_err(broker_error)?
                .await
                .map_err(broker_error)?;
        }
        self.acknowledge(AckKind::Term).await
    }

    async fn in_progress(&self) -> Result<(), BrokerError> {
        self.acknowledge(AckKind::Progress).await
    }
}
