//! [`ConsumerBuilder`]: how a consumer keys, protects and paces its messages.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Consumer;
use super::broker::{Broker, DeadLetter};
use super::calls::{Plain, Runner};
use super::handler::Handler;
use super::message::Message;
use super::process::Shared;
use super::stats::Stats;
use crate::engine::{CallOptions, OnInFlight};
use crate::error::Error;
use crate::store::IdempotencyStore;

/// What the consumer does with a message it cannot derive a key for.
///
/// A message without a key cannot be protected: a duplicate of it is indistinguishable from a
/// new message. There is no silent choice; the default dead-letters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Drop it: a negative acknowledgement without redelivery (RabbitMQ routes it to the
    /// queue's own dead-letter exchange if it has one; JetStream terminates it).
    Reject,
    /// Hand it to the dead-letter callback and the broker's dead-letter destination.
    #[default]
    DeadLetter,
    /// Run the handler without a claim, with a warning: every duplicate runs it again.
    ProcessUnprotected,
}

type KeyFn = dyn Fn(&Message) -> Option<String> + Send + Sync;
type DeadLetterFn = dyn Fn(&Message, &DeadLetter) + Send + Sync;

/// Where a message's idempotency key comes from.
#[derive(Clone)]
pub(super) enum KeySource {
    MessageId,
    JsonField(Arc<str>),
    With(Arc<KeyFn>),
}

impl KeySource {
    pub(super) fn key_of(&self, message: &Message) -> Option<String> {
        match self {
            KeySource::MessageId => message.id.clone(),
            KeySource::JsonField(field) => {
                let body: serde_json::Value = serde_json::from_slice(&message.body).ok()?;
                match body.get(&**field)? {
                    serde_json::Value::String(text) => Some(text.clone()),
                    serde_json::Value::Number(number) => Some(number.to_string()),
                    _ => None,
                }
            }
            KeySource::With(key) => key(message),
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::MessageId => f.write_str("MessageId"),
            KeySource::JsonField(field) => f.debug_tuple("JsonField").field(field).finish(),
            KeySource::With(_) => f.write_str("With(..)"),
        }
    }
}

/// Everything about a consumer but its broker, store and handler.
pub(super) struct Settings {
    pub(super) scope: String,
    pub(super) key: KeySource,
    pub(super) missing_key: MissingKey,
    pub(super) max_attempts: u32,
    pub(super) options: CallOptions,
    pub(super) fingerprint_body: bool,
    pub(super) retry_delay: Duration,
    pub(super) max_in_flight_delay: Duration,
    pub(super) on_dead_letter: Option<Arc<DeadLetterFn>>,
}

/// Configures a [`Consumer`]; made with [`Consumer::builder`].
pub struct ConsumerBuilder {
    settings: Settings,
    concurrency: usize,
    shutdown_grace: Duration,
    idle: Option<Duration>,
}

