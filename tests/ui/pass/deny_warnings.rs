// The expansion is clean under `deny(warnings)` in several forms. Clippy is checked on the
// same forms by `tests/tests/expansion_lints.rs` (trybuild does not run clippy).
#![deny(warnings, clippy::all)]

use idempotent_core::{Error, IdempotencyStore, KeyPart, KeyWriter, MemoryStore, idempotent};
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

#[idempotent(key = "id", on_in_flight = "reject", scope = "generic")]
async fn generic<T: KeyPart + Sync>(id: &T, count: u32) -> Result<u32, Error> {
    let _ = id;
    Ok(count)
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
    Named { a: u8 },
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
    Ok(id.0 + kind + value.id + value.name.len() as u64 + value.items.len() as u64 + value.note.len() as u64)
}

fn empty_is_a_key_part(empty: &DerivedEmpty) -> &dyn KeyPart {
    empty
}

struct Service {
    store: Arc<dyn IdempotencyStore>,
    calls: u32,
}

impl Service {
    #[idempotent(scope = "deny_warnings.by_ref", key = "id", store = self.store)]
    async fn by_ref(&self, id: u64) -> Result<u64, Error> {
        Ok(id + u64::from(self.calls))
    }

    #[idempotent(scope = "deny_warnings.by_mut", key = "id", store = self.store)]
    async fn by_mut(&mut self, id: u64) -> Result<u32, Error> {
        self.calls += 1;
        Ok(self.calls + u32::try_from(id).unwrap_or_default())
    }
}

fn main() {
    let _ = minimal;
    let _ = key_only;
    let _ = with_store;
    let _ = generic::<u64>;
    drop(scaled::<2>(1, 0_u8));
    let _ = Service::by_ref;
    let _ = Service::by_mut;
    let value = Derived {
        id: 1,
        name: "n",
        items: vec![1_u8],
        note: String::new(),
    };
    for kind in [
        DerivedEnum::Unit,
        DerivedEnum::Tuple(1, 2),
        DerivedEnum::Named { a: 1 },
        DerivedEnum::Renamed,
    ] {
        drop(derived(DerivedId(1), kind, DerivedUnit, &value));
    }
    let _ = empty_is_a_key_part;
}
