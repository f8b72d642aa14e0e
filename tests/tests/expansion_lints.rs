//! The expansion of `#[idempotent]` is clean under `#![deny(warnings, clippy::all)]`:
//! `cargo clippy -p idempotent-tests --all-targets -- -D warnings` checks this file, which
//! uses the attribute in the forms of `ui/pass/deny_warnings.rs` (trybuild does not run
//! clippy), and the tests below run each form once.
#![deny(warnings, clippy::all)]

use idempotent_core::{Error, IdempotencyStore, KeyPart, KeyWriter, MemoryStore, idempotent};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

struct Client;

struct Order {
    id: u64,
    amount: u64,
}

// Keyed by `order.id`, so fingerprinted whole.
impl KeyPart for Order {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        (self.id, self.amount).write_key_part(out);
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum StoredError {
    Rejected,
    Idempotency(String),
}

impl From<Error> for StoredError {
    fn from(error: Error) -> Self {
        StoredError::Idempotency(error.to_string())
    }
}

#[idempotent(key = "order_id, action")]
async fn minimal(order_id: u64, action: &str, amount: u64) -> Result<String, Error> {
    Ok(format!("{order_id}{action}{amount}"))
}

#[idempotent(key = "order_id")]
async fn key_only(order_id: u64) -> Result<(), Error> {
    let _ = order_id;
    Ok(())
}

#[idempotent(key = "order.id", skip = "client", store = store, ttl = "1h", lease = "10s")]
async fn with_store(store: &MemoryStore, client: &Client, order: &Order) -> Result<u64, Error> {
    let _ = client;
    Ok(order.amount)
}

#[idempotent(key = "id", on_in_flight = "reject", scope = "expansion_lints.generic")]
async fn generic<T: KeyPart + Sync>(id: &T, count: u32) -> Result<u32, Error> {
    let _ = id;
    Ok(count)
}

#[idempotent(key = "id", cache_errors = true, crate = "::idempotent_core")]
async fn caching(id: u64, fail: bool) -> Result<Option<u64>, StoredError> {
    if fail {
        return Err(StoredError::Rejected);
    }
    Ok(Some(id))
}

#[idempotent(key = "id")]
async fn impl_trait(id: impl KeyPart + Send, extra: &impl KeyPart) -> Result<u8, Error> {
    let _ = (id, extra);
    Ok(1)
}

// Generic arguments go into the fingerprint: a const parameter and an `impl Trait` argument.
#[idempotent(key = "id")]
async fn scaled<const FACTOR: u64>(id: u64, label: impl KeyPart) -> Result<u64, Error> {
    let _ = label;
    Ok(id * FACTOR)
}

// `#[derive(KeyPart)]` in each of its forms.
#[derive(KeyPart)]
struct Derived<'a, T> {
    id: u64,
    name: &'a str,
    items: Vec<T>,
    #[key_part(skip)]
    note: String,
}

#[derive(KeyPart)]
#[key_part(transparent)]
struct DerivedId(u64);

#[derive(KeyPart)]
struct DerivedUnit;

#[derive(KeyPart)]
enum DerivedEnum<T> {
    Unit,
    Tuple(T, #[key_part(skip)] u8),
    Named {
        a: u8,
    },
    #[key_part(rename = "Old")]
    Renamed,
}

#[derive(KeyPart)]
enum DerivedEmpty {}

#[idempotent(key = "id, kind")]
async fn derived(
    id: DerivedId,
    kind: DerivedEnum<u8>,
    unit: DerivedUnit,
    value: &Derived<'_, u8>,
) -> Result<u64, Error> {
    let _ = unit;
    let kind = match kind {
        DerivedEnum::Unit | DerivedEnum::Renamed => 0,
        DerivedEnum::Tuple(a, b) => u64::from(a) + u64::from(b),
        DerivedEnum::Named { a } => u64::from(a),
    };
    Ok(id.0
        + kind
        + value.id
        + value.name.len() as u64
        + value.items.len() as u64
        + value.note.len() as u64)
}

fn empty_is_a_key_part(empty: &DerivedEmpty) -> &dyn KeyPart {
    empty
}

struct Service {
    store: Arc<dyn IdempotencyStore>,
    tenant: String,
    calls: u32,
}

impl Service {
    #[idempotent(scope = "expansion_lints.by_ref", key = "self.tenant, id", store = self.store)]
    async fn by_ref(&self, id: u64) -> Result<u64, Error> {
        Ok(id + u64::from(self.calls))
    }

    #[idempotent(scope = "expansion_lints.by_mut", key = "id", store = self.store)]
    async fn by_mut(&mut self, id: u64) -> Result<u32, Error> {
        self.calls += 1;
        Ok(self.calls + u32::try_from(id).unwrap_or_default())
    }

    fn bump(&mut self) {
        self.calls += 1;
    }

    #[idempotent(scope = "expansion_lints.by_mut_cloned_store", key = "id", store = self.store.clone())]
    async fn by_mut_cloned_store(&mut self, id: u64) -> Result<u32, Error> {
        self.bump();
        Ok(self.calls + u32::try_from(id).unwrap_or_default())
    }
}

// An error type with a lifetime in it (`dyn Error + 'static`): the future is still `Send`.
#[idempotent(key = "id")]
async fn boxed_error(id: u64, text: &str) -> Result<u64, idempotent_core::BoxError> {
    let parsed: u64 = text.parse()?;
    Ok(id + parsed)
}

/// Service state handed to a free function: not a `KeyPart`.
struct App {
    store: Arc<MemoryStore>,
    region: String,
}

// `app` is the root of the store expression, so it is not fingerprinted.
#[idempotent(key = "order_id", store = app.store)]
async fn from_app(app: &App, order_id: u64) -> Result<String, Error> {
    Ok(format!("{}-{order_id}", app.region))
}

/// `transaction = "tx"`, in a free function and a method.
#[cfg(feature = "postgres")]
mod transactional {
    use idempotent_core::stores::postgres::sqlx;
    use idempotent_core::{BoxError, PostgresStore, idempotent};
    use std::sync::Arc;

