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

/// Raw access to a `SqliteStore`'s rows for the conformance checks of damaged records
/// (`store_conformance_tests!(.., with_raw_records, ..)`): a connection of its own to the
/// database file, behind the store's back.
pub struct RawRows {
    path: PathBuf,
    table: String,
}

impl RawRows {
    /// The rows of `table` in the database at `path`.
    pub fn new(path: &Path, table: &str) -> Self {
        RawRows {
            path: path.to_owned(),
            table: table.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl idempotent_core::testing::RawRecords for RawRows {
    async fn set_epoch(&self, scope: &str, key: &str, epoch: i64) {
        use sqlx::{ConnectOptions, Connection};
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.path)
            .busy_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .expect("raw sqlite connection");
        let statement = format!(
            r#"UPDATE "{}" SET epoch = ? WHERE scope = ? AND "key" = ?"#,
            self.table
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(epoch)
            .bind(scope)
            .bind(key)
            .execute(&mut connection)
            .await
            .expect("update the stored epoch");
        assert_eq!(done.rows_affected(), 1, "no row for ({scope:?}, {key:?})");
        connection.close().await.expect("close the raw connection");
    }

    fn max_epoch(&self) -> i64 {
        // `epoch INTEGER`: a signed 64-bit integer.
        i64::MAX
    }
}
