//! `#[derive(KeyPart)]`: the encoding it writes (pinned: it is a persisted format), what keeps
//! keys and what changes them, and derived types used as keys and fingerprinted arguments.
//!
//! The expected digests were computed independently with Python's `hashlib` from the encoding
//! table in `idempotent_core::key`'s docs. If one of these fails, records keyed by derived
//! types would no longer be found after an upgrade.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use idempotent_core::key::IdempotencyKey;
use idempotent_core::{Error, KeyPart, KeyWriter, MemoryStore, idempotent};

fn key(part: &(impl KeyPart + ?Sized)) -> String {
    IdempotencyKey::builder("golden.derive")
        .part(part)
        .finish()
        .as_str()
        .to_owned()
}

#[derive(KeyPart)]
struct Order {
    id: u64,
    sku: String,
    lines: Vec<Line>,
    note: Option<String>,
}

#[derive(KeyPart)]
struct Line(u32, String);

#[derive(KeyPart)]
enum Action {
    Capture,
    Refund {
        partial: bool,
        reason: Option<String>,
    },
    Split(u64, i32),
    #[key_part(rename = "Void")]
    Cancel,
}

#[derive(KeyPart)]
#[key_part(transparent)]
struct OrderId(u64);

#[derive(KeyPart)]
struct Marker;

fn order() -> Order {
    Order {
        id: 42,
        sku: "abc".to_owned(),
        lines: vec![Line(2, "x".to_owned())],
        note: None,
    }
}

fn refund() -> Action {
    Action::Refund {
        partial: true,
        reason: Some("damaged".to_owned()),
    }
}

#[test]
fn derived_struct_key_is_pinned() {
    assert_eq!(
        key(&order()),
        "7c21566aeea67720facac4e30de7d5f122027525e97202b52a7219dfa172703c"
    );
}

#[test]
fn derived_enum_keys_are_pinned() {
    assert_eq!(
        key(&Action::Capture),
        "8cf119d6fd7456cfa6ba9bdb8d6caf859efe08f509a3a22ccf00bdcd5e2a01cf"
    );
    assert_eq!(
        key(&refund()),
        "18392378c60c055c0ffc760d10d77f6662248d2ab592a07fb6d7ead8df3f2cb1"
    );
    assert_eq!(
        key(&Action::Split(7, -3)),
        "38ebce3ff4b4d39a1d6d46a19f3f5ad1110a080ab2c0b335fe581e509baa49bf"
    );
    // Tagged by its `rename`, not its name.
    assert_eq!(
        key(&Action::Cancel),
        "f6fcd8c1cd957211d8b5cc7ff80afb114ce16f6bd6e78c66d3ec4494251cedcd"
    );
}

#[test]
fn transparent_and_unit_structs_are_pinned() {
    assert_eq!(
        key(&OrderId(42)),
        "cc0d4d46263a48676a35855a2041235e6ead9fba07ff4780bf277134423c6605"
    );
    assert_eq!(
        key(&Marker),
        "3d007201b73ffc060360125dbf66ac4cbbf6f8cae804faad18810b1706d8c499"
    );
}

#[test]
fn one_key_of_every_derived_form_is_pinned() {
    let key = IdempotencyKey::builder("golden.derive")
        .part(&order())
        .part(&Action::Capture)
        .part(&refund())
        .part(&Action::Split(7, -3))
        .part(&Action::Cancel)
        .part(&OrderId(42))
        .part(&Marker)
        .finish();
    assert_eq!(
        key.as_str(),
        "8a0475c1b3ac353f6bc87ea768d7dc69dfe8d5fc0ab54260a5d1d14b206a2af5"
    );
}

#[test]
fn a_struct_encodes_as_the_tuple_of_its_fields() {
    let tuple = (42u64, "abc", vec![(2u32, "x")], None::<String>);
    assert_eq!(key(&order()), key(&tuple));
    assert_eq!(key(&Marker), key(&()));
    // A transparent newtype keeps the keys of the value it wraps.
    assert_eq!(key(&OrderId(42)), key(&42u64));
    assert_ne!(key(&OrderId(42)), key(&(42u64,)));
}

