// `#[derive(KeyPart)]` on every kind of struct and enum, with its options, used as a key part
// and as a fingerprinted argument.
use idempotent_core::{Error, KeyPart, idempotent};
use std::collections::BTreeMap;
use std::marker::PhantomData;

#[derive(KeyPart)]
struct Named {
    id: u64,
    tags: BTreeMap<String, Vec<u8>>,
}

#[derive(KeyPart)]
struct Tuple(u64, String);

#[derive(KeyPart)]
struct Unit;

#[derive(KeyPart)]
#[key_part(transparent)]
struct OrderId(u64);

#[derive(KeyPart)]
enum Action {
    Capture,
    Refund { partial: bool },
    Split(u32, u32),
    #[key_part(rename = "Void")]
    Cancel,
}

#[derive(KeyPart)]
struct Skipping<T> {
    id: u64,
    #[key_part(skip)]
    received_at: std::time::SystemTime,
    #[key_part(skip)]
    marker: PhantomData<T>,
}

#[derive(KeyPart)]
struct Generic<'a, T, const N: usize>
where
    T: Clone,
{
    items: [T; N],
    name: &'a str,
}

#[derive(KeyPart)]
enum Recursive {
    Leaf(u8),
    Node(Box<Recursive>, Box<Recursive>),
}

#[derive(KeyPart)]
enum Empty {}

#[idempotent(key = "order_id, action")]
async fn charge(order_id: OrderId, action: Action, named: Named, tuple: &Tuple) -> Result<u64, Error> {
    let _ = (named.id, &named.tags, tuple.0, &tuple.1);
    Ok(order_id.0 + u64::from(matches!(action, Action::Capture)))
}

#[idempotent(key = "request.id")]
async fn field_keyed(request: &Skipping<String>, unit: Unit) -> Result<u64, Error> {
    let _ = (unit, request.received_at, request.marker);
    Ok(request.id)
}

#[idempotent(key = "page")]
async fn generic(page: Generic<'_, u8, 2>, tree: Recursive) -> Result<usize, Error> {
    let _ = tree;
    Ok(page.items.len() + page.name.len())
}

fn assert_key_part<T: KeyPart + ?Sized>() {}

fn main() {
    let _ = charge;
    let _ = field_keyed;
    let _ = generic;
    let _ = (Action::Refund { partial: true }, Action::Split(1, 2), Action::Cancel);
    let _ = Recursive::Node(Box::new(Recursive::Leaf(1)), Box::new(Recursive::Leaf(2)));
    assert_key_part::<Empty>();
}
