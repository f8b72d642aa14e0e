//! One message, from receipt to settlement: derive its key, run it as a call, and settle the
//! delivery from what the call returned. The only acknowledgement of a processed message
//! comes after its call returned `Ok`, when its record is durable.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::time::Duration;

use tokio::sync::watch;

use super::broker::{DeadLetter, Delivery, Redelivery};
use super::builder::{MissingKey, Settings};
use super::calls::{CallSpec, Failure, Runner};
use super::failures::record_failure;
use super::stats::{Count, Stats};
use crate::engine::Disposition;
use crate::error::Error;
use crate::key::Fingerprint;

/// What every message task shares.
pub(super) struct Shared {
    pub(super) settings: Settings,
    pub(super) runner: Box<dyn Runner>,
    pub(super) stats: Stats,
}

/// Processes and settles one delivery. `cancel` turns true when shutdown's grace period is
/// over: a call still running is then dropped (which releases its claim) and the message
/// requeued, never acknowledged.
pub(super) async fn process(
    shared: &Shared,
    delivery: &dyn Delivery,
    cancel: &mut watch::Receiver<bool>,
) {
    let settings = &shared.settings;
    let message = delivery.message();
    shared.stats.bump(Count::Received);
    let Some(key) = settings.key.key_of(message).filter(|key| !key.is_empty()) else {
        return missing_key(shared, delivery).await;
    };
    let fingerprint = if settings.fingerprint_body {
        Fingerprint::of_bytes(&message.body)
    } else {
        Fingerprint::NONE
    };
    let spec = CallSpec {
        scope: &settings.scope,
        key: &key,
        fingerprint,
        options: settings.options,
    };
    let outcome = tokio::select! {
        biased;
        () = cancelled(cancel) => None,
        outcome = unwinding(shared.runner.run(spec, delivery)) => Some(outcome),
    };
    let Some(outcome) = outcome else {
        shared.stats.bump(Count::Cancelled);
        return nack(shared, delivery, Redelivery::After(Duration::ZERO)).await;
    };
    match outcome {
        Ok(Disposition::Executed) => {
            shared.stats.bump(Count::Processed);
            ack(shared, delivery).await;
        }
        Ok(Disposition::Replayed) => {
            shared.stats.bump(Count::Duplicate);
            ack(shared, delivery).await;
        }
        Err(Failure::Handler(error)) => {
            shared.stats.bump(Count::Failed);
            handler_failed(shared, delivery, &key, error.to_string()).await;
        }
        Err(Failure::Engine(Error::InFlight { retry_after })) => {
            // Another worker holds the message (a redelivery, or a duplicate published
            // twice): it is acknowledged once that worker has recorded it.
            shared.stats.bump(Count::InFlight);
            let delay = retry_after.min(settings.max_in_flight_delay);
            nack(shared, delivery, Redelivery::After(delay)).await;
        }
        Err(Failure::Engine(Error::PayloadMismatch { .. })) => {
            dead_letter(shared, delivery, DeadLetter::PayloadMismatch).await;
        }
        Err(Failure::Engine(error @ (Error::Decode { .. } | Error::InvalidInput { .. }))) => {
            let error = error.to_string();
            dead_letter(shared, delivery, DeadLetter::Unprocessable { error }).await;
        }
        Err(Failure::Engine(error)) => {
            // The store is down or the claim was lost: whether the effect committed is not
            // known here, so the message comes back and its record decides.
            shared.stats.bump(Count::StoreError);
            tracing::warn!(scope = %settings.scope, key = %key, %error, "message not processed; requeued");
            nack(shared, delivery, Redelivery::After(settings.retry_delay)).await;
        }
    }
}

