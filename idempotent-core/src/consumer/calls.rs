//! Each message as a call on the engine: [`Call`] on any store, or PostgreSQL's
//! [`TransactionalCall`](crate::stores::postgres::TransactionalCall) for the transactional
//! inbox. The consumer decides what to do with the delivery from what the call returns.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::broker::Delivery;
use super::handler::Handler;
use crate::engine::{Call, CallOptions, Disposition, HeartbeatHook};
use crate::error::{BoxError, Error};
use crate::key::Fingerprint;
use crate::store::{IdempotencyStore, Lease};

/// Why a message's call did not return `Ok`.
pub(super) enum Failure {
    /// The engine or the store said no (in flight, mismatch, outage, lost lease).
    Engine(Error),
    /// The handler returned an error; the claim was released.
    Handler(BoxError),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Engine(error)
    }
}

/// What identifies a message's call.
#[derive(Clone, Copy)]
pub(super) struct CallSpec<'a> {
    pub(super) scope: &'a str,
    pub(super) key: &'a str,
    pub(super) fingerprint: Fingerprint,
    pub(super) options: CallOptions,
}

/// Runs a message's handler as a call: the one place the consumer meets the engine.
#[async_trait]
pub(super) trait Runner: Send + Sync {
    /// The store the calls (and the failure counts) go to.
    fn store(&self) -> &dyn IdempotencyStore;

    /// Runs the handler at most once for `spec`, or learns that it ran.
    async fn run(
        &self,
        spec: CallSpec<'_>,
        delivery: &dyn Delivery,
    ) -> Result<Disposition, Failure>;

    /// Runs the handler with no claim (a message without a key, when the user chose so).
    async fn run_unprotected(&self, delivery: &dyn Delivery) -> Result<(), BoxError>;
}

/// Extends the broker's acknowledgement deadline on every heartbeat of the claim.
struct BrokerProgress<'a>(&'a dyn Delivery);

#[async_trait]
impl HeartbeatHook for BrokerProgress<'_> {
    async fn renewed(&self, _lease: &Lease, _lease_for: Duration) {
        if let Err(error) = self.0.in_progress().await {
            tracing::debug!(%error, "could not extend the message's acknowledgement deadline");
        }
    }
}

/// Calls through [`Call`] on any store.
pub(super) struct Plain<H> {
    pub(super) store: Arc<dyn IdempotencyStore>,
    pub(super) handler: H,
}

#[async_trait]
impl<H: Handler> Runner for Plain<H> {
    fn store(&self) -> &dyn IdempotencyStore {
        &*self.store
    }

    async fn run(
        &self,
        spec: CallSpec<'_>,
        delivery: &dyn Delivery,
    ) -> Result<Disposition, Failure> {
        let progress = BrokerProgress(delivery);
        let message = delivery.message();
        Call::new(&*self.store, spec.scope, spec.key)
            .fingerprint(spec.fingerprint)
            .options(spec.options)
            .on_heartbeat(&progress)
            .run(async { self.handler.handle(message).await.map_err(Failure::Handler) })
            .await
            .map(|outcome: crate::Outcome<()>| outcome.disposition)
    }

    async fn run_unprotected(&self, delivery: &dyn Delivery) -> Result<(), BoxError> {
        self.handler.handle(delivery.message()).await
    }
}

#[cfg(feature = "postgres")]
pub(super) use transactional::Transactional;

#[cfg(feature = "postgres")]
mod transactional {
    use async_trait::async_trait;
    use tokio::time::{Instant, interval_at};

    use super::{CallSpec, Failure, Runner};
    use crate::consumer::broker::Delivery;
    use crate::consumer::handler::TransactionalHandler;
    use crate::engine::Disposition;
    use crate::error::{BoxError, Error};
    use crate::store::IdempotencyStore;
    use crate::stores::postgres::PostgresStore;

    /// Calls through PostgreSQL's transactional mode: the handler's writes and the completion
    /// commit together.
    pub(in crate::consumer) struct Transactional<H> {
        pub(in crate::consumer) store: PostgresStore,
        pub(in crate::consumer) handler: H,
    }

    #[async_trait]
    impl<H: TransactionalHandler> Runner for Transactional<H> {
        fn store(&self) -> &dyn IdempotencyStore {
            &self.store
        }

        async fn run(
            &self,
            spec: CallSpec<'_>,
            delivery: &dyn Delivery,
        ) -> Result<Disposition, Failure> {
            let message = delivery.message();
            let call = self
                .store
                .transactional(spec.scope, spec.key)
                .fingerprint(spec.fingerprint)
                .options(spec.options)
                .run(async |tx: &mut sqlx::PgConnection| {
                    self.handler
                        .handle(message, tx)
                        .await
                        .map_err(Failure::Handler)
                });
            // A transactional call takes no heartbeat hook, so the broker's deadline is
            // extended here, on the claim's own period (lease / 3).
            let period = spec.options.lease_duration() / 3;
            let keepalive = async {
                let mut beat = interval_at(Instant::now() + period, period);
                loop {
                    beat.tick().await;
                    if let Err(error) = delivery.in_progress().await {
                        tracing::debug!(%error, "could not extend the message's acknowledgement deadline");
                    }
                }
            };
            tokio::select! {
                outcome = call => outcome.map(|outcome: crate::Outcome<()>| outcome.disposition),
                () = keepalive => Err(Failure::Engine(Error::store("consumer", "keepalive ended"))),
            }
        }

        async fn run_unprotected(&self, delivery: &dyn Delivery) -> Result<(), BoxError> {
            let mut tx = self.store.pool().begin().await?;
            self.handler.handle(delivery.message(), &mut tx).await?;
            tx.commit().await?;
            Ok(())
        }
    }
}