/// What a hand-written impl writes to encode like the derive.
struct HandWritten;

impl KeyPart for HandWritten {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.begin_variant("Refund", 2);
        true.write_key_part(out);
        Some("damaged").write_key_part(out);
    }
}

#[test]
fn a_variant_encodes_as_begin_variant_and_its_fields() {
    assert_eq!(key(&refund()), key(&HandWritten));
}

mod v1 {
    use idempotent_core::KeyPart;

    #[derive(KeyPart)]
    pub enum Status {
        Pending,
        Shipped(u8),
        Cancelled { by: String },
    }
}

/// `v1::Status` after a refactor: variants reordered, one inserted, one renamed with its old
/// tag kept.
mod v2 {
    use idempotent_core::KeyPart;

    #[derive(KeyPart)]
    pub enum Status {
        #[key_part(rename = "Cancelled")]
        Canceled {
            by: String,
        },
        Returned,
        Shipped(u8),
        Pending,
    }
}

#[test]
fn variants_are_tagged_by_name_so_reordering_keeps_keys() {
    assert_eq!(key(&v1::Status::Pending), key(&v2::Status::Pending));
    assert_eq!(key(&v1::Status::Shipped(3)), key(&v2::Status::Shipped(3)));
    assert_eq!(
        key(&v1::Status::Cancelled { by: "ops".into() }),
        key(&v2::Status::Canceled { by: "ops".into() })
    );
    // Variant 0 of v1 and variant 0 of v2 never share a key.
    assert_ne!(
        key(&v1::Status::Pending),
        key(&v2::Status::Canceled { by: String::new() })
    );
    // The inserted variant has a key of its own.
    assert_ne!(key(&v2::Status::Returned), key(&v2::Status::Pending));
    // A unit variant is not `()`, nor another variant's encoding.
    assert_ne!(key(&v1::Status::Pending), key(&()));
    assert_ne!(key(&v1::Status::Pending), key("Pending"));
}

mod before {
    use idempotent_core::KeyPart;

    #[derive(KeyPart)]
    pub struct Request {
        pub order_id: u64,
    }
}

mod after {
    use idempotent_core::KeyPart;

    #[derive(KeyPart)]
    pub struct Request {
        pub order_id: u64,
        pub priority: bool,
    }

    // Its skipped fields are never read: that is the point.
    #[allow(dead_code)]
    #[derive(KeyPart)]
    pub struct Traced {
        pub order_id: u64,
        #[key_part(skip)]
        pub trace_id: String,
        #[key_part(skip)]
        pub received_at: std::time::SystemTime,
    }

    #[derive(KeyPart)]
    pub struct Renamed {
        pub id: u64,
    }
}

#[test]
fn adding_a_field_changes_every_key_and_a_skipped_field_none() {
    // Documented: a struct is a tuple of its fields, so its arity is part of every key.
    assert_ne!(
        key(&before::Request { order_id: 1 }),
        key(&after::Request {
            order_id: 1,
            priority: false
        })
    );
    let traced = |trace_id: &str| after::Traced {
        order_id: 1,
        trace_id: trace_id.to_owned(),
        received_at: std::time::SystemTime::now(),
    };
    assert_eq!(key(&traced("a")), key(&before::Request { order_id: 1 }));
    assert_eq!(key(&traced("a")), key(&traced("b")));
    // Field names are not encoded.
    assert_eq!(
        key(&before::Request { order_id: 1 }),
        key(&after::Renamed { id: 1 })
    );
}

#[derive(KeyPart)]
struct Page<'a, T, const N: usize> {
    items: [T; N],
    cursor: &'a str,
}

#[derive(KeyPart)]
enum Tree<T> {
    Leaf(T),
    Node(Box<Tree<T>>, Box<Tree<T>>),
}

/// An enum without variants has no values, and is a `KeyPart` all the same.
#[derive(KeyPart)]
enum Never {}

