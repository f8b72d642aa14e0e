//! Make operations safe to retry: each idempotency key's effect happens once, and every retry
//! gets the first call's result.
//!
//! ```
//! use idempotent_core::{Error, idempotent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
//! struct Receipt {
//!     charge_id: String,
//!     amount: u64,
//! }
//!
//! // One charge per (order_id, action), replayed to every retry for 24 hours. A retry with the
//! // same key but a different `amount` is rejected with `Error::PayloadMismatch`.
//! #[idempotent(key = "order_id, action", ttl = "24h")]
//! async fn charge(order_id: u64, action: &str, amount: u64) -> Result<Receipt, Error> {
//!     Ok(Receipt { charge_id: format!("ch_{order_id}"), amount })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let first = charge(42, "capture", 1_999).await?;
//! let retry = charge(42, "capture", 1_999).await?; // replayed, the body does not run again
//! assert_eq!(first, retry);
//! assert!(matches!(
//!     charge(42, "capture", 5).await,
//!     Err(Error::PayloadMismatch { .. })
//! ));
//! # Ok(())
//! # }
//! ```
//!
//! # Pieces
//!
//! - [`#[idempotent]`](idempotent) on an `async fn` derives a SHA-256 key from the named
//!   arguments and routes the call through an [`IdempotencyStore`].
//! - [`Call`] is the same machinery as a plain API: a store, a key, a fingerprint, options and
//!   a future.
//! - [`MemoryStore`] is the embedded default store; [`set_default_store`] replaces the process
//!   default.
//! - [`KeyPart`](trait@KeyPart) marks the types a key can be built from, and
//!   `#[derive(KeyPart)]` implements it for your structs and enums;
//!   [`generate_idempotency_key`] derives keys compatible with a common Python key function,
//!   so Rust and Python services share keys.
//!
//! # Guarantees
//!
//! One execution per key while the record lives (its ttl), with these limits:
//! - a body that completes its effect and then crashes before the result is recorded runs again
//!   after its lease expires (at-least-once at that edge, as with any store outside the effect's
//!   own transaction);
//! - a body that runs longer than its lease without the heartbeat reaching the store (a paused
//!   process, a partitioned network) can be taken over; the stale owner's result is then
//!   rejected with [`Error::LeaseLost`], and [`current_epoch`] gives it a fencing token to pass
//!   downstream.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "consumer")]
pub mod consumer;
mod engine;
mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod key;
pub mod payload;
pub mod store;
pub mod stores;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::{Arc, OnceLock, RwLock};

pub use crate::engine::{
    Call, CallOptions, Disposition, HeartbeatHook, MIN_LEASE, OnInFlight, OnStoreError, Outcome,
    current_epoch, observe,
};
pub use crate::error::{BoxError, Error};
pub use crate::key::{KeyPart, KeyWriter, generate_idempotency_key};
pub use crate::store::IdempotencyStore;
pub use crate::stores::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "postgres")]
pub use crate::stores::postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use crate::stores::redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use crate::stores::sqlite::{SqliteStore, SqliteStoreBuilder};
#[cfg(feature = "tiered")]
pub use crate::stores::tiered::{TieredStore, TieredStoreBuilder};

