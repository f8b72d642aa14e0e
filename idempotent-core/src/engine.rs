//! The claim → run → complete/release state machine shared by every entry point.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{Claim, ClaimRequest, IdempotencyStore, Lease, OwnerId};

/// How long to wait between claims while another owner holds the key, at first and at most.
/// Stores that implement [`IdempotencyStore::wait_for_change`] wake waiters sooner.
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// The first byte of a stored payload: format version 1, then whether it holds a success or a
/// cached error, followed by the value as JSON. A persisted format, pinned by golden tests.
const PAYLOAD_OK_V1: u8 = 0x01;
const PAYLOAD_ERR_V1: u8 = 0x02;

/// The shortest lease a call accepts: 1 second.
///
/// While a body runs, the heartbeat renews its claim every `lease / 3`, and each renewal must
/// reach the store before the lease runs out, through scheduling delays and a store round
/// trip on a loaded machine. Leases of a few milliseconds lose their claim mid-body, and a
/// duplicate then runs the body a second time; a second leaves two thirds of it, over 600 ms,
/// for a renewal to land. Shorter leases are refused ([`Error::LeaseTooShort`]), never
/// silently lengthened. `#[idempotent(lease = "...")]` checks the same minimum at compile time.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// How often a failed `complete` is attempted again before the call gives up, and the pause
/// before each new attempt. A completion that fails for a moment (a dropped connection, a
/// failover) would otherwise leave the body's effect unrecorded, and a retry would run the
/// body again after the lease. Stores make a repeated `complete` of one lease harmless.
const COMPLETE_RETRY_PAUSES: [Duration; 2] =
    [Duration::from_millis(20), Duration::from_millis(100)];

/// What a call does when another call holds the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnInFlight {
    /// Wait for the other call to finish and replay its result (bounded by the wait budget).
    #[default]
    Wait,
    /// Fail at once with [`Error::InFlight`].
    Reject,
}

/// What a call does when the store itself fails (connection lost, timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Return [`Error::Store`]; the body does not run. The safe default.
    #[default]
    FailClosed,
    /// Run the body without protection when the claim cannot be made, and return its result
    /// even if it cannot be recorded. Duplicates arriving during the outage run again: choose
    /// this only where a second execution is cheaper than an outage.
    FailOpen,
}

/// Options for one idempotent call. `const`, so generated code builds them at compile time.
///
/// ```
/// use std::time::Duration;
/// use idempotent_core::{CallOptions, OnInFlight};
///
/// const OPTIONS: CallOptions = CallOptions::new()
///     .ttl(Duration::from_secs(3600))
///     .lease(Duration::from_secs(10))
///     .on_in_flight(OnInFlight::Reject);
/// assert_eq!(OPTIONS.ttl_duration(), Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    ttl: Duration,
    lease: Duration,
    wait_timeout: Option<Duration>,
    on_in_flight: OnInFlight,
    on_store_error: OnStoreError,
    cache_errors: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CallOptions {
    /// Defaults: ttl 24 hours, lease 30 seconds, wait for in-flight calls up to one lease,
    /// fail closed, errors not cached.
    pub const fn new() -> Self {
        CallOptions {
            ttl: Duration::from_secs(24 * 60 * 60),
            lease: Duration::from_secs(30),
            wait_timeout: None,
            on_in_flight: OnInFlight::Wait,
            on_store_error: OnStoreError::FailClosed,
            cache_errors: false,
        }
    }

    /// How long a completed result is replayed.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a claim holds without a heartbeat. While the body runs, the claim is extended
    /// every `lease / 3`; if the process dies, another caller takes over after `lease`. At
    /// least [`MIN_LEASE`]; a call with a shorter one fails with [`Error::LeaseTooShort`].
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a call waits for an in-flight duplicate before failing with
    /// [`Error::InFlight`]. Default: one lease.
    pub const fn wait_timeout(mut self, wait: Duration) -> Self {
        self.wait_timeout = Some(wait);
        self
    }

    /// Wait for in-flight duplicates, or reject them.
    pub const fn on_in_flight(mut self, policy: OnInFlight) -> Self {
        self.on_in_flight = policy;
        self
    }

    /// Fail closed (default) or open when the store is unavailable.
    pub const fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_store_error = policy;
        self
    }

    /// Whether `Err` results are stored and replayed too (default: they release the key, so a
    /// retry runs again). Only [`Call::run_caching_errors`] can store errors.
    pub const fn cache_errors(mut self, cache: bool) -> Self {
        self.cache_errors = cache;
        self
    }

    /// The configured ttl.
    pub const fn ttl_duration(&self) -> Duration {
        self.ttl
    }

    /// The configured lease.
    pub const fn lease_duration(&self) -> Duration {
        self.lease
    }

    /// Checks the options a call cannot run with: a lease shorter than [`MIN_LEASE`] fails with
    /// [`Error::LeaseTooShort`]. [`Call::run`] checks this before it claims anything.
    pub const fn validate(&self) -> Result<(), Error> {
        if self.lease.as_nanos() < MIN_LEASE.as_nanos() {
            return Err(Error::LeaseTooShort {
                lease: self.lease,
                minimum: MIN_LEASE,
            });
        }
        Ok(())
    }

    fn wait_budget(&self) -> Duration {
        match self.wait_timeout {
            Some(wait) => wait,
            None => self.lease,
        }
    }
}

