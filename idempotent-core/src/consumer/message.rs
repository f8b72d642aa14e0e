//! The broker-neutral view of a received message.

use bytes::Bytes;

/// A received message, as every broker adapter describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The message id the publisher gave (AMQP `message_id`, NATS `Nats-Msg-Id`), if any: the
    /// default idempotency key.
    pub id: Option<String>,
    /// The body.
    pub body: Bytes,
    /// Whether the broker says it delivered this message before.
    pub redelivered: bool,
    /// How many times the broker has delivered it, this time included, where it counts.
    pub deliveries: Option<u64>,
}

impl Message {
    /// A message with this id and body, delivered for the first time; adapters fill in the
    /// rest with the `with_*` methods.
    pub fn new(id: Option<String>, body: impl Into<Bytes>) -> Self {
        Message {
            id,
            body: body.into(),
            redelivered: false,
            deliveries: None,
        }
    }

    /// Sets whether the broker delivered it before.
    pub fn with_redelivered(mut self, redelivered: bool) -> Self {
        self.redelivered = redelivered;
        self
    }

    /// Sets how many times the broker has delivered it.
    pub fn with_deliveries(mut self, deliveries: u64) -> Self {
        self.deliveries = Some(deliveries);
        self.redelivered |= deliveries > 1;
        self
    }
}