/// A message whose key cannot be derived: the consumer's [`MissingKey`] choice.
async fn missing_key(shared: &Shared, delivery: &dyn Delivery) {
    match shared.settings.missing_key {
        MissingKey::Reject => {
            shared.stats.bump(Count::Rejected);
            nack(shared, delivery, Redelivery::Never).await;
        }
        MissingKey::DeadLetter => dead_letter(shared, delivery, DeadLetter::MissingKey).await,
        MissingKey::ProcessUnprotected => {
            tracing::warn!(
                scope = %shared.settings.scope,
                "message without an idempotency key: processing it unprotected, a duplicate runs again"
            );
            shared.stats.bump(Count::Unprotected);
            match shared.runner.run_unprotected(delivery).await {
                Ok(()) => ack(shared, delivery).await,
                Err(error) => {
                    shared.stats.bump(Count::Failed);
                    tracing::warn!(%error, "unprotected message failed; requeued");
                    let delay = shared.settings.retry_delay;
                    nack(shared, delivery, Redelivery::After(delay)).await;
                }
            }
        }
    }
}

/// The handler failed and its claim was released: count the failure in the store, then
/// requeue, or dead-letter at the poison limit.
async fn handler_failed(shared: &Shared, delivery: &dyn Delivery, key: &str, error: String) {
    let settings = &shared.settings;
    tracing::debug!(scope = %settings.scope, key, %error, "handler failed");
    let counted = record_failure(
        shared.runner.store(),
        &settings.scope,
        key,
        settings.max_attempts,
        settings.options.ttl_duration(),
    )
    .await;
    match counted {
        Ok(attempts) if attempts >= settings.max_attempts => {
            let reason = DeadLetter::Poison {
                attempts,
                last_error: error,
            };
            dead_letter(shared, delivery, reason).await;
        }
        Ok(_) => nack(shared, delivery, Redelivery::After(settings.retry_delay)).await,
        Err(store_error) => {
            tracing::warn!(scope = %settings.scope, key, error = %store_error, "could not count the failure; requeued");
            nack(shared, delivery, Redelivery::After(settings.retry_delay)).await;
        }
    }
}

async fn ack(shared: &Shared, delivery: &dyn Delivery) {
    if let Err(error) = delivery.ack().await {
        // The record is durable: the redelivered message will be acknowledged as a duplicate.
        shared.stats.bump(Count::SettleError);
        tracing::warn!(%error, "acknowledgement failed; the message will come back as a duplicate");
    }
}

async fn nack(shared: &Shared, delivery: &dyn Delivery, redelivery: Redelivery) {
    if let Err(error) = delivery.nack(redelivery).await {
        // Unacknowledged, the message comes back when the broker notices (a closed channel,
        // an acknowledgement deadline).
        shared.stats.bump(Count::SettleError);
        tracing::warn!(%error, "negative acknowledgement failed");
    }
}

async fn dead_letter(shared: &Shared, delivery: &dyn Delivery, reason: DeadLetter) {
    shared.stats.bump(Count::DeadLettered);
    tracing::warn!(scope = %shared.settings.scope, id = ?delivery.message().id, %reason, "dead-lettering a message");
    if let Some(hook) = &shared.settings.on_dead_letter {
        hook(delivery.message(), &reason);
    }
    if let Err(error) = delivery.dead_letter(&reason).await {
        shared.stats.bump(Count::SettleError);
        tracing::warn!(%error, "dead-lettering failed; the message is requeued instead");
        nack(
            shared,
            delivery,
            Redelivery::After(shared.settings.retry_delay),
        )
        .await;
    }
}

/// Resolves once `cancel` is true (never, if its sender is gone without saying so).
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    while !*cancel.borrow_and_update() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A panicking handler is a failing one: the engine released its claim as the panic
/// unwound, and the message is settled like any other failure rather than left
/// unacknowledged.
async fn unwinding(
    call: impl Future<Output = Result<Disposition, Failure>>,
) -> Result<Disposition, Failure> {
    let mut call = pin!(call);
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => std::task::Poll::Ready(Err(Failure::Handler("the handler panicked".into()))),
        },
    )
    .await
}
