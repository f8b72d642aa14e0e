use idempotent_core::KeyPart;

#[derive(KeyPart)]
struct Order {
    id: u64,
    #[key_part(skip = true)]
    note: String,
}

fn main() {}
