//! The claim phase: claim until the key is ours, a stored result can be replayed, or the call
//! must give up; waiting out in-flight owners within the wait budget.
//!
//! Not generic: every call, whatever its result type, runs this one copy.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::call::Call;
use super::options::{OnInFlight, OnStoreError};
use super::trace::{self, store_op};
use crate::error::Error;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease};

/// How long to wait between claims while another owner holds the key, at first and at most.
/// Stores that implement [`IdempotencyStore::wait_for_change`] wake waiters sooner.
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// What the claim phase leaves the call with.
pub(crate) enum Claimed {
    /// The key is ours: run the body.
    Lease(Lease),
    /// A completed record: replay this payload (`waited`: after waiting for the call that
    /// ran it).
    Replay { payload: Bytes, waited: bool },
    /// The store failed and the call fails open: run the body without a claim.
    Unprotected,
}

impl Call<'_> {
    /// Checks the options, then claims (see the module docs).
    pub(crate) async fn claim_phase(&self, request: &ClaimRequest<'_>) -> Result<Claimed, Error> {
        self.options.validate()?;
        match acquire(self, request).await {
            Err(error @ Error::Store { .. })
                if self.options.on_store_error == OnStoreError::FailOpen =>
            {
                tracing::warn!(%error, "idempotency store unavailable; running unprotected (fail-open)");
                Ok(Claimed::Unprotected)
            }
            other => other,
        }
    }
}

async fn acquire(call: &Call<'_>, request: &ClaimRequest<'_>) -> Result<Claimed, Error> {
    let options = &call.options;
    // Read the clock only once a wait begins: most calls never wait.
    let mut started: Option<Instant> = None;
    let budget = options.wait_budget();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match claim_once(call.store, request).await? {
            Claim::Acquired(lease) => {
                tracing::Span::current().record("epoch", lease.epoch());
                return Ok(Claimed::Lease(lease));
            }
            Claim::Completed(record) => {
                return Ok(Claimed::Replay {
                    payload: record.payload,
                    waited: started.is_some(),
                });
            }
            Claim::PayloadMismatch => {
                return Err(Error::PayloadMismatch {
                    scope: request.scope.to_owned(),
                });
            }
            Claim::InFlight { retry_after } => {
                if options.on_in_flight == OnInFlight::Reject {
                    return Err(Error::InFlight { retry_after });
                }
                let waited = started.get_or_insert_with(Instant::now).elapsed();
                if waited >= budget {
                    return Err(Error::InFlight { retry_after });
                }
                let pause = backoff
                    .min(retry_after.max(Duration::from_millis(1)))
                    .min(budget - waited);
                trace::waiting(retry_after);
                call.store
                    .wait_for_change(request.scope, request.key, pause)
                    .await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One claim, given up in the background if the call is dropped before its answer arrives:
/// the store may have granted it, and nobody else could release it.
async fn claim_once(
    store: &dyn IdempotencyStore,
    request: &ClaimRequest<'_>,
) -> Result<Claim, Error> {
    let mut on_the_wire = AbandonOnDrop {
        store,
        request,
        armed: true,
    };
    let claim = store_op(store, "claim", store.claim(request)).await;
    on_the_wire.armed = false;
    claim
}

struct AbandonOnDrop<'a, 'r> {
    store: &'a dyn IdempotencyStore,
    request: &'a ClaimRequest<'r>,
    armed: bool,
}

impl Drop for AbandonOnDrop<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.abandon_claim_in_background(self.request);
        }
    }
}