/// Whether a call ran its body or replayed a stored result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// The body ran in this call.
    Executed,
    /// The result was recorded by an earlier call and replayed.
    Replayed,
}

/// A successful call's value and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// The body's value, or the stored value of the call that ran it.
    pub value: T,
    /// Whether this call ran the body.
    pub disposition: Disposition,
}

impl<T> Outcome<T> {
    /// Whether the value was replayed from an earlier call.
    pub fn is_replayed(&self) -> bool {
        self.disposition == Disposition::Replayed
    }

    /// The value.
    pub fn into_value(self) -> T {
        self.value
    }
}

tokio::task_local! {
    static OBSERVED: Cell<Option<Disposition>>;
    static CURRENT_EPOCH: u64;
}

/// Runs `future` and reports whether the idempotent call it made ran or replayed.
///
/// `#[idempotent]` functions return the plain value, so a caller that needs to know (to set a
/// header, to count replays) wraps the call. When `future` makes several idempotent calls, the
/// one that finished last is reported; `None` means it made none.
///
/// ```
/// use idempotent_core::{Disposition, Error, idempotent, observe};
///
/// #[idempotent(key = "id", namespace = "docs.observe")]
/// async fn create(id: u64) -> Result<u64, Error> {
///     Ok(id * 2)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let (first, how) = observe(create(7)).await;
/// assert_eq!((first?, how), (14, Some(Disposition::Executed)));
/// let (second, how) = observe(create(7)).await;
/// assert_eq!((second?, how), (14, Some(Disposition::Replayed)));
/// # Ok(())
/// # }
/// ```
pub async fn observe<F: Future>(future: F) -> (F::Output, Option<Disposition>) {
    OBSERVED
        .scope(Cell::new(None), async move {
            let output = future.await;
            (output, OBSERVED.with(Cell::get))
        })
        .await
}

/// The fencing token of the claim the current idempotent body runs under, if any.
///
/// The epoch grows with every claim on a record, so a downstream system that remembers the
/// highest epoch it has seen per key can refuse writes from a worker whose lease was taken over.
pub fn current_epoch() -> Option<u64> {
    CURRENT_EPOCH.try_with(|epoch| *epoch).ok()
}

