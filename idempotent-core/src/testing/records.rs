//! One record by hand: `inspect` reports each state, `forget` makes the next call run again,
//! refuses a live lease unless forced, and never lets an epoch repeat.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::{Conformance, LONG};
use crate::Call;
use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{ClaimRequest, Forget, IdempotencyStore, Lease, OwnerId, RecordState};

impl Conformance {
    async fn inspect(&self, scope: &str, key: &str) -> RecordState {
        match self.store.inspect(scope, key).await {
            Ok(state) => state,
            Err(error) => panic!("inspect failed: {error} ({error:?})"),
        }
    }

    async fn forget(&self, scope: &str, key: &str, mode: Forget) -> RecordState {
        match self.store.forget(scope, key, mode).await {
            Ok(state) => state,
            Err(error) => panic!("forget ({mode:?}) failed: {error} ({error:?})"),
        }
    }

    /// A record that was given up is released (keeping the claim's epoch), or absent in a
    /// store that removes such records; anything else is a failure.
    fn assert_given_up(state: &RecordState, epoch: u64, what: &str) {
        match state {
            RecordState::Absent => {}
            RecordState::Released { epoch: kept, .. } => {
                assert_eq!(*kept, epoch, "{what}: a released record keeps its epoch");
            }
            other => panic!("{what}: expected a released or absent record, got {other:?}"),
        }
    }

    /// `inspect` reports a key's record in each state, with its owner, epoch, fingerprint and
    /// times left, and changes nothing.
    pub async fn inspect_reports_each_state(&self) {
        let scope = self.scope("inspect");
        assert_eq!(self.inspect(&scope, "k").await, RecordState::Absent);
        let owner = OwnerId::new();
        let lease = self.acquire(&self.request(&scope, "k", owner)).await;
        match self.inspect(&scope, "k").await {
            RecordState::InProgress {
                owner: holder,
                epoch,
                fingerprint,
                lease_left,
                expires_in,
            } => {
                assert_eq!(holder, owner, "the holder");
                assert_eq!(epoch, lease.epoch(), "the claim's epoch");
                assert_eq!(fingerprint, Fingerprint::of_bytes(b"request"));
                assert!(
                    lease_left > Duration::ZERO && lease_left <= LONG,
                    "lease left {lease_left:?} of {LONG:?}"
                );
                assert!(
                    expires_in >= lease_left && expires_in <= LONG,
                    "expires in {expires_in:?}"
                );
            }
            other => panic!("a claimed key must be in progress, got {other:?}"),
        }
        // Inspecting is not claiming: the holder still holds the key.
        self.complete(&lease, b"\x01result", LONG).await;
        match self.inspect(&scope, "k").await {
            RecordState::Completed {
                epoch,
                fingerprint,
                payload,
                expires_in,
            } => {
                assert_eq!(epoch, lease.epoch(), "the completing claim's epoch");
                assert_eq!(fingerprint, Fingerprint::of_bytes(b"request"));
                assert_eq!(&payload[..], b"\x01result", "the stored payload");
                assert!(
                    expires_in > Duration::ZERO && expires_in <= LONG,
                    "expires in {expires_in:?}"
                );
            }
            other => panic!("a completed key must be completed, got {other:?}"),
        }
        let released = self
            .acquire(&self.request(&scope, "released", OwnerId::new()))
            .await;
        if let Err(error) = self.store.release(&released).await {
            panic!("release by the owner failed: {error} ({error:?})");
        }
        let state = self.inspect(&scope, "released").await;
        Self::assert_given_up(&state, released.epoch(), "after a release");
    }

    /// A record past its ttl is absent to `inspect`, as it is to a claim.
    pub async fn inspect_reports_an_expired_record_absent(&self) {
        let scope = self.scope("inspect-expired");
        let lease = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ttl: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        self.complete(&lease, b"\x01done", self.short_lease).await;
        tokio::time::sleep(self.short_lease * 2).await;
        assert_eq!(self.inspect(&scope, "k").await, RecordState::Absent);
        assert_eq!(
            self.forget(&scope, "k", Forget::UnlessLeased).await,
            RecordState::Absent,
            "forgetting an expired record finds nothing to forget"
        );
    }

    /// Forgetting a completed record returns it, and the next claim acquires the key with a
    /// higher epoch; forgetting it again, or forgetting an absent key, changes nothing.
    pub async fn forget_lets_the_next_claim_acquire(&self) {
        let scope = self.scope("forget");
        assert_eq!(
            self.forget(&scope, "k", Forget::UnlessLeased).await,
            RecordState::Absent
        );
        let first = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        self.complete(&first, b"\x01bad", LONG).await;
        match self.forget(&scope, "k", Forget::UnlessLeased).await {
            RecordState::Completed { epoch, payload, .. } => {
                assert_eq!(epoch, first.epoch());
                assert_eq!(&payload[..], b"\x01bad");
            }
            other => panic!("forget must return the completed record, got {other:?}"),
        }
        let state = self.inspect(&scope, "k").await;
        Self::assert_given_up(&state, first.epoch(), "after a forget");
        let again = self.forget(&scope, "k", Forget::EvenIfLeased).await;
        Self::assert_given_up(&again, first.epoch(), "forgetting again");
        let next = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(
            next.epoch() > first.epoch(),
            "the epoch after a forget ({}) must exceed the forgotten one ({})",
            next.epoch(),
            first.epoch()
        );
        self.complete(&next, b"\x01good", LONG).await;
        match self.inspect(&scope, "k").await {
            RecordState::Completed { payload, epoch, .. } => {
                assert_eq!(&payload[..], b"\x01good");
                assert_eq!(epoch, next.epoch());
            }
            other => panic!("the new result must be stored, got {other:?}"),
        }
    }

