// `crate = "..."` for a renamed dependency, next to a module that shadows `idempotent_core`.
extern crate idempotent_core as renamed;

mod shadowed {
    // Generated code must not resolve `idempotent_core` relative to the user's module.
    #[allow(unused_imports)]
    use std as idempotent_core;

    use renamed::{Error, idempotent};

    #[idempotent(key = "order_id", crate = "renamed")]
    pub async fn renamed_path(order_id: u64, amount: u64) -> Result<u64, Error> {
        Ok(order_id + amount)
    }

    #[idempotent(key = "order_id", crate = "::renamed", cache_errors = false)]
    pub async fn absolute_renamed_path(order_id: u64) -> Result<(), Error> {
        let _ = order_id;
        Ok(())
    }

    // Without `crate`, the expansion uses `::idempotent_core`, which the `use` above does not
    // shadow.
    #[idempotent(key = "order_id")]
    pub async fn default_path(order_id: u64) -> Result<u64, Error> {
        Ok(order_id)
    }
}

fn main() {
    let _ = shadowed::renamed_path;
    let _ = shadowed::absolute_renamed_path;
    let _ = shadowed::default_path;
}