fn report(disposition: Disposition) {
    let _ = OBSERVED.try_with(|cell| cell.set(Some(disposition)));
}

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
    store: &'a dyn IdempotencyStore,
    scope: &'a str,
    key: &'a str,
    fingerprint: Fingerprint,
    options: CallOptions,
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

    /// Like [`run`](Self::run), but when [`CallOptions::cache_errors`] is set an `Err` is
    /// stored and replayed too.
    pub async fn run_caching_errors<T, E, F>(self, body: F) -> Result<Outcome<T>, E>
    where
        F: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: From<Error> + Serialize + DeserializeOwned,
    {
        if self.options.cache_errors {
            self.execute::<T, E, F, OkAndErr>(body).await
        } else {
            self.execute::<T, E, F, OkOnly>(body).await
        }
    }

    async fn execute<T, E, F, C>(self, body: F) -> Result<Outcome<T>, E>
    where
        F: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        C: Codec<T, E>,
    {
        let Call {
            store,
            scope,
            key,
            fingerprint,
            options,
        } = self;
        options.validate()?;
        let request = ClaimRequest {
            scope,
            key,
            fingerprint,
            owner: OwnerId::new(),
            lease: options.lease,
            ttl: options.ttl,
        };

        let lease = match acquire(store, &request, &options).await {
            Ok(Acquired::Lease(lease)) => lease,
            Ok(Acquired::Replay(payload)) => {
                // Reported only once the record decodes: an unreadable one is an error, not a
                // replay.
                let stored = C::decode(scope, &payload)?;
                report(Disposition::Replayed);
                return match stored {
                    Ok(value) => Ok(Outcome {
                        value,
                        disposition: Disposition::Replayed,
                    }),
                    Err(error) => Err(error),
                };
            }
            Err(error @ Error::Store { .. })
                if options.on_store_error == OnStoreError::FailOpen =>
            {
                tracing::warn!(scope, key, %error, "idempotency store unavailable; running unprotected (fail-open)");
                let value = body.await?;
                report(Disposition::Executed);
                return Ok(Outcome {
                    value,
                    disposition: Disposition::Executed,
                });
            }
            Err(error) => return Err(error.into()),
        };

        // From here until the result is encoded, a cancelled or panicking body (or a panic in
        // the result's `Serialize`) releases the key.
        let mut guard = ReleaseOnDrop {
            store,
            lease: &lease,
            armed: true,
        };
        let result = with_heartbeat(
            store,
            &lease,
            options.lease,
            CURRENT_EPOCH.scope(lease.epoch(), body),
        )
        .await;
        report(Disposition::Executed);
        let encoded =
            C::encode(&result).map(|encoded| encoded.and_then(|payload| C::verify(payload)));
        // Encoded: what happens to the claim is decided below. A call dropped while its result
        // is being recorded leaves the claim to the completion on the wire, or to its lease.
        guard.armed = false;

        match encoded {
            Some(Ok(payload)) => {
                if let Err(error) = complete_with_retries(store, &lease, payload, options.ttl).await
                {
                    tracing::warn!(scope, key, epoch = lease.epoch(), %error, "body ran but its result was not recorded");
                    let fail_open = options.on_store_error == OnStoreError::FailOpen
                        && matches!(error, Error::Store { .. });
                    if !fail_open {
                        return Err(error.into());
                    }
                }
            }
            Some(Err(encode_error)) => {
                release_quietly(store, &lease).await;
                return Err(encode_error.into());
            }
            None => release_quietly(store, &lease).await,
        }
        result.map(|value| Outcome {
            value,
            disposition: Disposition::Executed,
        })
    }
}

/// Records the result, trying again after a store failure (see [`COMPLETE_RETRY_PAUSES`]).
/// A `LeaseLost` or any other answer from the store is final.
async fn complete_with_retries(
    store: &dyn IdempotencyStore,
    lease: &Lease,
    payload: Bytes,
    ttl: Duration,
) -> Result<(), Error> {
    let mut pauses = COMPLETE_RETRY_PAUSES.iter();
    loop {
        match store.complete(lease, payload.clone(), ttl).await {
            Err(error @ Error::Store { .. }) => {
                let Some(pause) = pauses.next() else {
                    return Err(error);
                };
                tracing::debug!(scope = lease.scope(), key = lease.key(), %error, "recording the result failed; trying again");
                tokio::time::sleep(*pause).await;
            }
            other => return other,
        }
    }
}

enum Acquired {
    Lease(Lease),
    Replay(Bytes),
}

/// Claims until the key is ours or a stored result can be replayed, waiting out in-flight
/// owners within the wait budget.
async fn acquire(
    store: &dyn IdempotencyStore,
    request: &ClaimRequest<'_>,
    options: &CallOptions,
) -> Result<Acquired, Error> {
    // Read the clock only once a wait begins: most calls never wait.
    let mut started: Option<Instant> = None;
    let budget = options.wait_budget();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match claim_once(store, request).await? {
            Claim::Acquired(lease) => return Ok(Acquired::Lease(lease)),
            Claim::Completed(record) => return Ok(Acquired::Replay(record.payload)),
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
                store
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
    let claim = store.claim(request).await;
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

/// Polls `body` and, alongside it, a heartbeat that extends the lease every `lease / 3`.
async fn with_heartbeat<F: Future>(
    store: &dyn IdempotencyStore,
    lease: &Lease,
    lease_for: Duration,
    body: F,
) -> F::Output {
    // At least `MIN_LEASE / 3`: `Call` refuses shorter leases before it claims.
    let period = lease_for / 3;
    let heartbeat = async {
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match store.extend(lease, lease_for).await {
                Ok(()) => {}
                Err(Error::LeaseLost) => {
                    tracing::warn!(
                        scope = lease.scope(),
                        key = lease.key(),
                        epoch = lease.epoch(),
                        "lease lost while the body runs; its result will not be recorded"
                    );
                    // Nothing left to extend; completion will report LeaseLost.
                    std::future::pending::<()>().await;
                }
                Err(error) => {
                    tracing::warn!(scope = lease.scope(), key = lease.key(), %error, "heartbeat failed; retrying at the next beat");
                }
            }
        }
    };
    let mut body = pin!(body);
    let mut heartbeat = pin!(heartbeat);
    poll_fn(|cx| {
        if let Poll::Ready(output) = body.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        // The heartbeat loops forever, so it never completes and is never polled after
        // completion.
        let _ = heartbeat.as_mut().poll(cx);
        Poll::Pending
    })
    .await
}

async fn release_quietly(store: &dyn IdempotencyStore, lease: &Lease) {
    if let Err(error) = store.release(lease).await {
        tracing::warn!(scope = lease.scope(), key = lease.key(), %error, "could not release the claim; it expires with its lease");
    }
}

struct ReleaseOnDrop<'a> {
    store: &'a dyn IdempotencyStore,
    lease: &'a Lease,
    armed: bool,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.release_in_background(self.lease.clone());
        }
    }
}

