// `#[key_part(crate = "...")]` for a renamed dependency, next to a module that shadows
// `idempotent_core` and the prelude names the derive uses.
#![allow(dead_code, non_camel_case_types)]

extern crate idempotent_core as renamed;

mod shadowed {
    #[allow(unused_imports)]
    use std as idempotent_core;

    struct Option;
    struct Some;
    struct None;
    struct Box;
    struct KeyWriter;

    use renamed::KeyPart;

    #[derive(KeyPart)]
    #[key_part(crate = "renamed")]
    pub struct Renamed {
        pub id: u64,
    }

    #[derive(KeyPart)]
    #[key_part(crate = "::renamed")]
    pub enum Absolute {
        A(u8),
        B { b: ::std::string::String },
    }

    // Without `crate`, the derive uses `::idempotent_core`, which the `use` above does not
    // shadow.
    #[derive(KeyPart)]
    pub struct DefaultPath(pub u64);
}

mod core {}
mod std {}

fn assert_key_part<T: renamed::KeyPart>() {}

fn main() {
    assert_key_part::<shadowed::Renamed>();
    assert_key_part::<shadowed::Absolute>();
    assert_key_part::<shadowed::DefaultPath>();
}