/// Makes an `async fn` idempotent: the body runs at most once per key, and every duplicate
/// call gets the first call's result.
///
/// ```
/// use idempotent_core::{Error, idempotent};
///
/// #[idempotent(key = "order_id, action", ttl = "24h")]
/// async fn charge(order_id: u64, action: &str, amount_cents: u64) -> Result<String, Error> {
///     Ok(format!("ch_{order_id}_{action}_{amount_cents}"))
/// }
/// # fn main() {}
/// ```
///
/// The function must return `Result<T, E>` where `T: Serialize + DeserializeOwned` (it is
/// stored and replayed) and `E: From<idempotent_core::Error>` (store failures, in-flight
/// duplicates and payload mismatches are returned through it). Free functions, methods taking
/// `&self`, `&mut self` or `self`, and generic functions are supported.
///
/// The instantiations of a generic function share its keys, and its generic arguments go into
/// the fingerprint: each type parameter (and each `impl Trait` argument's type) by
/// [`core::any::type_name`], each const parameter by its value, lifetimes not at all. A call of
/// another instantiation with the same key, such as `make::<Option<u64>>(3)` after
/// `make::<u64>(3)`, fails with [`Error::PayloadMismatch`] instead of replaying a value of
/// another type. The key leaves them out because `type_name` may change between compiler
/// versions: in the key, an upgrade would run bodies again; in the fingerprint, a retry across
/// the upgrade is a mismatch, which fails safe.
///
/// The value is stored as JSON (`serde_json`), so it must survive a JSON round trip: a value
/// that does not decode back (a NaN float) fails with [`Error::Encode`] and releases the key
/// rather than storing a record no replay could read. JSON also writes `None`, `()` and
/// NaN alike as `null`, so a `Some` holding one of those (`Some(())`, `Some(None)`,
/// `Some(f64::NAN)`) fails with [`Error::Encode`] too: it would replay as `None`.
///
/// # Options
///
/// ## `key = "order_id, action"` (required)
///
/// The arguments that identify the operation, comma separated. Field paths are allowed
/// (`key = "order.id, self.tenant_id"`); calls are not, because a call such as `Utc::now()`
/// returns something new on every retry. Every part must implement
/// [`KeyPart`](trait@KeyPart) (derive it for your own types); timestamps, random values and
/// `HashMap`/`HashSet` are rejected at compile time. The key is SHA-256 over the scope and
/// the parts, in order (see [`key`]).
///
/// An argument the key reads through a field (`order` in `key = "order.id"`) is also fingerprinted
/// whole, so it must implement [`KeyPart`](trait@KeyPart) too: a retry with the same `order.id` but
/// another `order.amount` is then an [`Error::PayloadMismatch`] instead of a replay of a result
/// computed for another order. Name it in `skip` when no other field can change the result. `self`
/// is the exception: it is the service, not the request, and is never fingerprinted, so
/// `self.tenant_id` in the key is all of `self` that counts.
///
/// ```
/// use idempotent_core::{Error, KeyPart, idempotent};
///
/// #[derive(KeyPart)]
/// struct Refund {
///     order_id: u64,
///     amount: u64,
/// }
///
/// #[idempotent(key = "request.order_id")]
/// async fn refund(request: &Refund) -> Result<u64, Error> {
///     Ok(request.amount)
/// }
/// # fn main() {}
/// ```
///
/// ## `ttl = "24h"`
///
/// How long a completed result is replayed. Default `"24h"`. Checked at compile time.
///
/// A duration is one or more whole numbers, each with a unit: `ms`, `s`, `m`, `h` and `d`, or
/// their names, singular or plural (`millisecond`, `second` or `sec`, `minute` or `min`,
/// `hour` or `hr`, `day`). Spaces between a number and its unit and between parts are fine:
/// `"24h"`, `"1h30m"`, `"1 hour 30 minutes"`, `"90 secs"`, `"500ms"`. Units are lowercase.
/// A fraction (`"1.5h"`) or a week (`"2w"`) is a compile error that says what to write
/// instead (`"1h30m"` or `"90m"`; `"14d"`).
///
/// ## `lease = "30s"`
///
/// How long an in-progress claim holds without a heartbeat. While the body runs, the claim is
/// extended every `lease / 3`, so a long body keeps it; if the process dies, a duplicate takes
/// over after `lease`. Default `"30s"`; written like `ttl` (`"30s"`, `"2 minutes"`).
///
/// The shortest lease is `"1s"` ([`MIN_LEASE`]); a shorter one is a compile error. Each renewal
/// must reach the store before the lease runs out, and on a loaded machine a lease of a few
/// milliseconds runs out first: a duplicate would then take over and run the body a second
/// time.
///
/// ## `store = <expr>`
///
/// The [`IdempotencyStore`] to use, evaluated once on every call: a `&MemoryStore` parameter
/// (`store = store`), a field (`store = self.store`, `store = app.pg`), an
/// `Arc<dyn IdempotencyStore>`, a method call (`store = app.store()`). A store, a reference to
/// one and an `Arc` or `Box` of one are all stores; reach into any other smart pointer with
/// `store = &*self.store`. Without it, the process default ([`set_default_store`], else a
/// process-wide [`MemoryStore`]).
///
/// The argument the expression starts from (`store` in `store = store`, `app` in `store = app.pg`
/// or `store = &*app.stores.orders`) holds the store: it is the service's state, like `self`, not
/// part of the request, so it is not fingerprinted and need not implement
/// [`KeyPart`](trait@KeyPart). If it also carries request data, pass that data as an argument of
/// its own, or name it in `key` (`key = "app.tenant_id, order_id"`). Other arguments in the
/// expression, such as `shard` in `store = app.stores[shard]`, are fingerprinted as usual.
///
/// ```
/// use std::sync::Arc;
/// use idempotent_core::{Error, IdempotencyStore, MemoryStore, idempotent};
///
/// struct Payments {
///     store: Arc<dyn IdempotencyStore>,
/// }
///
/// impl Payments {
///     #[idempotent(key = "order_id", store = self.store, scope = "payments.refund")]
///     async fn refund(&self, order_id: u64) -> Result<bool, Error> {
///         Ok(true)
///     }
/// }
///
/// #[idempotent(key = "event_id", store = store)]
/// async fn on_event(store: &MemoryStore, event_id: String) -> Result<(), Error> {
///     Ok(())
/// }
///
/// // Neither fingerprinted nor a `KeyPart`: `app` is where the store is.
/// struct App {
///     pg: MemoryStore,
///     http: reqwest_like::Client,
/// }
/// # mod reqwest_like { pub struct Client; }
///
/// #[idempotent(key = "order_id", store = app.pg)]
/// async fn ship(app: &App, order_id: u64, carrier: String) -> Result<(), Error> {
///     Ok(())
/// }
/// # fn main() {}
/// ```
///
/// With `&mut self`, a store expression that borrows `self` conflicts with a body that calls
/// `&mut self` methods; write `store = self.store.clone()` for an `Arc` field.
///
/// ## `transaction = "tx"`
///
/// Runs the body inside a transaction of the store's own database, which also records the
/// result: the body's writes and the record commit together, or not at all. `store = ...` is
/// required and must be a `PostgresStore` (feature `postgres`), a reference to one, or an
/// `Arc` or `Box` of one; any other store is a compile error at the expression. The body sees
/// the transaction under the name given, as `tx: &mut PgConnection`
/// (`idempotent_core::stores::postgres::sqlx::PgConnection`). It is not an argument: the
/// function's signature is the one callers see and pass arguments to. Key, fingerprint and
/// scope follow the same rules as for any other function.
///
#[cfg_attr(feature = "postgres", doc = "```no_run")]
#[cfg_attr(not(feature = "postgres"), doc = "```ignore")]
/// use idempotent_core::stores::postgres::sqlx;
/// use idempotent_core::{Error, PostgresStore, idempotent};
///
/// #[derive(Debug)]
/// enum ShipError {
///     /// The order was shipped by another request: a unique violation, an answer of its own.
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
/// #[idempotent(key = "order_id", store = store, transaction = "tx")]
/// async fn ship(store: &PostgresStore, order_id: i64, carrier: String) -> Result<String, ShipError> {
///     sqlx::query("INSERT INTO shipments (order_id, carrier) VALUES ($1, $2)")
///         .bind(order_id)
///         .bind(&carrier)
///         .execute(&mut *tx)
///         .await?;
///     Ok(format!("shipment-{order_id}"))
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), ShipError> {
/// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
/// let shipment = ship(&store, 17, "ups".to_owned()).await?;
/// # Ok(())
/// # }
/// ```
///
/// A call claims the key first, outside the transaction, so that concurrent duplicates see
/// the claim at once and wait or are rejected; a completed record is replayed without opening
/// a transaction, and the body does not run. Otherwise a transaction is begun, the body runs
/// with it (its claim heartbeated on another connection), and on `Ok` the record is written in
/// the same transaction, which then commits. An `Err` rolls the transaction back and releases
/// the key, so a retry runs the body again; so does a cancelled or panicking call. If the
/// claim was taken over while the body ran (a pause past the lease), the commit is refused,
/// the writes are rolled back, and the call fails with [`Error::LeaseLost`]: the body's
/// database effects happen exactly once. Effects outside the transaction (HTTP calls, other
/// databases) are at-least-once, as for any call. `PostgresStore::transactional` documents
/// the exact guarantees.
///
/// The body's errors are yours: a failed statement is whatever your error type's
/// `From<sqlx::Error>` (or your own `map_err`) makes of it, such as `ShipError::AlreadyShipped`
/// above, never an [`Error::Store`]. Only the store's own failures (the claim, `BEGIN`,
/// recording the result, `COMMIT`) reach you as an [`Error::Store`], through
/// `From<idempotent_core::Error>`, and only those mean "retry later".
///
/// `cache_errors = true` is refused with `transaction` (an `Err` is rolled back, so there are
/// no effects a replay could report), and so is `on_store_error = "fail_open"` (a result that
/// cannot be recorded is rolled back with the body's writes).
///
/// **A connection passed as an argument is not the same.** `conn: &mut PgConnection` with
/// `skip = "conn"` compiles, but what the body writes through `conn` is not in the
/// transaction that records the result: a crash after those writes and before the record runs
/// the body again, and a body that fails after writing leaves its writes behind while its key
/// is released for a retry. Use `transaction` for writes that must happen once.
///
/// ## `scope = "orders.charge"`
///
/// The scope of the function's records: two calls with the same key parts share a record
/// only in the same scope. Keys survive restarts only as long as the scope does, so set it
/// explicitly for functions whose records outlive a deploy that might move or rename them.
///
/// The default, the module path and function name (`my_crate::orders::charge`), is for a
/// function that is the module-level item of its name; every other function must name its
/// scope, and the compiler checks it. An attribute cannot see what encloses its function,
/// and without the check two functions with one name and one module would share records:
/// - methods (a `self` receiver): two types in one module may both have a `get`;
/// - associated functions without `self`, in an inherent or a trait `impl`, for the same reason;
/// - functions nested in a function body: `ship_flow` and `refund_flow` may both have a `step`.
///
/// ```compile_fail,E0425
/// use idempotent_core::{Error, idempotent};
///
/// async fn ship_flow(order_id: u64) -> Result<u64, Error> {
///     #[idempotent(key = "order_id")] // error: needs `scope = "..."`
///     async fn step(order_id: u64) -> Result<u64, Error> {
///         Ok(order_id)
///     }
///     step(order_id).await
/// }
/// # fn main() {}
/// ```
///
/// A function in a `mod` declared inside a function body counts as module-level, but
/// `module_path!()` leaves the function out: name the scope of such functions yourself.
/// Rustdoc wraps a doctest without `fn main` in one, which nests its functions: give such an
/// example a `# fn main() {}` line or a scope.
///
/// ## `skip = "db, client"`
///
/// Arguments left out of the request fingerprint. Every argument except `self`, the arguments the
/// key uses whole and the argument the `store` expression starts from is fingerprinted by default
/// (an argument the key reads through a field included), so a retry with the same key but, say, a
/// different amount fails with [`Error::PayloadMismatch`] instead of replaying a result computed
/// for other inputs. Fingerprinted arguments must implement [`KeyPart`](trait@KeyPart); skip
/// clients, connection pools and anything that legitimately differs between retries. An argument
/// the key uses whole cannot be skipped (the key already covers all of it); one it reads through a
/// field can.
///
/// A skipped `&mut PgConnection` (or `sqlx::Transaction`) is a connection like any other: the
/// body's writes through it are not in the transaction that records the result. For writes
/// that must commit with the record, use [`transaction = "tx"`](#transaction--tx) instead.
///
/// ```
/// use idempotent_core::{Error, idempotent};
/// # struct HttpClient;
///
/// #[idempotent(key = "order_id", skip = "client")]
/// async fn ship(client: &HttpClient, order_id: u64, address: String) -> Result<u32, Error> {
///     Ok(1)
/// }
/// # fn main() {}
/// ```
///
/// ## `on_in_flight = "wait" | "reject"`
///
/// What a duplicate does while the first call still runs: `"wait"` (default) polls until the
/// result is recorded and replays it, giving up with [`Error::InFlight`] after one lease;
/// `"reject"` returns [`Error::InFlight`] at once, with a `retry_after`.
///
/// ## `on_store_error = "fail_closed" | "fail_open"`
///
/// What happens when the store itself fails (connection lost, timeout). `"fail_closed"`
/// (default) returns [`Error::Store`] and the body does not run. `"fail_open"` runs the body
/// without protection when the claim cannot be made, and returns its result even when it
/// cannot be recorded. **The risk:** during an outage every duplicate runs the body again, so
/// choose it only where a second execution costs less than an outage (a cache refresh, a
/// notification that tolerates duplicates), never for payments.
///
/// ## `cache_errors = true`
///
/// Stores and replays `Err` results too; the error type must then also be `Serialize +
/// DeserializeOwned`. By default an `Err` releases the key, so a retry runs the body again.
///
/// ## `crate = "path"`
///
/// Where `idempotent_core` is, for a renamed dependency (`crate = "my_idempotent"`).
///
/// # What happens on a call
///
/// 1. The key and fingerprint are computed from the arguments.
/// 2. The store decides atomically: run (claim acquired), replay (completed record), wait or
///    reject (claimed by another live call), or mismatch.
/// 3. The body runs with a heartbeat. `Ok` is stored for `ttl`; `Err` releases the key unless
///    `cache_errors`; a panic or a cancelled call releases the key.
///
/// # Finding a call's record
///
/// A call's record is at its scope and the key [`key::IdempotencyKey`] builds from
/// the scope and the key parts, in the order `key = "..."` names them (field paths by
/// their value). A tool can compute it and then [`inspect`](IdempotencyStore::inspect) or
/// [`forget`](IdempotencyStore::forget) the record, for example to drop a bad stored result
/// so that the next call runs again:
///
/// ```
/// use idempotent_core::key::IdempotencyKey;
/// use idempotent_core::store::{Forget, RecordState};
/// use idempotent_core::{Error, IdempotencyStore, MemoryStore, idempotent};
///
/// #[idempotent(key = "order_id, action", scope = "orders.charge", store = store)]
/// async fn charge(store: &MemoryStore, order_id: u64, action: &str) -> Result<u64, Error> {
///     Ok(order_id * 100)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let store = MemoryStore::new();
/// charge(&store, 42, "capture").await?;
///
/// let key = IdempotencyKey::builder("orders.charge").part(&42u64).part("capture").finish();
/// let state = store.inspect("orders.charge", key.as_str()).await?;
/// assert!(matches!(state, RecordState::Completed { .. }));
///
/// store.forget("orders.charge", key.as_str(), Forget::UnlessLeased).await?;
/// assert_eq!(store.inspect("orders.charge", key.as_str()).await?, RecordState::Absent);
/// # Ok(())
/// # }
/// ```
///
/// Without `scope`, the scope is `concat!(module_path!(), "::", "<function name>")`.
///
/// # Expands to roughly
///
/// The names below are in `idempotent_core`'s hidden `__private` module; the real expansion
/// spells every path out in full.
///
/// ```ignore
/// // Without `scope` only: a hidden constant whose type identifies this expansion.
/// const __idempotent_without_scope_charge_must_be_a_module_level_fn: Scope<ID> = Scope;
///
/// async fn charge(order_id: u64, action: &str, amount_cents: u64) -> Result<String, Error> {
///     // Compiles only where `self::` (the module) finds this expansion's constant, that is
///     // where `charge` is the module-level item of its name.
///     module_level::<ID, _>(self::__idempotent_without_scope_charge_must_be_a_module_level_fn);
///     const OPTIONS: CallOptions = CallOptions::new()
///         .ttl(Duration::from_millis(86_400_000))
///         .on_in_flight(OnInFlight::Wait)
///         .on_store_error(OnStoreError::FailClosed);
///     let scope = concat!(module_path!(), "::", "charge");
///     let key = IdempotencyKey::builder(scope)
///         .part(&order_id)
///         .part(&action)
///         .finish();
///     // Every other argument, whole (also one the key reads a field of), then the type and
///     // const arguments of a generic function.
///     let fingerprint = Fingerprint::builder().field("amount_cents", &amount_cents).finish();
///     // With `store = <expr>`: `let store: &dyn Store = &(<expr>);`, then `store.store()`.
///     let store = default_store();
///     // The return type is a `Result` whose value is storable and whose error type takes an
///     // `idempotent_core::Error`: checked here, once, so an error points at the return type
///     // (`cache_errors = true` checks `CachingResult`, whose error type is storable too).
///     let types = <Result<String, Error> as IdempotentResult>::types();
///     // The body runs inside the engine's future, awaited here. With `transaction = "tx"`:
///     // `let store = <_ as TransactionalStore>::backend(&(<expr>));`, then
///     // `run_in_transaction(types, store, scope, async |tx| { body })` in place of `run`.
///     finish(
///         types,
///         run(
///             types,
///             call(&*store, scope, &key, fingerprint, &OPTIONS),
///             async { Ok(format!("ch_{order_id}_{action}_{amount_cents}")) },
///         )
///         .await,
///     )
/// }
/// ```
///
/// # Compile-time checks
///
/// A key that could never repeat is a compile error:
///
/// ```compile_fail
/// use idempotent_core::{Error, idempotent};
///
/// #[idempotent(key = "at")]
/// async fn schedule(at: std::time::SystemTime) -> Result<(), Error> {
///     Ok(())
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// use idempotent_core::{Error, idempotent};
///
/// #[idempotent(key = "chrono::Utc::now()")]
/// async fn stamp() -> Result<(), Error> {
///     Ok(())
/// }
/// # fn main() {}
/// ```
#[cfg(feature = "macros")]
#[doc(inline)]
pub use idempotent_macros::idempotent;

#[doc = include_str!("docs/derive_key_part.md")]
#[cfg(feature = "macros")]
#[doc(inline)]
pub use idempotent_macros::KeyPart;

fn default_store_slot() -> &'static RwLock<Arc<dyn IdempotencyStore>> {
    static DEFAULT: OnceLock<RwLock<Arc<dyn IdempotencyStore>>> = OnceLock::new();
    DEFAULT.get_or_init(|| RwLock::new(Arc::new(MemoryStore::new())))
}

/// Replaces the store used by `#[idempotent]` functions that have no `store = ...` option.
///
/// Until this is called, the process default is a [`MemoryStore`] with default settings.
/// Calls already running keep the store they started with.
pub fn set_default_store(store: Arc<dyn IdempotencyStore>) {
    let mut slot = default_store_slot()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *slot = store;
}

/// The store used by `#[idempotent]` functions that have no `store = ...` option.
pub fn default_store() -> Arc<dyn IdempotencyStore> {
    default_store_slot()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

// What code generated by `#[idempotent]` calls; not public API.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
