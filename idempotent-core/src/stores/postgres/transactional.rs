//! Transactional mode: the call's result recorded in the same transaction as the body's
//! writes ([`TransactionalCall`]), or by hand ([`PostgresStore::complete_in`]).

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgConnection;

#[cfg(doc)]
use super::PostgresStoreBuilder;
use super::connection::store_error;
use super::{BACKEND, PostgresStore};
use crate::engine::record::{Recorder, release_quietly};
use crate::engine::trace::store_op;
use crate::engine::{Call, CallOptions, OnStoreError, Outcome};
use crate::error::Error;
use crate::key::Fingerprint;
use crate::store::{IdempotencyStore, Lease};

impl PostgresStore {
    /// Records `payload` as the completed result of `lease`, inside the caller's transaction.
    ///
    /// Pass the transaction (`&mut tx` for a `sqlx::Transaction`); the result becomes visible,
    /// and replayable, only when that transaction commits, together with everything else it
    /// wrote. Compare-and-set like [`IdempotencyStore::complete`]: if the claim was taken over
    /// (or released), nothing is written and the call fails with [`Error::LeaseLost`], and the
    /// caller must roll back. The update locks the record's row until the transaction ends, so
    /// commit soon after. The transaction should run at `READ COMMITTED` (PostgreSQL's
    /// default): at a stricter level, a heartbeat that extended the lease after the
    /// transaction's snapshot makes this update fail with a serialization error
    /// ([`Error::Store`]).
    ///
    /// The statement is bounded by [`PostgresStoreBuilder::timeout`]; after a timeout
    /// ([`Error::Store`]) the connection may still be waiting for its answer, so roll back
    /// (or drop) the transaction.
    ///
    /// A hand-rolled flow has no heartbeat: the lease must outlast the work, or the caller
    /// [`extend`](IdempotencyStore::extend)s it (on the pool, not in the transaction). For
    /// [`Call`] and [`TransactionalCall`] to replay the record, encode the value with
    /// [`payload::encode_ok`](crate::payload::encode_ok).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use idempotent_core::{IdempotencyStore, PostgresStore};
    /// use idempotent_core::key::Fingerprint;
    /// use idempotent_core::payload::encode_ok;
    /// use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
    ///
    /// # async fn run(store: PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let request = ClaimRequest {
    ///     scope: "orders.ship",
    ///     key: "order-17",
    ///     fingerprint: Fingerprint::NONE,
    ///     owner: OwnerId::new(),
    ///     lease: Duration::from_secs(30),
    ///     ttl: Duration::from_secs(86_400),
    /// };
    /// if let Claim::Acquired(lease) = store.claim(&request).await? {
    ///     let mut tx = store.pool().begin().await?;
    ///     // ... the work, written through `&mut *tx` ...
    ///     let payload = encode_ok("shipped")?;
    ///     match store.complete_in(&mut tx, &lease, payload, request.ttl).await {
    ///         Ok(()) => tx.commit().await?,
    ///         Err(error) => {
    ///             tx.rollback().await?;
    ///             return Err(error.into());
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn complete_in(
        &self,
        transaction: &mut PgConnection,
        lease: &Lease,
        payload: Bytes,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.bounded(
            "completion",
            self.complete_on(transaction, lease, payload, ttl),
        )
        .await
    }

    /// Starts a call whose body runs inside a database transaction that also records its
    /// result (transactional mode). See [`TransactionalCall`].
    pub fn transactional<'a>(&'a self, scope: &'a str, key: &'a str) -> TransactionalCall<'a> {
        TransactionalCall {
            store: self,
            call: Call::new(self, scope, key),
        }
    }
}

