use idempotent_core::KeyPart;
use std::collections::HashMap;

#[derive(KeyPart)]
enum Request {
    Tagged(u64, HashMap<String, String>),
}

fn main() {}
