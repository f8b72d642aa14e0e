use idempotent_core::KeyPart;

#[derive(KeyPart)]
struct Order {
    #[key_part(skipp)]
    id: u64,
}

fn main() {}