#[allow(dead_code)]
fn never_is_a_key_part(never: &Never) -> String {
    key(never)
}

#[test]
fn generic_and_recursive_types() {
    let page = Page {
        items: [1u8, 2],
        cursor: "c",
    };
    assert_eq!(key(&page), key(&([1u8, 2], "c")));
    let tree = Tree::Node(Box::new(Tree::Leaf("a")), Box::new(Tree::Leaf("b")));
    assert_ne!(key(&Tree::Leaf("a")), key(&Tree::Leaf("b")));
    assert_ne!(key(&tree), key(&Tree::Leaf("a")));
    let nested: BTreeMap<&str, Tree<u8>> = BTreeMap::from([("k", Tree::Leaf(1))]);
    assert_eq!(key(&nested), key(&BTreeMap::from([("k", Tree::Leaf(1u8))])));
}

// ---------------------------------------------------------------------------------------------
// Derived types in the attribute

#[derive(KeyPart)]
struct Shipment {
    address: String,
    parcels: Vec<Line>,
}

#[derive(KeyPart)]
#[key_part(transparent)]
struct Carrier(String);

#[idempotent(key = "order_id, carrier", store = store, skip = "runs", scope = "derive.ship")]
async fn ship(
    store: &MemoryStore,
    runs: &AtomicUsize,
    order_id: OrderId,
    carrier: Carrier,
    shipment: &Shipment,
) -> Result<String, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(format!(
        "{}-{}-{}-{}",
        order_id.0,
        carrier.0,
        shipment.address,
        shipment.parcels.len()
    ))
}

fn shipment(address: &str) -> Shipment {
    Shipment {
        address: address.to_owned(),
        parcels: vec![Line(1, "box".to_owned())],
    }
}

#[tokio::test]
async fn a_derived_struct_as_key_and_as_fingerprinted_argument() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let ups = || Carrier("ups".to_owned());
    let first = ship(&store, &runs, OrderId(7), ups(), &shipment("Main St"))
        .await
        .unwrap();
    assert_eq!(first, "7-ups-Main St-1");
    let retry = ship(&store, &runs, OrderId(7), ups(), &shipment("Main St"))
        .await
        .unwrap();
    assert_eq!(retry, first, "replayed");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Same key, another shipment: the fingerprint differs.
    let other = ship(&store, &runs, OrderId(7), ups(), &shipment("Elm St")).await;
    assert!(
        matches!(other, Err(Error::PayloadMismatch { .. })),
        "{other:?}"
    );
    // Another key: runs.
    let dhl = ship(
        &store,
        &runs,
        OrderId(7),
        Carrier("dhl".to_owned()),
        &shipment("Elm St"),
    )
    .await
    .unwrap();
    assert_eq!(dhl, "7-dhl-Elm St-1");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[idempotent(key = "request.order_id, action", store = store, skip = "runs", scope = "derive.act")]
async fn act(
    store: &MemoryStore,
    runs: &AtomicUsize,
    request: &after::Request,
    action: Action,
) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(request.order_id + u64::from(matches!(action, Action::Capture)))
}

#[tokio::test]
async fn a_derived_enum_as_key_and_a_field_keyed_struct_fingerprinted_whole() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let request = |priority| after::Request {
        order_id: 5,
        priority,
    };
    assert_eq!(
        act(&store, &runs, &request(false), Action::Capture)
            .await
            .unwrap(),
        6
    );
    assert_eq!(
        act(&store, &runs, &request(false), Action::Capture)
            .await
            .unwrap(),
        6
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Another variant is another key.
    assert_eq!(
        act(&store, &runs, &request(false), refund()).await.unwrap(),
        5
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // The same `order_id` with another `priority`: the rest of `request` is fingerprinted.
    let mismatch = act(&store, &runs, &request(true), Action::Capture).await;
    assert!(
        matches!(mismatch, Err(Error::PayloadMismatch { .. })),
        "{mismatch:?}"
    );
}
