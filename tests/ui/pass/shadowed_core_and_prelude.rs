// Local items named like the crates and prelude items the expansion uses.
#![allow(dead_code, non_camel_case_types, unused_macros)]

mod core {}
mod std {}
mod serde {}

struct Sized;
struct Send;
struct Sync;
struct Option;
struct Some;
struct None;
struct Ok;
struct Err;
struct Box;
struct Vec;
struct String;
struct Future;
struct Arc;
struct Duration;
struct From;
struct Into;
struct Fingerprint;
struct IdempotencyKey;
struct __private;
type Result = ();
fn drop() {}
macro_rules! concat {
    () => {};
}
macro_rules! module_path {
    () => {};
}

use ::idempotent_core::{Error, idempotent};

#[idempotent(key = "order_id", ttl = "10m")]
async fn charge(order_id: u64, amount: u32) -> ::core::result::Result<u32, Error> {
    let _ = order_id;
    ::core::result::Result::Ok(amount)
}

struct Service {
    store: ::std::sync::Arc<dyn ::idempotent_core::IdempotencyStore>,
}

impl Service {
    #[idempotent(scope = "shadowed_core_and_prelude.refund", key = "order_id", store = self.store, on_in_flight = "reject")]
    async fn refund(&self, order_id: u64) -> ::core::result::Result<(), Error> {
        let _ = order_id;
        ::core::result::Result::Ok(())
    }
}

fn main() {
    let _ = charge;
    let _ = Service::refund;
}
