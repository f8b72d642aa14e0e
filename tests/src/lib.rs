//! Shared support for the tests and benchmarks of `idempotent` (package `idempotent-tests`,
//! never published). Test binaries in `tests/` and benches in `benches/` link this library as
//! `support`; nothing here ships in the product crates.
//!
//! A test that needs a live service reads its URL from the environment
//! (`IDEMPOTENT_POSTGRES_URL`, `IDEMPOTENT_REDIS_URL`, with local defaults). When the service
//! cannot be reached, the test prints one line and skips, unless
//! `IDEMPOTENT_REQUIRE_SERVICES=1` (set by `.ci/run`), in which case a missing service fails
//! the test. Every test uses names of its own ([`unique_name`]) and cleans up what it created.
//!
//! - [`services`]: where the servers are, and what to do when one is missing;
//! - [`request`] and [`acquire`]: claims made directly on a store;
//! - [`assert_duplicates_run_once`]: the check that concurrent duplicates run a body once;
//! - [`Guarded`]: a store that owns its clean-up;
//! - `postgres`, `sqlite`, `redis` (features `postgres`, `sqlite`, `redis`): stores on
//!   tables, files and key prefixes of their own, and raw access behind a store's back (for
//!   Redis, a connection of the tests' own: the product crate has no raw-command hook);
//! - [`redis_server`]: stopping and restarting the local Redis, for fault tests;
//! - [`tcp_proxy`]: a proxy that can go silent, for timeout tests;
//! - [`bench`]: running a benchmark's `main`, and the CPU each operation cost.

// The workspace's library lints: this package's own `[lints]` table does not inherit them.
#![warn(missing_docs, unreachable_pub)]

pub mod bench;
#[cfg(feature = "consumer")]
pub mod brokers;
mod claims;
mod duplicates;
mod guarded;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod redis_server;
pub mod services;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod tcp_proxy;

pub use claims::{acquire, request};
pub use duplicates::assert_duplicates_run_once;
pub use guarded::Guarded;
pub use services::{postgres_url, redis_url, service_url, skip, unavailable, unique_name};

/// The README's Rust examples, compiled and run as this library's doctests (`no_run` ones
/// compiled only), so the README cannot show code that does not build.
#[cfg(all(doctest, feature = "http", feature = "redis", feature = "rabbitmq"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
