use idempotent_core::KeyPart;
use std::time::SystemTime;

#[derive(KeyPart)]
struct Order {
    id: u64,
    placed_at: SystemTime,
}

fn main() {}