impl fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("ConsumerBuilder")
            .field("scope", &s.scope)
            .field("key", &s.key)
            .field("missing_key", &s.missing_key)
            .field("max_attempts", &s.max_attempts)
            .field("options", &s.options)
            .field("fingerprint_body", &s.fingerprint_body)
            .field("retry_delay", &s.retry_delay)
            .field("max_in_flight_delay", &s.max_in_flight_delay)
            .field("concurrency", &self.concurrency)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    pub(super) fn new(scope: String) -> Self {
        ConsumerBuilder {
            settings: Settings {
                scope,
                key: KeySource::MessageId,
                missing_key: MissingKey::default(),
                max_attempts: 5,
                options: CallOptions::new(),
                fingerprint_body: true,
                retry_delay: Duration::from_secs(1),
                max_in_flight_delay: Duration::from_secs(5),
                on_dead_letter: None,
            },
            concurrency: 16,
            shutdown_grace: Duration::from_secs(30),
            idle: None,
        }
    }

    /// Keys each message by the broker's message id (AMQP `message_id`, NATS `Nats-Msg-Id`).
    /// The default.
    pub fn key_from_message_id(mut self) -> Self {
        self.settings.key = KeySource::MessageId;
        self
    }

    /// Keys each message by a top-level field of its JSON body (a string, or a number as
    /// written), for publishers that give no message id or retry under a new one.
    pub fn key_from_json_field(mut self, field: &str) -> Self {
        self.settings.key = KeySource::JsonField(field.into());
        self
    }

    /// Keys each message by `key`; `None` (or an empty key) is a message without a key.
    /// The key must be the same for every delivery and every duplicate of the message: derive
    /// it from what the publisher sent, never from the delivery (a delivery tag, a
    /// timestamp).
    pub fn key_with(
        mut self,
        key: impl Fn(&Message) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.settings.key = KeySource::With(Arc::new(key));
        self
    }

    /// What to do with a message without a key. Default [`MissingKey::DeadLetter`].
    pub fn on_missing_key(mut self, policy: MissingKey) -> Self {
        self.settings.missing_key = policy;
        self
    }

    /// After this many failed attempts of one message (handler errors and panics, counted in
    /// the store, so across workers and restarts), it is dead-lettered instead of requeued.
    /// Default 5; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts.max(1);
        self
    }

    /// How many messages are in flight at once (received and not yet settled). The consumer
    /// asks the broker for a message only when one of these slots is free, so a slow handler
    /// slows the intake instead of piling messages up. Default 16; at least 1.
    pub fn concurrency(mut self, in_flight: usize) -> Self {
        self.concurrency = in_flight.max(1);
        self
    }

    /// The options of every message's call: ttl (how long a processed message is
    /// recognised), lease (how long a crashed worker's message stays claimed), store-error
    /// policy. A duplicate of a message in flight is always requeued rather than waited for,
    /// so it does not hold a slot.
    pub fn call_options(mut self, options: CallOptions) -> Self {
        self.settings.options = options;
        self
    }

    /// Whether the body is fingerprinted (default `true`): a message whose key was used before
    /// for another body is then dead-lettered ([`DeadLetter::PayloadMismatch`]) instead of
    /// being acknowledged as a duplicate of something else. Turn it off when duplicates
    /// legitimately differ (a publisher that stamps each retry).
    pub fn fingerprint_body(mut self, on: bool) -> Self {
        self.settings.fingerprint_body = on;
        self
    }

    /// How long a message waits before it is redelivered after a handler error or a store
    /// failure, where the broker can delay a redelivery. Default 1 s.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.settings.retry_delay = delay;
        self
    }

    /// The longest a duplicate of a message in flight waits before it is redelivered (it
    /// waits no longer than the other claim's lease has left). Default 5 s.
    pub fn max_in_flight_delay(mut self, delay: Duration) -> Self {
        self.settings.max_in_flight_delay = delay;
        self
    }

    /// On shutdown, how long in-flight messages may take to finish; those still running then
    /// are cancelled (their claims released, their effects rolled back in transactional mode)
    /// and requeued. Default 30 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Stops the consumer once no message has arrived for `quiet` and none is in flight.
    pub fn stop_when_idle(mut self, quiet: Duration) -> Self {
        self.idle = Some(quiet);
        self
    }

    /// Called with every message that is dead-lettered and why, before the broker's
    /// dead-letter destination gets it. Keep it quick: it runs on the message's task.
    pub fn on_dead_letter(
        mut self,
        callback: impl Fn(&Message, &DeadLetter) + Send + Sync + 'static,
    ) -> Self {
        self.settings.on_dead_letter = Some(Arc::new(callback));
        self
    }

    /// A consumer that runs `handler` for each message of `broker` as a [`Call`](crate::Call)
    /// on `store`. Fails with [`Error::LeaseTooShort`] for a lease the heartbeat cannot hold.
    pub fn build<B, S, H>(self, store: S, broker: B, handler: H) -> Result<Consumer<B>, Error>
    where
        B: Broker,
        S: IdempotencyStore + 'static,
        H: Handler,
    {
        let runner = Plain {
            store: Arc::new(store),
            handler,
        };
        self.finish(broker, Box::new(runner))
    }

    /// A consumer whose handler writes through the PostgreSQL transaction that also records
    /// the message as processed (the transactional inbox): the effect and the record commit
    /// together, so a crash between the effect and the acknowledgement cannot apply the
    /// effect twice. See [`TransactionalCall`](crate::stores::postgres::TransactionalCall).
    #[cfg(feature = "postgres")]
    pub fn transactional<B, H>(
        self,
        store: crate::PostgresStore,
        broker: B,
        handler: H,
    ) -> Result<Consumer<B>, Error>
    where
        B: Broker,
        H: super::TransactionalHandler,
    {
        let runner = super::calls::Transactional { store, handler };
        self.finish(broker, Box::new(runner))
    }

    fn finish<B: Broker>(
        mut self,
        broker: B,
        runner: Box<dyn Runner>,
    ) -> Result<Consumer<B>, Error> {
        self.settings.options.validate()?;
        self.settings.options = self.settings.options.on_in_flight(OnInFlight::Reject);
        Ok(Consumer {
            broker,
            shared: Arc::new(Shared {
                settings: self.settings,
                runner,
                stats: Stats::default(),
            }),
            concurrency: self.concurrency,
            shutdown_grace: self.shutdown_grace,
            idle: self.idle,
        })
    }
}
