//! Giving a claim up without awaiting: for calls that were cancelled or panicked.

use super::IdempotencyStore;
use super::request::{Claim, ClaimRequest, Lease, OwnedClaimRequest};
use crate::error::Error;

/// Runs `store.release(&lease)` on the current tokio runtime without waiting for it: the usual
/// body of [`IdempotencyStore::release_in_background`] for a store whose handle is cheap to
/// clone. With no runtime it does nothing, and the claim expires with its lease. A lease that
/// was already lost has nothing to release; any other failure is logged.
pub fn spawn_release<S>(store: S, lease: Lease)
where
    S: IdempotencyStore + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        match store.release(&lease).await {
            Ok(()) | Err(Error::LeaseLost) => {}
            Err(error) => tracing::warn!(
                scope = lease.scope(),
                %error,
                "could not release the claim; it expires with its lease"
            ),
        }
    });
}

/// Gives up a claim whose answer never arrived, on the current tokio runtime and without
/// waiting for it: the usual body of [`IdempotencyStore::abandon_claim_in_background`] for a
/// store whose handle is cheap to clone.
///
/// It claims again as the same owner. If the lost claim was granted, that returns its lease
/// (the retried-claim rule) and the lease is released; if it was not, the key is either
/// someone else's (nothing to do) or free, and the fresh claim is released at once, which only
/// moves the key's epoch on. With no runtime it does nothing, and a granted claim expires with
/// its lease.
pub fn spawn_abandon<S>(store: S, request: &ClaimRequest<'_>)
where
    S: IdempotencyStore + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let request = OwnedClaimRequest::new(request);
    runtime.spawn(async move {
        let outcome = match store.claim(&request.as_request()).await {
            Ok(Claim::Acquired(lease)) => store.release(&lease).await,
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) | Err(Error::LeaseLost) => {}
            Err(error) => tracing::warn!(
                scope = request.scope.as_str(),
                %error,
                "could not give up a cancelled claim; it expires with its lease"
            ),
        }
    });
}

/// The background methods of a store whose handle is cheap to clone: `release_in_background`
/// by [`spawn_release`], `abandon_claim_in_background` by [`spawn_abandon`]. Expands to the
/// two methods, inside an `impl IdempotencyStore`.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
macro_rules! spawned_background_work {
    () => {
        /// Spawns the release on the current tokio runtime ([`spawn_release`]); with no runtime
        /// it does nothing and the claim expires with its lease.
        ///
        /// [`spawn_release`]: crate::store::spawn_release
        fn release_in_background(&self, lease: $crate::store::Lease) {
            $crate::store::spawn_release(self.clone(), lease);
        }

        /// Gives the claim up on the current tokio runtime ([`spawn_abandon`]).
        ///
        /// [`spawn_abandon`]: crate::store::spawn_abandon
        fn abandon_claim_in_background(&self, request: &$crate::store::ClaimRequest<'_>) {
            $crate::store::spawn_abandon(self.clone(), request);
        }
    };
}
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) use spawned_background_work;
