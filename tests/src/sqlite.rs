//! SQLite helpers: a database file that cleans up after itself.

use std::path::{Path, PathBuf};

use idempotent_core::store::OwnerId;

/// A database file under the temp directory, deleted (with its WAL and shared-memory files)
/// on drop.
pub struct TempDb {
    path: PathBuf,
}

impl TempDb {
    /// A fresh path (nothing is created yet) whose name holds `label`, this process's id and
    /// a unique owner id.
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "idempotent-sqlite-{label}-{}-{}.db",
            std::process::id(),
            OwnerId::new()
        ));
        TempDb { path }
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}
