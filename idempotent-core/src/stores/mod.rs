//! Store backends. The in-memory store is always available; the others sit behind features.

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
mod redis_connection;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_rows;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod table_name;
#[cfg(feature = "tiered")]
pub mod tiered;
