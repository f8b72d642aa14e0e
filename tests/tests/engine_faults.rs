//! The engine around a store that misbehaves at one step: a claim whose answer never arrives,
//! a completion that fails or whose answer is lost, a result that panics while it is
//! serialized, a heartbeat that must keep a long body's claim.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use idempotent_core::store::{Claim, ClaimRequest, Forget, Lease, OwnerId, RecordState};
use idempotent_core::{
    Call, CallOptions, Error, IdempotencyStore, MIN_LEASE, MemoryStore, OnStoreError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

const SCOPE: &str = "engine.faults";

/// What [`Faulty`] does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// The claim is applied, then its answer never arrives (the call hangs in `claim`).
    ClaimAnswerLost,
    /// The first `n` completions fail with `Error::Store` before reaching the store.
    CompleteFails(usize),
    /// The first completion is applied, but its answer is lost (`Error::Store`).
    CompleteAnswerLost,
    /// Every completion finds the claim taken over.
    CompleteLeaseLost,
}

/// A `MemoryStore` with one fault, counting what the engine asks of it.
struct Faulty {
    inner: MemoryStore,
    fault: Fault,
    completes: AtomicUsize,
    extends: AtomicUsize,
    releases: AtomicUsize,
    claim_applied: Notify,
}

impl Faulty {
    fn new(fault: Fault) -> Arc<Self> {
        Arc::new(Faulty {
            inner: MemoryStore::new(),
            fault,
            completes: AtomicUsize::new(0),
            extends: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
            claim_applied: Notify::new(),
        })
    }
}

fn store_down() -> Error {
    Error::store("faulty", "connection reset")
}

#[async_trait]
impl IdempotencyStore for Faulty {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let claim = self.inner.claim(request).await?;
        if self.fault == Fault::ClaimAnswerLost && matches!(claim, Claim::Acquired(_)) {
            self.claim_applied.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(claim)
    }

    async fn complete(&self, lease: &Lease, payload: Bytes, ttl: Duration) -> Result<(), Error> {
        let attempt = self.completes.fetch_add(1, Ordering::SeqCst);
        match self.fault {
            Fault::CompleteFails(failures) if attempt < failures => Err(store_down()),
            Fault::CompleteLeaseLost => Err(Error::LeaseLost),
            Fault::CompleteAnswerLost if attempt == 0 => {
                self.inner.complete(lease, payload, ttl).await?;
                Err(store_down())
            }
            _ => self.inner.complete(lease, payload, ttl).await,
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        self.inner.release(lease).await
    }

    async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
        self.extends.fetch_add(1, Ordering::SeqCst);
        self.inner.extend(lease, lease_for).await
    }

    fn release_in_background(&self, lease: Lease) {
        self.releases.fetch_add(1, Ordering::SeqCst);
        self.inner.release_in_background(lease);
    }

    fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
        self.inner.abandon_claim_in_background(request);
    }

    async fn purge_expired(&self) -> Result<u64, Error> {
        self.inner.purge_expired().await
    }

    async fn inspect(&self, scope: &str, key: &str) -> Result<RecordState, Error> {
        self.inner.inspect(scope, key).await
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> Result<RecordState, Error> {
        self.inner.forget(scope, key, mode).await
    }
}

fn long_lease() -> CallOptions {
    CallOptions::new()
        .lease(Duration::from_secs(30))
        .on_in_flight(idempotent_core::OnInFlight::Reject)
}

/// Claims `key` directly on the store, as another caller would.
async fn probe(store: &dyn IdempotencyStore, key: &str) -> Claim {
    store
        .claim(&support::request(SCOPE, key, OwnerId::new()))
        .await
        .unwrap()
}

#[tokio::test]
async fn call_cancelled_while_its_claim_is_on_the_wire_does_not_hold_the_key_for_a_lease() {
    let store = Faulty::new(Fault::ClaimAnswerLost);
    let call = {
        let store = store.clone();
        tokio::spawn(async move {
            Call::new(&*store, SCOPE, "cancelled")
                .options(long_lease())
                .run(async { Ok::<_, Error>(1u8) })
                .await
        })
    };
    // The store granted the claim; the caller gives up before the answer arrives.
    store.claim_applied.notified().await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());

    // Without giving the claim up, this would be in flight for the whole 30 s lease.
    match probe(&store.inner, "cancelled").await {
        Claim::Acquired(_) => {}
        other => panic!("the cancelled call's claim must be given up, got {other:?}"),
    }
}

#[tokio::test]
async fn transient_store_error_on_complete_is_retried_and_the_result_recorded() {
    let store = Faulty::new(Fault::CompleteFails(2));
    let runs = AtomicUsize::new(0);
    let body = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Error>(String::from("done"))
    };
    let call = Call::new(&*store, SCOPE, "flaky-complete").options(long_lease());
    let first = call.run(body()).await.unwrap();
    assert!(!first.is_replayed());
    assert_eq!(store.completes.load(Ordering::SeqCst), 3);
    let again = call.run(body()).await.unwrap();
    assert!(again.is_replayed(), "the retried completion was recorded");
    assert_eq!(again.value, "done");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn completion_whose_answer_was_lost_is_retried_without_an_error() {
    let store = Faulty::new(Fault::CompleteAnswerLost);
    let call = Call::new(&*store, SCOPE, "lost-answer").options(long_lease());
    let first = call.run(async { Ok::<_, Error>(7u32) }).await;
    assert_eq!(first.unwrap().value, 7, "the repeated completion succeeds");
    let again = call.run(async { Ok::<_, Error>(8u32) }).await.unwrap();
    assert!(again.is_replayed());
    assert_eq!(again.value, 7);
}

