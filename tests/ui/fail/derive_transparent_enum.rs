use idempotent_core::KeyPart;

#[derive(KeyPart)]
#[key_part(transparent)]
enum Status {
    Shipped(u64),
}

fn main() {}