    /// A live lease makes `Forget::UnlessLeased` refuse with `Error::InFlight` and change
    /// nothing; `Forget::EvenIfLeased` forgets it, the holder is fenced off (`LeaseLost` on
    /// complete, release and extend), and the next claim acquires with a higher epoch.
    pub async fn forget_refuses_a_live_lease_unless_forced(&self) {
        let scope = self.scope("forget-live");
        let holder = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        let refused = self.store.forget(&scope, "k", Forget::UnlessLeased).await;
        match refused {
            Err(Error::InFlight { retry_after }) => assert!(
                retry_after > Duration::ZERO && retry_after <= LONG,
                "retry after {retry_after:?}"
            ),
            other => panic!("forgetting a live lease must be refused, got {other:?}"),
        }
        assert!(
            matches!(self.inspect(&scope, "k").await, RecordState::InProgress { epoch, .. } if epoch == holder.epoch()),
            "a refused forget changes nothing"
        );
        if let Err(error) = self.store.extend(&holder, LONG).await {
            panic!("the holder keeps its lease after a refused forget: {error} ({error:?})");
        }

        match self.forget(&scope, "k", Forget::EvenIfLeased).await {
            RecordState::InProgress { epoch, .. } => assert_eq!(epoch, holder.epoch()),
            other => panic!("a forced forget must return the claim, got {other:?}"),
        }
        Self::assert_fenced(&*self.store, &holder).await;
        let next = self
            .acquire(&self.request(&scope, "k", OwnerId::new()))
            .await;
        assert!(
            next.epoch() > holder.epoch(),
            "the epoch after a forced forget ({}) must exceed the holder's ({})",
            next.epoch(),
            holder.epoch()
        );
        // The fenced holder cannot touch the new claim either.
        Self::assert_fenced(&*self.store, &holder).await;
        assert!(
            matches!(self.inspect(&scope, "k").await, RecordState::InProgress { epoch, .. } if epoch == next.epoch())
        );
    }

    async fn assert_fenced(store: &dyn IdempotencyStore, holder: &Lease) {
        let complete = store
            .complete(holder, Bytes::from_static(b"\x01late"), LONG)
            .await;
        assert!(
            matches!(complete, Err(Error::LeaseLost)),
            "complete: {complete:?}"
        );
        let release = store.release(holder).await;
        assert!(
            matches!(release, Err(Error::LeaseLost)),
            "release: {release:?}"
        );
        let extend = store.extend(holder, LONG).await;
        assert!(
            matches!(extend, Err(Error::LeaseLost)),
            "extend: {extend:?}"
        );
    }

    /// A claim whose lease ran out holds nothing: `Forget::UnlessLeased` forgets it.
    pub async fn forget_takes_a_lapsed_lease_without_force(&self) {
        let scope = self.scope("forget-lapsed");
        let lapsed = self
            .acquire(&ClaimRequest {
                lease: self.short_lease,
                ..self.request(&scope, "k", OwnerId::new())
            })
            .await;
        tokio::time::sleep(self.short_lease * 2).await;
        match self.forget(&scope, "k", Forget::UnlessLeased).await {
            RecordState::InProgress {
                epoch, lease_left, ..
            } => {
                assert_eq!(epoch, lapsed.epoch());
                assert_eq!(
                    lease_left,
                    Duration::ZERO,
                    "a lapsed lease has nothing left"
                );
            }
            other => panic!("forget must return the lapsed claim, got {other:?}"),
        }
        Self::assert_fenced(&*self.store, &lapsed).await;
    }

    /// Through the engine: after a forget, the same call runs its body again, even after the
    /// result was replayed (a store with a cache must not replay the forgotten copy).
    pub async fn forgotten_result_is_not_replayed(&self) {
        let scope = self.scope("forget-call");
        let runs = AtomicUsize::new(0);
        let call = |value: u32| {
            let runs = &runs;
            Call::new(&*self.store, &scope, "k")
                .fingerprint(Fingerprint::of_bytes(b"request"))
                .run(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, Error>(value)
                })
        };
        for attempt in 0..3 {
            let outcome = call(1)
                .await
                .unwrap_or_else(|error| panic!("call {attempt}: {error}"));
            assert_eq!(outcome.value, 1);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one run, then replays");
        self.forget(&scope, "k", Forget::UnlessLeased).await;
        let outcome = call(2)
            .await
            .unwrap_or_else(|error| panic!("call after forget: {error}"));
        assert_eq!(outcome.value, 2, "the body runs again after a forget");
        assert!(
            !outcome.is_replayed(),
            "the call after a forget runs, not replays"
        );
        let replay = call(3)
            .await
            .unwrap_or_else(|error| panic!("replay of the new result: {error}"));
        assert_eq!(replay.value, 2, "the new result is replayed");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
