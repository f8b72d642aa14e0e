//! The SQL, from the `.sql` files beside this one, with the table name put in once per store.

use std::sync::Arc;

use sqlx::sqlite::SqliteArguments;
use sqlx::{AssertSqlSafe, Sqlite};

/// The table and its index, `{table}` standing for the table name (the schema in the module
/// docs is this file).
pub(super) const SCHEMA: &str = include_str!("schema.sql");

/// Every statement the store runs, for one table.
pub(super) struct Statements {
    pub(super) schema: Vec<Arc<str>>,
    pub(super) columns: Arc<str>,
    pub(super) select: Arc<str>,
    pub(super) insert_new: Arc<str>,
    pub(super) acquire: Arc<str>,
    pub(super) renew: Arc<str>,
    pub(super) complete: Arc<str>,
    pub(super) release: Arc<str>,
    pub(super) extend: Arc<str>,
    pub(super) forget: Arc<str>,
    pub(super) purge: Arc<str>,
}

impl Statements {
    /// `table` is validated (lowercase letters, digits, `_`), so it goes into the SQL quoted
    /// but not escaped.
    pub(super) fn new(table: &str) -> Self {
        let sql = |text: &str| -> Arc<str> { text.replace("{table}", table).into() };
        Statements {
            schema: SCHEMA
                .split(';')
                .map(str::trim)
                .filter(|statement| !statement.is_empty())
                .map(sql)
                .collect(),
            columns: sql(include_str!("columns.sql")),
            select: sql(include_str!("select.sql")),
            insert_new: sql(include_str!("insert_new.sql")),
            acquire: sql(include_str!("acquire.sql")),
            renew: sql(include_str!("renew.sql")),
            complete: sql(include_str!("complete.sql")),
            release: sql(include_str!("release.sql")),
            extend: sql(include_str!("extend.sql")),
            forget: sql(include_str!("forget.sql")),
            purge: sql(include_str!("purge.sql")),
        }
    }
}

/// A query on one of the store's statements.
pub(super) fn query(sql: &Arc<str>) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    sqlx::query(AssertSqlSafe(sql.clone()))
}
