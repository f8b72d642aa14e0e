use idempotent_core::KeyPart;

#[derive(KeyPart)]
#[key_part(crate = "not a path")]
struct Order {
    id: u64,
}

fn main() {}
