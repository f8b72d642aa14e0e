//! The record phase: where and how a body's result is kept once it has run, or the claim given
//! up when it is not kept. Not generic: every call runs this one copy.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::call::Call;
use super::options::OnStoreError;
use super::trace::store_op;
use crate::error::Error;
use crate::store::{IdempotencyStore, Lease};

/// How often a failed completion is attempted again before the call gives up, and the pause
/// before each new attempt. A completion that fails for a moment (a dropped connection, a
/// failover) would otherwise leave the body's effect unrecorded, and a retry would run the
/// body again after the lease. Stores make a repeated `complete` of one lease harmless.
const COMPLETE_RETRY_PAUSES: [Duration; 2] =
    [Duration::from_millis(20), Duration::from_millis(100)];

/// Where a call records its result: the seam between the engine and an entry point that keeps
/// results somewhere other than the store's own `complete` (such as the caller's database
/// transaction).
#[async_trait]
pub(crate) trait Recorder: Send + Sync {
    /// Records `payload` as the completed result of `lease`, replayable for `ttl`.
    async fn record(
        &self,
        store: &dyn IdempotencyStore,
        lease: &Lease,
        payload: Bytes,
        ttl: Duration,
    ) -> Result<(), Error>;

    /// The result is not kept (an error that is not cached, a result that cannot be encoded):
    /// undo what the body prepared for recording and give the claim up.
    async fn discard(&self, store: &dyn IdempotencyStore, lease: &Lease) {
        release_quietly(store, lease).await;
    }
}

/// Records in the store, trying a store error again (see [`COMPLETE_RETRY_PAUSES`]); a
/// `LeaseLost` or any other answer from the store is final. What a call does unless an entry
/// point gives it a [`Recorder`]; called directly, so the common case boxes no future of its
/// own.
async fn record_in_store(
    store: &dyn IdempotencyStore,
    lease: &Lease,
    payload: Bytes,
    ttl: Duration,
) -> Result<(), Error> {
    let mut pauses = COMPLETE_RETRY_PAUSES.iter();
    loop {
        // A copy for a retry: the store takes the payload.
        let completed = store_op(
            store,
            "complete",
            store.complete(lease, payload.clone(), ttl),
        );
        match completed.await {
            Err(error @ Error::Store { .. }) => {
                let Some(pause) = pauses.next() else {
                    return Err(error);
                };
                tracing::debug!(%error, "recording the result failed; trying again");
                tokio::time::sleep(*pause).await;
            }
            other => return other,
        }
    }
}

impl Call<'_> {
    async fn discard(&self, lease: &Lease) {
        match self.recorder {
            Some(recorder) => recorder.discard(self.store, lease).await,
            None => release_quietly(self.store, lease).await,
        }
    }

    /// Keeps the encoded result (`None`: there is none to keep) or gives the claim up.
    pub(crate) async fn record_phase(
        &self,
        lease: &Lease,
        encoded: Option<Result<Bytes, Error>>,
    ) -> Result<(), Error> {
        match encoded {
            Some(Ok(payload)) => {
                let recorded = match self.recorder {
                    Some(recorder) => {
                        recorder
                            .record(self.store, lease, payload, self.options.ttl)
                            .await
                    }
                    None => record_in_store(self.store, lease, payload, self.options.ttl).await,
                };
                match recorded {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        tracing::warn!(%error, "body ran but its result was not recorded");
                        // Fail-open covers a store that is down, never a lost lease: the
                        // result then belongs to no claim.
                        let fail_open = self.options.on_store_error == OnStoreError::FailOpen
                            && matches!(error, Error::Store { .. });
                        if fail_open { Ok(()) } else { Err(error) }
                    }
                }
            }
            Some(Err(encode_error)) => {
                self.discard(lease).await;
                Err(encode_error)
            }
            None => {
                self.discard(lease).await;
                Ok(())
            }
        }
    }
}

pub(crate) async fn release_quietly(store: &dyn IdempotencyStore, lease: &Lease) {
    if let Err(error) = store_op(store, "release", store.release(lease)).await {
        tracing::warn!(%error, "could not release the claim; it expires with its lease");
    }
}

/// Releases the claim if the call is dropped or panics before its result is encoded.
pub(crate) struct ReleaseOnDrop<'a> {
    store: &'a dyn IdempotencyStore,
    lease: &'a Lease,
    armed: bool,
}

impl<'a> ReleaseOnDrop<'a> {
    pub(crate) fn new(store: &'a dyn IdempotencyStore, lease: &'a Lease) -> Self {
        ReleaseOnDrop {
            store,
            lease,
            armed: true,
        }
    }

    /// From here on the record phase decides what happens to the claim.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.release_in_background(self.lease.clone());
        }
    }
}
