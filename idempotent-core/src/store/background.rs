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
