use idempotent_core::KeyPart;

#[derive(KeyPart)]
#[key_part(transparent)]
struct Order(u64, String);

fn main() {}