/// How a body's result becomes a stored payload and back.
trait Codec<T, E> {
    /// `None`: do not store this result (release the key instead).
    fn encode(result: &Result<T, E>) -> Option<Result<Bytes, Error>>;
    fn decode(scope: &str, payload: &[u8]) -> Result<Result<T, E>, Error>;

    /// Checks that a freshly encoded payload decodes again. A value JSON cannot carry (a NaN
    /// float becomes `null`) would otherwise be stored and then fail every replay until the ttl
    /// ends; this way the caller gets `Error::Encode` and the key is released instead.
    fn verify(payload: Bytes) -> Result<Bytes, Error> {
        match Self::decode("", &payload) {
            Ok(_) => Ok(payload),
            Err(Error::Decode { source, .. }) => Err(Error::Encode {
                source: format!("the result does not decode back from its stored form: {source}")
                    .into(),
            }),
            Err(other) => Err(other),
        }
    }
}

/// Stores successes only.
struct OkOnly;
/// Stores successes and errors.
struct OkAndErr;

fn encode_payload(tag: u8, value: &impl Serialize) -> Result<Bytes, Error> {
    crate::lossless::check(value).map_err(|source| Error::Encode {
        source: source.into(),
    })?;
    let mut buffer = BytesMut::with_capacity(64).writer();
    buffer.get_mut().put_u8(tag);
    serde_json::to_writer(&mut buffer, value).map_err(|source| Error::Encode {
        source: source.into(),
    })?;
    Ok(buffer.into_inner().freeze())
}

fn decode_json<V: DeserializeOwned>(scope: &str, json: &[u8]) -> Result<V, Error> {
    serde_json::from_slice(json).map_err(|source| Error::decode(scope, source))
}

impl<T: Serialize + DeserializeOwned, E> Codec<T, E> for OkOnly {
    fn encode(result: &Result<T, E>) -> Option<Result<Bytes, Error>> {
        match result {
            Ok(value) => Some(encode_payload(PAYLOAD_OK_V1, value)),
            Err(_) => None,
        }
    }

    fn decode(scope: &str, payload: &[u8]) -> Result<Result<T, E>, Error> {
        match payload.split_first() {
            Some((&PAYLOAD_OK_V1, json)) => decode_json(scope, json).map(Ok),
            Some((&PAYLOAD_ERR_V1, _)) => Err(Error::decode(
                scope,
                "the record holds a cached error, but this call does not cache errors",
            )),
            Some((tag, _)) => Err(Error::decode(
                scope,
                format!("unknown payload format {tag:#04x}"),
            )),
            None => Err(Error::decode(scope, "empty payload")),
        }
    }
}

impl<T, E> Codec<T, E> for OkAndErr
where
    T: Serialize + DeserializeOwned,
    E: Serialize + DeserializeOwned,
{
    fn encode(result: &Result<T, E>) -> Option<Result<Bytes, Error>> {
        Some(match result {
            Ok(value) => encode_payload(PAYLOAD_OK_V1, value),
            Err(error) => encode_payload(PAYLOAD_ERR_V1, error),
        })
    }

    fn decode(scope: &str, payload: &[u8]) -> Result<Result<T, E>, Error> {
        match payload.split_first() {
            Some((&PAYLOAD_ERR_V1, json)) => decode_json(scope, json).map(Err),
            _ => <OkOnly as Codec<T, E>>::decode(scope, payload),
        }
    }
}
