use idempotent_core::KeyPart;

#[derive(KeyPart)]
enum Status {
    Shipped,
    #[key_part(rename = "Shipped")]
    Sent,
}

fn main() {}
