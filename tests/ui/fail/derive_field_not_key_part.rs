use idempotent_core::KeyPart;

struct Address {
    street: String,
}

#[derive(KeyPart)]
struct Order {
    id: u64,
    address: Address,
}

fn main() {}
