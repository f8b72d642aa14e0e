use idempotent_core::idempotent;

#[idempotent(key = "order_id")]
async fn charge(order_id: u64) -> Option<u32> {
    u32::try_from(order_id).ok()
}

fn main() {}