/// A call whose body runs inside a PostgreSQL transaction that also records its result
/// (transactional mode), made with [`PostgresStore::transactional`].
///
/// On an annotated function, `#[idempotent(store = ..., transaction = "tx")]` makes this call
/// with the attribute's key, fingerprint and scope, and gives the body the transaction as
/// `tx`; by hand, the key and the fingerprint are yours to build:
///
/// ```no_run
/// use idempotent_core::key::{Fingerprint, IdempotencyKey};
/// use idempotent_core::stores::postgres::sqlx;
/// use idempotent_core::{Error, PostgresStore};
///
/// #[derive(Debug)]
/// enum ShipError {
///     /// The order was shipped by another request: a unique violation, not a store failure.
///     AlreadyShipped,
///     Database(sqlx::Error),
///     Idempotency(Error),
/// }
///
/// impl From<Error> for ShipError {
///     fn from(error: Error) -> Self {
///         ShipError::Idempotency(error)
///     }
/// }
///
/// impl From<sqlx::Error> for ShipError {
///     fn from(error: sqlx::Error) -> Self {
///         match &error {
///             sqlx::Error::Database(database) if database.is_unique_violation() => {
///                 ShipError::AlreadyShipped
///             }
///             _ => ShipError::Database(error),
///         }
///     }
/// }
///
/// # async fn run(store: PostgresStore) -> Result<(), ShipError> {
/// let key = IdempotencyKey::builder("orders.ship").part(&17i64).finish();
/// let shipment = store
///     .transactional("orders.ship", key.as_str())
///     .fingerprint(Fingerprint::builder().field("carrier", "ups").finish())
///     .run(async |tx| {
///         sqlx::query("INSERT INTO shipments (order_id, carrier) VALUES (17, 'ups')")
///             .execute(&mut *tx)
///             .await?;
///         Ok::<_, ShipError>(String::from("shipment-17"))
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// The body's error type is yours: a failed statement is what your `From<sqlx::Error>` (or
/// your own `map_err`) makes of it. Mapping it into [`Error::Store`] instead would report a
/// unique violation, or any other answer of your own SQL, as the store being unavailable
/// (retryable, an HTTP 503). [`Error::Store`] is for the store's own failures: the claim,
/// `BEGIN`, recording the result, `COMMIT`.
///
/// A `&mut PgConnection` the body takes from elsewhere (an argument of an annotated function
/// left out with `skip`) is not this transaction: writes through it do not commit with the
/// record.
///
/// What happens:
/// 1. The key is claimed on the pool, outside the transaction (autocommit), so concurrent
///    duplicates see the claim at once and wait or are rejected, as with [`Call`]. A completed
///    record is replayed without opening a transaction.
/// 2. A transaction is begun on the pool and the body runs with it. The claim is heartbeated
///    on another connection while the body runs, as with [`Call`].
/// 3. On `Ok`, the result is written with the compare-and-set update
///    ([`PostgresStore::complete_in`]) inside the same transaction, which then commits. If the
///    claim was taken over meanwhile, the update matches no row, the call fails with
///    [`Error::LeaseLost`] and the transaction rolls back. On `Err`, the transaction rolls
///    back and the key is released, so a retry runs again. A cancelled or panicking body
///    drops the transaction (rolled back) and releases the key.
///
/// What is guaranteed, while the record lives (its ttl):
/// - The body's writes through the transaction and the completed record commit together or
///   not at all. Once they commit, no duplicate runs the body again; every duplicate replays
///   the result. So the body's database effects happen exactly once, even across crashes and
///   lease takeovers: a worker that was taken over (paused past its lease) can still run its
///   body, but its commit is refused and its writes are rolled back.
/// - Two workers can run the body at the same time only after a takeover; at most one of them
///   commits. Their writes may still contend for locks while they run.
///
/// What is not:
/// - Effects outside this transaction (HTTP calls, other databases, writes on other
///   connections) are at-least-once, as with [`Call`].
/// - If the connection fails during `COMMIT`, the outcome is unknown to the client: the call
///   fails with [`Error::Store`], and the record is either completed (the commit happened;
///   retries replay) or still claimed (it did not; a retry runs the body after the lease
///   expires). Either way the effects happened at most once.
/// - The call always fails closed: [`OnStoreError::FailOpen`] is ignored, since a result that
///   could not be recorded would also have been rolled back.
/// - The body's transaction holds one pool connection while the body runs.
/// - The transaction uses the pool's default isolation level; see
///   [`PostgresStore::complete_in`] for why it should be `READ COMMITTED`.
#[derive(Clone, Copy)]
pub struct TransactionalCall<'a> {
    store: &'a PostgresStore,
    /// The call on the store; only where its result is recorded differs.
    call: Call<'a>,
}

