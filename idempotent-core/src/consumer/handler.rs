//! What the consumer runs for each message: a [`Handler`], or with PostgreSQL's
//! transactional mode a [`TransactionalHandler`] that writes through the transaction that
//! also records the message as processed.

use std::future::Future;

use async_trait::async_trait;

use super::message::Message;
use crate::error::BoxError;

/// The work done once per message. An `Err` releases the message's claim and requeues it; it
/// counts towards the poison limit.
///
/// Any `Fn(Message) -> impl Future<Output = Result<(), E>>` is a handler; implement the trait
/// for a type that holds clients or pools.
///
/// ```
/// use idempotent_core::consumer::{Handler, Message};
///
/// fn assert_handler(_: impl Handler) {}
/// assert_handler(|message: Message| async move {
///     println!("order {}", String::from_utf8_lossy(&message.body));
///     Ok::<(), std::io::Error>(())
/// });
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Processes `message`.
    async fn handle(&self, message: &Message) -> Result<(), BoxError>;
}

#[async_trait]
impl<F, Fut, E> Handler for F
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError>,
{
    async fn handle(&self, message: &Message) -> Result<(), BoxError> {
        self(message.clone()).await.map_err(Into::into)
    }
}

/// A handler whose database writes commit together with the record that marks its message
/// processed (the transactional inbox), for [`Consumer`](super::Consumer)s built with
/// [`ConsumerBuilder::transactional`](super::ConsumerBuilder::transactional).
///
/// Write through `tx` only: those writes and the completion commit in one transaction, so a
/// crash at any point either leaves neither (the redelivered message runs again) or both (it
/// is acknowledged as a duplicate). Work done elsewhere (an HTTP call, another database) is
/// at least once.
///
/// ```no_run
/// use idempotent_core::BoxError;
/// use idempotent_core::consumer::{Message, TransactionalHandler};
/// use idempotent_core::stores::postgres::sqlx::{self, PgConnection};
///
/// struct RecordOrder;
///
/// #[async_trait::async_trait]
/// impl TransactionalHandler for RecordOrder {
///     async fn handle(&self, message: &Message, tx: &mut PgConnection) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO orders (body) VALUES ($1)")
///             .bind(&message.body[..])
///             .execute(&mut *tx)
///             .await?;
///         Ok(())
///     }
/// }
/// ```
#[cfg(feature = "postgres")]
#[async_trait]
pub trait TransactionalHandler: Send + Sync + 'static {
    /// Processes `message`, writing through `tx`.
    async fn handle(&self, message: &Message, tx: &mut sqlx::PgConnection) -> Result<(), BoxError>;
}
