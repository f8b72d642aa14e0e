use idempotent_core::KeyPart;

#[derive(KeyPart)]
enum Status {
    #[key_part(rename = "Sent", rename = "Shipped")]
    Shipped,
}

fn main() {}