#[tokio::test]
async fn completion_that_keeps_failing_fails_closed_and_fail_open_returns_the_value() {
    let closed = Faulty::new(Fault::CompleteFails(usize::MAX));
    let result = Call::new(&*closed, SCOPE, "down")
        .options(long_lease())
        .run(async { Ok::<_, Error>(1u8) })
        .await;
    assert!(matches!(result, Err(Error::Store { .. })), "{result:?}");
    assert_eq!(
        closed.completes.load(Ordering::SeqCst),
        3,
        "one try, two retries"
    );

    let open = Faulty::new(Fault::CompleteFails(usize::MAX));
    let result = Call::new(&*open, SCOPE, "down")
        .options(long_lease().on_store_error(OnStoreError::FailOpen))
        .run(async { Ok::<_, Error>(1u8) })
        .await;
    assert_eq!(
        result.unwrap().value,
        1,
        "fail-open returns what the body returned"
    );

    // A lost lease is final in either mode: the result was not recorded and must not be
    // returned as if it were.
    let taken_over = Faulty::new(Fault::CompleteLeaseLost);
    let result = Call::new(&*taken_over, SCOPE, "taken-over")
        .options(long_lease().on_store_error(OnStoreError::FailOpen))
        .run(async { Ok::<_, Error>(1u8) })
        .await;
    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
    assert_eq!(
        taken_over.completes.load(Ordering::SeqCst),
        1,
        "not retried"
    );
}

/// A result whose `Serialize` panics.
#[derive(Deserialize)]
struct Explodes;

impl Serialize for Explodes {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("serializer bug");
    }
}

#[tokio::test]
async fn panic_in_the_results_serialize_releases_the_key() {
    let store = Arc::new(MemoryStore::new());
    let task = {
        let store = store.clone();
        tokio::spawn(async move {
            Call::new(&*store, SCOPE, "explodes")
                .options(long_lease())
                .run(async { Ok::<_, Error>(Explodes) })
                .await
                .map(|_| ())
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    match probe(&*store, "explodes").await {
        Claim::Acquired(_) => {}
        other => panic!("a panicking serializer must release the key, got {other:?}"),
    }
}

#[tokio::test]
async fn zero_lease_is_refused_before_anything_is_claimed() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let result = Call::new(&store, SCOPE, "zero")
        .options(CallOptions::new().lease(Duration::ZERO))
        .run(async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>(())
        })
        .await;
    match result {
        Err(Error::LeaseTooShort { lease, minimum }) => {
            assert_eq!(lease, Duration::ZERO);
            assert_eq!(minimum, MIN_LEASE);
        }
        other => panic!("a zero lease must be refused, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(store.is_empty(), "nothing was claimed");
}

#[tokio::test]
async fn lease_below_the_minimum_is_refused_and_the_minimum_is_accepted() {
    let store = MemoryStore::new();
    let just_below = MIN_LEASE - Duration::from_nanos(1);
    let refused = Call::new(&store, SCOPE, "short")
        .options(CallOptions::new().lease(just_below))
        .run(async { Ok::<_, Error>(()) })
        .await;
    assert!(
        matches!(refused, Err(Error::LeaseTooShort { lease, .. }) if lease == just_below),
        "{refused:?}"
    );
    assert!(CallOptions::new().lease(just_below).validate().is_err());
    let accepted = Call::new(&store, SCOPE, "short")
        .options(CallOptions::new().lease(MIN_LEASE))
        .run(async { Ok::<_, Error>(()) })
        .await;
    assert!(accepted.is_ok(), "{accepted:?}");
    assert_eq!(MIN_LEASE, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_extends_the_lease_every_third_of_it() {
    let store = Faulty::new(Fault::None);
    Call::new(&*store, SCOPE, "heartbeat")
        .options(CallOptions::new().lease(Duration::from_secs(3)))
        .run(async {
            tokio::time::sleep(Duration::from_millis(10_500)).await;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    // A beat at 1 s, 2 s, ... 10 s: ten extensions over a 10.5 s body.
    assert_eq!(store.extends.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_recorded_call_releases_nothing_and_a_released_one_releases_once() {
    let store = Faulty::new(Fault::None);
    Call::new(&*store, SCOPE, "recorded")
        .options(long_lease())
        .run(async { Ok::<_, Error>(1u8) })
        .await
        .unwrap();
    assert_eq!(store.releases.load(Ordering::SeqCst), 0);
    let failed = Call::new(&*store, SCOPE, "failed")
        .options(long_lease())
        .run(async {
            Err::<u8, _>(Error::InvalidInput {
                reason: "no".into(),
            })
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(
        store.releases.load(Ordering::SeqCst),
        1,
        "released by the call, once"
    );
}

#[test]
fn call_debug_names_the_scope_and_options_but_not_the_store() {
    let store = MemoryStore::new();
    let call = Call::new(&store, SCOPE, "k");
    let debug = format!("{call:?}");
    assert!(
        debug.starts_with("Call { scope: \"engine.faults\", key: \"k\""),
        "{debug}"
    );
    assert!(debug.contains("options: CallOptions"), "{debug}");
}
