//! [`Call`]: the one description of an idempotent call (store, scope, key, fingerprint,
//! options, where its result is recorded) and the run that every entry point goes through.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::drive::{BodySlot, Driven};
use super::heartbeat::HeartbeatHook;
use super::options::CallOptions;
use super::outcome::{Disposition, Outcome, report, with_epoch};
use super::record::Recorder;
use super::trace::{self, Seen};
use crate::error::Error;
use crate::key::Fingerprint;
use crate::payload::{Codec, OkAndErr, OkOnly};
use crate::store::IdempotencyStore;

/// One idempotent call, built step by step; the programmatic API the attribute expands to.
///
/// ```
/// use idempotent_core::{Call, Error, MemoryStore};
/// use idempotent_core::key::{Fingerprint, IdempotencyKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let store = MemoryStore::new();
/// let key = IdempotencyKey::builder("payments.refund").part("payment-456").finish();
/// let fingerprint = Fingerprint::builder().field("amount", &250u64).finish();
///
/// let refund = || async { Ok::<_, Error>(String::from("refund-1")) };
/// let first = Call::new(&store, "payments.refund", key.as_str())
///     .fingerprint(fingerprint)
///     .run(refund())
///     .await?;
/// let second = Call::new(&store, "payments.refund", key.as_str())
///     .fingerprint(fingerprint)
///     .run(refund())
///     .await?;
/// assert!(!first.is_replayed());
/// assert!(second.is_replayed());
/// assert_eq!(first.value, second.value);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub(crate) store: &'a dyn IdempotencyStore,
    pub(crate) scope: &'a str,
    pub(crate) key: &'a str,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) options: CallOptions,
    /// Where the result is kept; `None`: in the store, by `complete`.
    pub(crate) recorder: Option<&'a dyn Recorder>,
    pub(crate) hook: Option<&'a dyn HeartbeatHook>,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("scope", &self.scope)
            .field("key", &self.key)
            .field("fingerprint", &self.fingerprint)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a> Call<'a> {
    /// A call on `key` within `scope`, with no fingerprint and default options.
    pub fn new(store: &'a dyn IdempotencyStore, scope: &'a str, key: &'a str) -> Self {
        Call {
            store,
            scope,
            key,
            fingerprint: Fingerprint::NONE,
            options: CallOptions::new(),
            recorder: None,
            hook: None,
        }
    }

    /// The request fingerprint: a retry with a different one fails with
    /// [`Error::PayloadMismatch`].
    pub fn fingerprint(mut self, fingerprint: Fingerprint) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// Replaces the options.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }

    /// Records the result with `recorder` instead of the store's `complete` (transactional
    /// mode records it in the body's transaction).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn recorder(mut self, recorder: &'a dyn Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Runs `hook` after every heartbeat that renewed the claim while the body runs.
    pub fn on_heartbeat(mut self, hook: &'a dyn HeartbeatHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Runs `body` at most once per key and returns its value, or replays the stored value of
    /// the call that ran it. An `Err` from the body releases the key, so a retry runs again.
    pub fn run<T, E, F>(
        self,
        body: F,
    ) -> impl Future<Output = Result<Outcome<T>, E>> + use<'a, T, E, F>
    where
        F: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: From<Error>,
    {
        // Not an `async fn`: returning the engine's future directly saves a layer of future
        // state that every call would otherwise move.
        self.execute::<T, E, F, OkOnly>(body)
    }

    /// Like [`run`](Self::run), but an `Err` is stored and replayed too (the error type must be
    /// serializable), so a retry gets the same error instead of running again.
    pub fn run_caching_errors<T, E, F>(
        self,
        body: F,
    ) -> impl Future<Output = Result<Outcome<T>, E>> + use<'a, T, E, F>
    where
        F: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: From<Error> + Serialize + DeserializeOwned,
    {
        self.execute::<T, E, F, OkAndErr>(body)
    }

    /// Runs `body` like [`run`](Self::run), with an entry point's own codec: how its results
    /// are stored and replayed, and which ones are not kept.
    #[cfg(feature = "http")]
    pub(crate) fn run_with_codec<T, E, F, C>(
        self,
        body: F,
    ) -> impl Future<Output = Result<Outcome<T>, E>> + use<'a, T, E, F, C>
    where
        F: Future<Output = Result<T, E>>,
        E: From<Error>,
        C: Codec<T, E>,
    {
        self.execute::<T, E, F, C>(body)
    }

    /// The run. The driver (claim, heartbeat, record) is one future compiled once for every
    /// call; what is compiled per body is only this poll loop: poll the driver, poll the body
    /// when the driver waits for it (or, failing open, instead of it), encode its result. What
    /// follows depends on the result type only ([`finish`]).
    async fn execute<T, E, F, C>(self, body: F) -> Result<Outcome<T>, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<Error>,
        C: Codec<T, E>,
    {
        let span = trace::call_span(self.scope);
        let slot = BodySlot::new();
        let mut result: Option<Result<T, E>> = None;
        let mut settled: Option<Settled> = None;
        let mut heartbeat_started = false;
        let mut body = pin!(body);
        let mut driver = pin!(self.drive(&slot));
        poll_fn(|cx| {
            let _entered = span.enter();
            loop {
                if settled.is_none() {
                    if let Poll::Ready(driven) = driver.as_mut().poll(cx) {
                        settled = Some(settle(&span, driven));
                    }
                }
                let epoch = match &settled {
                    None => match slot.running_epoch() {
                        Some(epoch) => Some(epoch),
                        None => return Poll::Pending,
                    },
                    Some(Settled::Unprotected) if result.is_none() => None,
                    Some(_) => return Poll::Ready(()),
                };
                let mut polled = None;
                poll_body(epoch, &mut || polled = Some(body.as_mut().poll(cx)));
                let Some(Poll::Ready(output)) = polled else {
                    if epoch.is_some() && !heartbeat_started {
                        // The body did not finish at once: let the driver start its heartbeat
                        // (it waits for this first poll, so a body that finishes at once never
                        // sets a timer). The body itself is not polled again for nothing.
                        heartbeat_started = true;
                        if let Poll::Ready(driven) = driver.as_mut().poll(cx) {
                            settled = Some(settle(&span, driven));
                            continue;
                        }
                    }
                    return Poll::Pending;
                };
                report(Disposition::Executed);
                if epoch.is_some() {
                    // The driver records it, then settles.
                    slot.finish(C::encode_checked(&output));
                }
                result = Some(output);
            }
        })
        .await;
        finish::<T, E, C>(self.scope, &span, settled, result)
    }
}

