//! The seam between the helper and a broker: [`Broker`] hands out deliveries, each
//! [`Delivery`] is settled once (acknowledged, requeued, rejected or dead-lettered).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::message::Message;
use crate::error::BoxError;

/// A source of messages: a queue, a subscription, a pull consumer.
///
/// The helper calls [`receive`](Self::receive) only while it has room for another message in
/// flight, so a broker's own prefetch (RabbitMQ `basic.qos`, JetStream `max_ack_pending`)
/// should be at least the consumer's [`concurrency`](super::ConsumerBuilder::concurrency).
///
/// `receive` must be cancel safe: the helper stops waiting for a message when it shuts down
/// or has been idle long enough, and a message must not be lost when it does (a message the
/// broker had already pushed stays unacknowledged and is redelivered).
#[async_trait]
pub trait Broker: Send {
    /// What one received message is.
    type Delivery: Delivery + 'static;

    /// Waits for the next message. `Ok(None)`: the source has ended (the consumer was
    /// cancelled, the subscription closed) and no message will come.
    async fn receive(&mut self) -> Result<Option<Self::Delivery>, BrokerError>;
}

/// One received message and the way to settle it with its broker.
///
/// The helper settles each delivery exactly once: [`ack`](Self::ack) after the message's
/// call returned `Ok` (its record is durable), [`nack`](Self::nack) or
/// [`dead_letter`](Self::dead_letter) otherwise.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// The message: its id (if the broker or publisher gave one), body and delivery facts.
    fn message(&self) -> &Message;

    /// Acknowledges the message: the broker forgets it.
    async fn ack(&self) -> Result<(), BrokerError>;

    /// Negatively acknowledges the message: [`Redelivery::After`] asks the broker to deliver it
    /// again (not before the delay, where the broker can delay a redelivery),
    /// [`Redelivery::Never`] drops it (a broker may route it to a dead-letter destination of
    /// its own).
    async fn nack(&self, redelivery: Redelivery) -> Result<(), BrokerError>;

    /// Moves the message aside for a person to look at (a dead-letter queue or subject), so
    /// that it is no longer redelivered.
    async fn dead_letter(&self, reason: &DeadLetter) -> Result<(), BrokerError>;

    /// Tells the broker the message is still being worked on, for brokers that redeliver a
    /// message whose acknowledgement is late (JetStream's `ack_wait`). Called on every
    /// heartbeat of the message's claim. The default does nothing.
    async fn in_progress(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// What a negative acknowledgement asks of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Deliver the message again, not before this delay where the broker can delay it.
    After(Duration),
    /// Do not deliver it again.
    Never,
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetter {
    /// The handler failed this many times (counted in the store, across workers and
    /// restarts); the last error is given.
    Poison {
        /// Failed attempts so far.
        attempts: u32,
        /// The last handler error, as text.
        last_error: String,
    },
    /// The message has no idempotency key, and the consumer dead-letters such messages.
    MissingKey,
    /// The key was used before for a message with another body: processing this one would
    /// either run the effect again or acknowledge a message that was never processed.
    PayloadMismatch,
    /// The store cannot process this message (an unreadable record, a key the store cannot
    /// hold); the error is given.
    Unprocessable {
        /// The store's error, as text.
        error: String,
    },
}

impl DeadLetter {
    /// A short machine-readable name: `poison`, `missing_key`, `payload_mismatch`,
    /// `unprocessable`. Adapters put it in a header of the dead-lettered message.
    pub fn kind(&self) -> &'static str {
        match self {
            DeadLetter::Poison { .. } => "poison",
            DeadLetter::MissingKey => "missing_key",
            DeadLetter::PayloadMismatch => "payload_mismatch",
            DeadLetter::Unprocessable { .. } => "unprocessable",
        }
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetter::Poison {
                attempts,
                last_error,
            } => write!(f, "failed {attempts} times; last error: {last_error}"),
            DeadLetter::MissingKey => f.write_str("the message has no idempotency key"),
            DeadLetter::PayloadMismatch => {
                f.write_str("the idempotency key was used before for a message with another body")
            }
            DeadLetter::Unprocessable { error } => {
                write!(f, "the store cannot process this message: {error}")
            }
        }
    }
}

/// A broker operation failed (connection lost, channel closed, server error).
#[derive(Debug)]
pub struct BrokerError {
    broker: &'static str,
    source: BoxError,
}

impl BrokerError {
    /// Wraps an adapter's error; `broker` names the adapter, such as `"rabbitmq"`.
    pub fn new(broker: &'static str, source: impl Into<BoxError>) -> Self {
        BrokerError {
            broker,
            source: source.into(),
        }
    }

    /// The adapter that failed.
    pub fn broker(&self) -> &'static str {
        self.broker
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message broker `{}` failed: {}",
            self.broker, self.source
        )
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}
