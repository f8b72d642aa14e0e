//! While a body runs, its claim is renewed every `lease / 3`, so a long body keeps it and a
//! crashed one frees it quickly; a hook lets an entry point renew something of its own on the
//! same beat (a message broker's acknowledgement deadline).

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::trace::store_op;
use crate::error::Error;
use crate::store::{IdempotencyStore, Lease};

/// Runs after every heartbeat that renewed a running body's claim.
///
/// For work whose deadline lives somewhere else too: a message consumer extends the broker's
/// acknowledgement deadline on the same beat, so the message is not redelivered while its
/// body runs. The hook runs inside the heartbeat: a slow hook delays the next beat.
///
/// ```
/// use std::time::Duration;
/// use idempotent_core::HeartbeatHook;
/// use idempotent_core::store::Lease;
///
/// struct ExtendAckDeadline;
///
/// #[async_trait::async_trait]
/// impl HeartbeatHook for ExtendAckDeadline {
///     async fn renewed(&self, lease: &Lease, lease_for: Duration) {
///         // tell the broker the message is still being worked on
///         let _ = (lease, lease_for);
///     }
/// }
/// ```
#[async_trait]
pub trait HeartbeatHook: Send + Sync {
    /// The claim `lease` was renewed for another `lease_for`.
    async fn renewed(&self, lease: &Lease, lease_for: Duration);
}

/// Renews `lease` every `lease_for / 3`, forever; it is dropped when the body finishes.
pub(crate) async fn beat(
    store: &dyn IdempotencyStore,
    lease: &Lease,
    lease_for: Duration,
    hook: Option<&dyn HeartbeatHook>,
) {
    // At least `MIN_LEASE / 3`: calls refuse shorter leases before they claim.
    let period = lease_for / 3;
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match store_op(store, "extend", store.extend(lease, lease_for)).await {
            Ok(()) => {
                if let Some(hook) = hook {
                    hook.renewed(lease, lease_for).await;
                }
            }
            Err(Error::LeaseLost) => {
                tracing::warn!(
                    epoch = lease.epoch(),
                    "lease lost while the body runs; its result will not be recorded"
                );
                // Nothing left to extend; completion will report LeaseLost.
                std::future::pending::<()>().await;
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed; retrying at the next beat");
            }
        }
    }
}
