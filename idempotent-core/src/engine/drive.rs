//! The driver: everything a call does that does not depend on its result type, as one future
//! compiled once. The generic part of a call (see [`Call::execute`](super::call)) polls the
//! body beside it and hands the encoded result over through a [`BodySlot`].

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use bytes::Bytes;

use super::call::Call;
use super::claim::Claimed;
use super::heartbeat::beat;
use super::record::ReleaseOnDrop;
use crate::error::Error;
use crate::store::{ClaimRequest, OwnerId};

/// What the driver leaves the caller to do.
pub(crate) enum Driven {
    /// The body ran and its result was recorded (or deliberately not kept).
    Executed,
    /// A completed record: decode and return this payload (`waited`: after waiting for the
    /// call that ran it).
    Replay { payload: Bytes, waited: bool },
    /// The store failed and the call fails open: run the body without a claim.
    Unprotected,
}

/// Where the body's side of a call meets the driver: the driver says when the body may run
/// (and under which epoch), the caller puts the encoded result in.
pub(crate) struct BodySlot {
    /// The epoch the body runs under while it may run; 0 before and after (no claim has
    /// epoch 0).
    running: AtomicU64,
    /// The encoded result, from when the body finished until the driver takes it. `None`
    /// inside: the result is not to be kept.
    done: Mutex<Option<Option<Result<Bytes, Error>>>>,
}

impl BodySlot {
    pub(crate) fn new() -> Self {
        BodySlot {
            running: AtomicU64::new(0),
            done: Mutex::new(None),
        }
    }

    /// The epoch to poll the body under, if the driver is waiting for it.
    pub(crate) fn running_epoch(&self) -> Option<u64> {
        Some(self.running.load(Ordering::Acquire)).filter(|&epoch| epoch != 0)
    }

    /// The body finished; `encoded` is what to record.
    pub(crate) fn finish(&self, encoded: Option<Result<Bytes, Error>>) {
        self.running.store(0, Ordering::Release);
        *self
            .done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(encoded);
    }

    fn start(&self, epoch: u64) {
        self.running.store(epoch, Ordering::Release);
    }

    fn take(&self) -> Option<Option<Result<Bytes, Error>>> {
        self.done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl Call<'_> {
    /// Claims; if the key is ours, waits (heartbeating) for the body's result in `slot` and
    /// records it.
    pub(crate) async fn drive(&self, slot: &BodySlot) -> Result<Driven, Error> {
        let request = ClaimRequest {
            scope: self.scope,
            key: self.key,
            fingerprint: self.fingerprint,
            owner: OwnerId::new(),
            lease: self.options.lease,
            ttl: self.options.ttl,
        };
        let lease = match self.claim_phase(&request).await? {
            Claimed::Lease(lease) => lease,
            Claimed::Replay { payload, waited } => return Ok(Driven::Replay { payload, waited }),
            Claimed::Unprotected => return Ok(Driven::Unprotected),
        };

        // Until the result is encoded, a cancelled or panicking body (or a panic in the
        // result's `Serialize`) releases the key: either drops this future here.
        let mut guard = ReleaseOnDrop::new(self.store, &lease);
        slot.start(lease.epoch());
        let encoded = {
            let mut heartbeat = pin!(beat(self.store, &lease, self.options.lease, self.hook));
            let mut body_polled = false;
            poll_fn(|cx| {
                if let Some(encoded) = slot.take() {
                    return Poll::Ready(encoded);
                }
                // The body is polled once before the heartbeat starts: a body that finishes
                // at once never sets a timer. This relies on the caller (`Call::execute`),
                // which polls the body whenever this returns pending while the slot runs, and
                // polls this again if the body is still pending.
                if !body_polled {
                    body_polled = true;
                    return Poll::Pending;
                }
                // The heartbeat loops forever, so it never completes and is never polled
                // after completion.
                let _ = heartbeat.as_mut().poll(cx);
                Poll::Pending
            })
            .await
        };
        // A call dropped while its result is being recorded leaves the claim to the
        // completion on the wire, or to its lease.
        guard.disarm();
        self.record_phase(&lease, encoded).await?;
        Ok(Driven::Executed)
    }
}
