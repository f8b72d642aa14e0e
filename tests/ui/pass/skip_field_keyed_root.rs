// An argument keyed by a field is fingerprinted whole unless `skip` names it: here the rest of
// the request (a timestamp) must not make a retry a payload mismatch.
use idempotent_core::{Error, idempotent};
use std::time::SystemTime;

struct Delivery {
    id: u64,
    received_at: SystemTime,
}

#[idempotent(key = "delivery.id", skip = "delivery")]
async fn acknowledge(delivery: &Delivery, attempt: u32) -> Result<u32, Error> {
    let _ = (delivery.id, delivery.received_at);
    Ok(attempt)
}

fn main() {
    let _ = acknowledge;
}
