use idempotent_core::idempotent;

#[idempotent(key = "order_id")]
async fn charge(order_id: u64) {
    let _ = order_id;
}

fn main() {}
