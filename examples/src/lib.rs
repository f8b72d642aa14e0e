//! Runnable examples: see `examples/`. [`orders`] is the service of the `server` example.

pub mod orders;
