//! The tour on `SqliteStore`: records in a database file, so they survive the process. Opens
//! the file twice to show a completed record replayed after a "restart".
//!
//! Run it with `cargo run -p idempotent-examples --example sqlite`.

use idempotent_core::{Error, SqliteStore};
use idempotent_examples::{tour, unique_name};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("idempotent_example")));
    println!("== SqliteStore in {}", path.display());
    let store = SqliteStore::open(&path).await?;
    tour(&store).await?;
    store.close().await;

    println!("== the same file, opened again (a restart)");
    let reopened = SqliteStore::open(&path).await?;
    tour(&reopened).await?;
    reopened.close().await;

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    println!("removed {}", path.display());
    Ok(())
}
