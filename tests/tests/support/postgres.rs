//! PostgreSQL helpers: a store on a table of its own, dropped when the test ends.

use idempotent_core::PostgresStore;
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};

/// Drops the named tables when the test ends (also when it panics), on a connection and a
/// runtime of its own, since the test's runtime may already be shutting down.
pub struct DropTables {
    pub url: String,
    pub tables: Vec<String>,
}

impl Drop for DropTables {
    fn drop(&mut self) {
        let url = self.url.clone();
        let tables = std::mem::take(&mut self.tables);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection = PgConnection::connect(&url).await?;
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut connection)
                    .await?;
                for table in tables {
                    sqlx::query(AssertSqlSafe(format!(
                        "DROP TABLE IF EXISTS {table} CASCADE"
                    )))
                    .execute(&mut connection)
                    .await?;
                }
                connection.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test tables: {error}");
        }
    }
}

/// A store on a fresh table, migrated, and the guard that drops the table.
pub async fn connect(prefix: &str, max_connections: u32) -> Option<(PostgresStore, DropTables)> {
    let url = super::postgres_url();
    let table = super::unique_name(prefix);
    let store = match PostgresStore::builder()
        .table(&table)
        .max_connections(max_connections)
        .connect(&url)
        .await
    {
        Ok(store) => store,
        Err(error) => return super::unavailable("PostgreSQL", &url, error),
    };
    let guard = DropTables {
        url,
        tables: vec![table],
    };
    store.migrate().await.expect("migrate");
    Some((store, guard))
}
