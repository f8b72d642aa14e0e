//! PostgreSQL helpers: a store on a table of its own, dropped when the test ends, reaching the
//! server directly or through a proxy that can go silent.

use std::net::SocketAddr;
use std::time::Duration;

use idempotent_core::stores::postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use idempotent_core::{PostgresStore, PostgresStoreBuilder};

use crate::tcp_proxy::SilentProxy;

/// Drops the named tables, then the named functions, when the test ends (also when it
/// panics), on a connection and a runtime of its own, since the test's runtime may already be
/// shutting down.
pub struct DropTables {
    /// The server, reached on a connection of the guard's own.
    pub url: String,
    /// Tables to drop (`DROP TABLE IF EXISTS ... CASCADE`), in order.
    pub tables: Vec<String>,
    /// Functions to drop afterwards, with their argument lists (`name()`).
    pub functions: Vec<String>,
}

impl Drop for DropTables {
    fn drop(&mut self) {
        let statements = std::mem::take(&mut self.tables)
            .into_iter()
            .map(|table| format!("DROP TABLE IF EXISTS {table} CASCADE"))
            .chain(
                std::mem::take(&mut self.functions)
                    .into_iter()
                    .map(|function| format!("DROP FUNCTION IF EXISTS {function} CASCADE")),
            )
            .collect();
        if let Err(error) = run_on_the_side(&self.url, statements) {
            eprintln!("could not drop test tables: {error}");
        }
    }
}

/// Drops a database when the test ends (also when it panics), like [`DropTables`].
pub struct DropDatabase {
    /// The server, reached on a connection of the guard's own (not to the database dropped).
    pub url: String,
    /// The database's name.
    pub name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(error) = run_on_the_side(&self.url, vec![statement]) {
            eprintln!("could not drop test database: {error}");
        }
    }
}

/// Runs `statements` in order on a connection to `url`, on a thread and a runtime of their
/// own, so that it works from a `Drop` whatever runtime (if any) the value is dropped on.
fn run_on_the_side(
    url: &str,
    statements: Vec<String>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut connection = PgConnection::connect(&url).await?;
            sqlx::query("SET lock_timeout = '10s'")
                .execute(&mut connection)
                .await?;
            for statement in statements {
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut connection)
                    .await?;
            }
            connection.close().await?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the clean-up thread panicked")?
}

/// `calls` summed over the statements `pg_stat_statements` has seen that name `table`: the
/// statements a store on that table ran, counted on the server. Fails where the extension is
/// not installed (it is not created here).
pub async fn statement_calls(store: &PostgresStore, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
         WHERE query LIKE '%' || $1 || '%' AND query NOT LIKE '%pg_stat_statements%'",
    )
    .bind(table)
    .fetch_one(store.pool())
    .await
}

/// A store on a fresh table, migrated, and the guard that drops the table.
pub async fn connect(prefix: &str, max_connections: u32) -> Option<(PostgresStore, DropTables)> {
    connect_with(
        prefix,
        PostgresStore::builder().max_connections(max_connections),
    )
    .await
}

/// Like [`connect`], with the builder's other settings (its table is replaced). The store's
/// connections carry the table name as their `application_name`, so a test can find them in
/// `pg_stat_activity`.
pub async fn connect_with(
    prefix: &str,
    builder: PostgresStoreBuilder,
) -> Option<(PostgresStore, DropTables)> {
    let url = crate::postgres_url();
    let table = crate::unique_name(prefix);
    let separator = if url.contains('?') { '&' } else { '?' };
    let named = format!("{url}{separator}application_name={table}");
    let store = match builder.table(&table).connect(&named).await {
        Ok(store) => store,
        Err(error) => return crate::unavailable("PostgreSQL", &url, error),
    };
    let guard = DropTables {
        url,
        tables: vec![table],
        functions: Vec::new(),
    };
    store.migrate().await.expect("migrate");
    Some((store, guard))
}

/// A store on a fresh table, migrated, whose pool of `max_connections` reaches the server
/// through a [`SilentProxy`]; the builder's other settings apply (its table is replaced).
/// Waiting for a pool connection is allowed longer than the store's timeout, so that the
/// timeout is what bounds an operation.
pub async fn connect_through_proxy(
    prefix: &str,
    builder: PostgresStoreBuilder,
    max_connections: u32,
) -> Option<(PostgresStore, SilentProxy, DropTables)> {
    let url = crate::postgres_url();
    // Reachable directly first, so a missing server is reported as such.
    match PgConnection::connect(&url).await {
        Ok(connection) => connection.close().await.expect("close"),
        Err(error) => return crate::unavailable("PostgreSQL", &url, error),
    }
    let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    let upstream: SocketAddr = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve the PostgreSQL host")
        .next()
        .expect("an address for the PostgreSQL host");
    let proxy = SilentProxy::start(upstream).await.expect("start the proxy");
    let table = crate::unique_name(prefix);
    let proxied = options
        .host("127.0.0.1")
        .port(proxy.address().port())
        .application_name(&table);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(60))
        .test_before_acquire(false)
        .connect_lazy_with(proxied);
    let guard = DropTables {
        url: url.clone(),
        tables: vec![table.clone()],
        functions: Vec::new(),
    };
    // The table is made directly, with the default timeout: a test's short timeout is for the
    // outage it measures, and a migration on a loaded machine can take longer than that.
    PostgresStore::builder()
        .table(&table)
        .connect(&url)
        .await
        .expect("connect directly")
        .migrate()
        .await
        .expect("migrate");
    let store = builder.table(&table).build(pool).expect("build the store");
    Some((store, proxy, guard))
}

/// Raw access to a [`PostgresStore`]'s rows for the conformance checks of damaged records
/// (`store_conformance_tests!(.., with_raw_records, ..)`): statements on the store's pool,
/// behind the store's back.
pub struct RawRows {
    pool: sqlx::PgPool,
    table: String,
}

impl RawRows {
    /// The rows of `store`'s table.
    pub fn of(store: &PostgresStore) -> Self {
        RawRows {
            pool: store.pool().clone(),
            table: store.table().to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl idempotent_core::testing::RawRecords for RawRows {
    async fn set_epoch(&self, scope: &str, key: &str, epoch: i64) {
        let statement = format!(
            "UPDATE {} SET epoch = $1 WHERE scope = $2 AND key = $3",
            self.table
        );
        let done = sqlx::query(AssertSqlSafe(statement))
            .bind(epoch)
            .bind(scope.as_bytes())
            .bind(key.as_bytes())
            .execute(&self.pool)
            .await
            .expect("update the stored epoch");
        assert_eq!(done.rows_affected(), 1, "no row for ({scope:?}, {key:?})");
    }

    fn max_epoch(&self) -> i64 {
        // `epoch bigint`.
        i64::MAX
    }
}