/// What the driver left the call with, its span told how it went where that is known.
enum Settled {
    Executed,
    Replay { payload: bytes::Bytes, waited: bool },
    Unprotected,
    Failed(Error),
}

fn settle(span: &tracing::Span, driven: Result<Driven, Error>) -> Settled {
    match driven {
        Ok(Driven::Executed) => {
            trace::finish(span, Seen::Executed);
            Settled::Executed
        }
        Ok(Driven::Replay { payload, waited }) => Settled::Replay { payload, waited },
        Ok(Driven::Unprotected) => {
            trace::finish(span, Seen::Unprotected);
            Settled::Unprotected
        }
        Err(error) => {
            trace::finish(span, Seen::of(&error));
            Settled::Failed(error)
        }
    }
}

/// One poll of the body: under the claim's epoch, or (failing open) without one.
fn poll_body(epoch: Option<u64>, poll: &mut dyn FnMut()) {
    match epoch {
        Some(epoch) => with_epoch(epoch, poll),
        None => poll(),
    }
}

/// The call's result, from what the driver settled and what the body returned: the part of a
/// call that depends on the result's type, not on the body.
fn finish<T, E, C>(
    scope: &str,
    span: &tracing::Span,
    settled: Option<Settled>,
    result: Option<Result<T, E>>,
) -> Result<Outcome<T>, E>
where
    E: From<Error>,
    C: Codec<T, E>,
{
    let executed = |value| Outcome {
        value,
        disposition: Disposition::Executed,
    };
    match (settled, result) {
        (Some(Settled::Executed | Settled::Unprotected), Some(output)) => output.map(executed),
        (Some(Settled::Replay { payload, waited }), _) => {
            // Reported only once the record decodes: an unreadable one is an error, not a
            // replay.
            let stored = C::decode(scope, &payload).inspect_err(|error| {
                trace::finish(span, Seen::of(error));
            })?;
            trace::finish(span, if waited { Seen::Waited } else { Seen::Replayed });
            report(Disposition::Replayed);
            stored.map(|value| Outcome {
                value,
                disposition: Disposition::Replayed,
            })
        }
        (Some(Settled::Failed(error)), _) => Err(error.into()),
        // The loop ends only once the driver settled and, unless it replays or failed, the
        // body returned.
        _ => Err(Error::store("engine", "a call ended without its result").into()),
    }
}