impl fmt::Debug for TransactionalCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalCall")
            .field("table", &self.store.table())
            .field("call", &self.call)
            .finish()
    }
}

impl<'a> TransactionalCall<'a> {
    /// The request fingerprint: a retry with a different one fails with
    /// [`Error::PayloadMismatch`].
    pub fn fingerprint(mut self, fingerprint: Fingerprint) -> Self {
        self.call = self.call.fingerprint(fingerprint);
        self
    }

    /// Replaces the options (ttl, lease, waiting). Errors are never cached and the call always
    /// fails closed, whatever the options say.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.call = self.call.options(options);
        self
    }

    /// Runs `body` with an open transaction at most once per key (see the type's docs), or
    /// replays the stored value of the call that ran it.
    pub async fn run<T, E, F>(self, body: F) -> Result<Outcome<T>, E>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
        T: Serialize + DeserializeOwned,
        E: From<Error>,
    {
        let TransactionalCall { store, call } = self;
        let recorder = InTransaction {
            store,
            pending: Mutex::new(None),
        };
        // A result that could not be recorded was rolled back with its transaction, so there
        // is nothing for fail-open to return. And `run`, never `run_caching_errors`: an `Err`
        // rolls the body's writes back, so it must not be replayed as if they had happened.
        let options = call.options.on_store_error(OnStoreError::FailClosed);
        call.options(options)
            .recorder(&recorder)
            .run(async {
                let mut tx = store
                    .bounded("transaction begin", async {
                        store.inner.pool.begin().await.map_err(store_error)
                    })
                    .await?;
                match body(&mut tx).await {
                    Ok(value) => {
                        // Committed by the recorder, together with the record.
                        recorder.hold(tx);
                        Ok(value)
                    }
                    Err(error) => {
                        rollback(store, tx).await;
                        Err(error)
                    }
                }
            })
            .await
    }
}

type PgTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// Where a transactional call records its result: in the body's transaction, which it then
/// commits. Claims, heartbeats and releases go to the store's pool as for any call.
struct InTransaction<'a> {
    store: &'a PostgresStore,
    /// The body's transaction, between the body's `Ok` and the record phase. Dropped with
    /// the recorder (a cancelled or panicking call), it rolls back.
    pending: Mutex<Option<PgTransaction>>,
}

impl InTransaction<'_> {
    fn hold(&self, tx: PgTransaction) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    }

    fn take(&self) -> Option<PgTransaction> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[async_trait]
impl Recorder for InTransaction<'_> {
    /// `complete_in` and commit, once: a transaction cannot be tried again, so unlike the
    /// store's own recorder this one does not retry a store error.
    async fn record(
        &self,
        store: &dyn IdempotencyStore,
        lease: &Lease,
        payload: Bytes,
        ttl: Duration,
    ) -> Result<(), Error> {
        let Some(mut tx) = self.take() else {
            return Err(Error::store(
                BACKEND,
                "no open transaction to record the result in",
            ));
        };
        // Timed and counted like any completion (the record and the commit are one).
        store_op(store, "complete", async {
            match self.store.complete_in(&mut tx, lease, payload, ttl).await {
                Ok(()) => {
                    self.store
                        .bounded("commit", async { tx.commit().await.map_err(store_error) })
                        .await
                }
                Err(error) => {
                    rollback(self.store, tx).await;
                    Err(error)
                }
            }
        })
        .await
    }

    /// Rolls the body's writes back, then releases the claim so a retry runs again.
    async fn discard(&self, store: &dyn IdempotencyStore, lease: &Lease) {
        if let Some(tx) = self.take() {
            rollback(self.store, tx).await;
        }
        release_quietly(store, lease).await;
    }
}

/// Rolls back within the store's timeout. If that fails, the server rolls the transaction back
/// on its own when the connection ends (or sqlx does, before it reuses the connection).
async fn rollback(store: &PostgresStore, tx: PgTransaction) {
    let rolled_back = store
        .bounded("rollback", async {
            tx.rollback().await.map_err(store_error)
        })
        .await;
    if let Err(error) = rolled_back {
        tracing::debug!(%error, "rollback failed");
    }
}