    #[idempotent(key = "id", store = store, transaction = "tx")]
    pub async fn free(store: &PostgresStore, id: i64, note: String) -> Result<i64, BoxError> {
        sqlx::query("SELECT $1")
            .bind(&note)
            .execute(&mut *tx)
            .await?;
        Ok(id)
    }

    pub struct Service {
        pub db: Arc<PostgresStore>,
    }

    impl Service {
        #[idempotent(key = "id", store = self.db, transaction = "conn", scope = "expansion_lints.tx")]
        pub async fn method(&self, id: i64) -> Result<u64, BoxError> {
            let done = sqlx::query("SELECT 1").execute(&mut *conn).await?;
            Ok(done.rows_affected() + id.unsigned_abs())
        }
    }

    // A runtime for the lazy pool, which starts its reaper task.
    #[tokio::test]
    async fn transactional_forms_are_send() {
        fn assert_send<F: std::future::Future + Send>(_: F) {}
        // Lazy: never connects, the futures are only built.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .expect("a lazy pool");
        let store = PostgresStore::from_pool(pool);
        assert_send(free(&store, 1, String::new()));
        let service = Service {
            db: Arc::new(store.clone()),
        };
        assert_send(service.method(1));
    }
}

fn assert_send<F: std::future::Future + Send>(_: &F) {}

// The expansion keeps a `Send` body's future `Send`, in every form of `store`.
#[test]
fn every_form_is_send() {
    let store = MemoryStore::new();
    let order = Order { id: 7, amount: 5 };
    assert_send(&minimal(1, "a", 2));
    assert_send(&with_store(&store, &Client, &order));
    assert_send(&generic(&9_u64, 3));
    assert_send(&caching(4, false));
    assert_send(&impl_trait(1_u8, &2_u16));
    let mut service = Service {
        store: Arc::new(MemoryStore::new()),
        tenant: "acme".to_owned(),
        calls: 0,
    };
    assert_send(&service.by_ref(1));
    assert_send(&service.by_mut(1));
    assert_send(&service.by_mut_cloned_store(1));
    let app = App {
        store: Arc::new(MemoryStore::new()),
        region: "eu".to_owned(),
    };
    assert_send(&from_app(&app, 1));
    assert_send(&boxed_error(1, "2"));
    let value = Derived {
        id: 1,
        name: "n",
        items: vec![1_u8],
        note: String::new(),
    };
    assert_send(&derived(
        DerivedId(1),
        DerivedEnum::Unit,
        DerivedUnit,
        &value,
    ));
}

#[tokio::test]
async fn every_form_runs_and_replays() -> Result<(), Error> {
    assert_eq!(minimal(1, "a", 2).await?, "1a2");
    key_only(1).await?;

    let store = MemoryStore::new();
    let order = Order { id: 7, amount: 5 };
    assert_eq!(with_store(&store, &Client, &order).await?, 5);
    assert_eq!(store.len(), 1);

    assert_eq!(generic(&9_u64, 3).await?, 3);
    assert_eq!(caching(4, false).await, Ok(Some(4)));
    assert_eq!(caching(5, true).await, Err(StoredError::Rejected));
    // The error was stored: a retry with a different `fail` is a payload mismatch.
    assert!(matches!(
        caching(5, false).await,
        Err(StoredError::Idempotency(_))
    ));
    assert_eq!(impl_trait(1_u8, &2_u16).await?, 1);
    assert_eq!(scaled::<2>(3, "a").await?, 6);

    let mut service = Service {
        store: Arc::new(MemoryStore::new()),
        tenant: "acme".to_owned(),
        calls: 0,
    };
    assert_eq!(service.by_ref(1).await?, 1);
    assert_eq!(service.by_mut(1).await?, 2);
    assert_eq!(
        service.by_mut(1).await?,
        2,
        "replayed, the body did not run"
    );
    assert_eq!(service.by_mut_cloned_store(10).await?, 12);
    assert_eq!(service.calls, 2);

    // Two calls whose `app` differs only outside the store: the same request, replayed.
    let store = Arc::new(MemoryStore::new());
    let eu = App {
        store: store.clone(),
        region: "eu".to_owned(),
    };
    let us = App {
        store,
        region: "us".to_owned(),
    };
    assert_eq!(from_app(&eu, 1).await?, "eu-1");
    assert_eq!(from_app(&us, 1).await?, "eu-1", "replayed, not a mismatch");
    assert_eq!(from_app(&us, 2).await?, "us-2");
    assert_eq!(boxed_error(1, "2").await.map_err(|e| e.to_string()), Ok(3));
    assert!(boxed_error(2, "x").await.is_err());

    let value = Derived {
        id: 1,
        name: "n",
        items: vec![1_u8],
        note: "skipped".to_owned(),
    };
    for (kind, expected) in [
        (DerivedEnum::Unit, 11),
        (DerivedEnum::Tuple(1, 2), 14),
        (DerivedEnum::Named { a: 1 }, 12),
        (DerivedEnum::Renamed, 11),
    ] {
        assert_eq!(
            derived(DerivedId(1), kind, DerivedUnit, &value).await?,
            expected
        );
    }
    let _ = empty_is_a_key_part;
    Ok(())
}
