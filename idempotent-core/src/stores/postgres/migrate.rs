//! [`PostgresStore::migrate`]: creating the table, and checking that an existing one has the
//! shape the store needs.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PostgresStore;
#[cfg(doc)]
use super::PostgresStoreBuilder;
use super::connection::store_error;
use super::statements::sql;
use crate::error::Error;

impl PostgresStore {
    /// Creates the table and its expiry index if they do not exist (the schema is in the
    /// [module docs](super)), then checks that the table has the shape the store needs. Safe
    /// to run on every start and from several processes at once: concurrent runs are
    /// serialized by an advisory lock. Bounded by [`PostgresStoreBuilder::timeout`], waiting
    /// for a concurrent run included.
    ///
    /// An existing table of another shape fails with [`Error::InvalidInput`] (it is a
    /// configuration to fix, not an outage to retry), naming every difference: a column of
    /// the schema that is missing, of another type or of another nullability; a `NOT NULL`
    /// column without a default that the store would never fill; no primary key or unique
    /// index on exactly `(scope, key)`. Nothing is created then. Other columns are accepted
    /// (nullable, or with a default): the store never writes them.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.bounded("migration", self.migrate_unbounded()).await
    }

    async fn migrate_unbounded(&self) -> Result<(), Error> {
        let mut tx = self.inner.pool.begin().await.map_err(store_error)?;
        sqlx::query(sql(&self.inner.sql.migrate_lock))
            .bind(format!("idempotent.migrate:{}", self.inner.table))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::query(sql(&self.inner.sql.create_table))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        // Checked before the index is created, which would otherwise fail on a table without
        // `expires_at` with a less helpful message.
        let columns: Vec<FoundColumn> = sqlx::query(sql(&self.inner.sql.columns))
            .bind(&self.inner.table_sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?
            .iter()
            .map(FoundColumn::from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)?;
        let unique_key: bool = sqlx::query_scalar(sql(&self.inner.sql.unique_key))
            .bind(&self.inner.table_sql)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_error)?;
        let differences = shape_differences(&columns, unique_key);
        if !differences.is_empty() {
            return Err(Error::InvalidInput {
                reason: format!(
                    "table {} does not have the shape PostgresStore needs (see the schema in \
                     the PostgresStore docs): {}",
                    self.inner.table,
                    differences.join("; ")
                ),
            });
        }
        sqlx::query(sql(&self.inner.sql.create_index))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)
    }
}

/// The columns of the schema (`schema.sql`): name, type as `format_type` spells it, type as
/// the schema writes it, and whether it is `NOT NULL`. `migrate` checks an existing table
/// against this list; a unit test checks it against `schema.sql`.
const COLUMNS: [(&str, &str, &str, bool); 9] = [
    ("scope", "bytea", "bytea", true),
    ("key", "bytea", "bytea", true),
    ("state", "text", "text", true),
    ("owner", "bytea", "bytea", false),
    ("epoch", "bigint", "bigint", true),
    ("fingerprint", "bytea", "bytea", true),
    (
        "lease_until",
        "timestamp with time zone",
        "timestamptz",
        false,
    ),
    (
        "expires_at",
        "timestamp with time zone",
        "timestamptz",
        true,
    ),
    ("payload", "bytea", "bytea", false),
];

/// A column of an existing table, as the catalog describes it.
struct FoundColumn {
    name: String,
    type_name: String,
    not_null: bool,
    /// A default, an identity or a generated column: inserts need not name it.
    filled_by_server: bool,
}

impl FoundColumn {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(FoundColumn {
            name: row.try_get(0)?,
            type_name: row.try_get(1)?,
            not_null: row.try_get(2)?,
            filled_by_server: row.try_get(3)?,
        })
    }
}

/// How an existing table differs from the schema the store needs; empty when it fits.
fn shape_differences(found: &[FoundColumn], has_unique_key: bool) -> Vec<String> {
    let nullability = |not_null: bool| if not_null { "NOT NULL" } else { "nullable" };
    let mut differences = Vec::new();
    for (name, type_name, _, not_null) in COLUMNS {
        match found.iter().find(|column| column.name == name) {
            None => differences.push(format!("column `{name}` is missing")),
            Some(column) => {
                if column.type_name != type_name {
                    differences.push(format!(
                        "column `{name}` is {}, expected {type_name}",
                        column.type_name
                    ));
                }
                if column.not_null != not_null {
                    differences.push(format!(
                        "column `{name}` is {}, expected {}",
                        nullability(column.not_null),
                        nullability(not_null)
                    ));
                }
            }
        }
    }
    for column in found {
        let known = COLUMNS.iter().any(|(name, ..)| *name == column.name);
        if !known && column.not_null && !column.filled_by_server {
            differences.push(format!(
                "column `{}` is NOT NULL without a default, and the store never writes it",
                column.name
            ));
        }
    }
    if !has_unique_key {
        differences.push(String::from(
            "no primary key or unique index on exactly (scope, key)",
        ));
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::postgres::statements::SCHEMA;

    /// `migrate` creates the table from `schema.sql` and checks it against [`COLUMNS`]: they
    /// must list the same columns.
    #[test]
    fn the_schema_declares_the_columns_the_shape_check_expects() {
        let declared: Vec<(String, String, bool)> = SCHEMA
            .lines()
            .skip(1)
            .map(|line| line.split("--").next().unwrap_or_default().trim())
            .take_while(|line| !line.starts_with("PRIMARY KEY"))
            .map(|line| {
                let words: Vec<&str> = line.trim_end_matches(',').split_whitespace().collect();
                (
                    words[0].to_owned(),
                    words[1].to_owned(),
                    words[2..] == ["NOT", "NULL"],
                )
            })
            .collect();
        let expected: Vec<(String, String, bool)> = COLUMNS
            .iter()
            .map(|(name, _, declared, not_null)| {
                ((*name).to_owned(), (*declared).to_owned(), *not_null)
            })
            .collect();
        assert_eq!(declared, expected);
    }

    #[test]
    fn shape_differences_name_each_column() {
        let schema = || {
            COLUMNS
                .iter()
                .map(|(name, type_name, _, not_null)| FoundColumn {
                    name: (*name).to_owned(),
                    type_name: (*type_name).to_owned(),
                    not_null: *not_null,
                    filled_by_server: false,
                })
                .collect::<Vec<_>>()
        };
        assert!(shape_differences(&schema(), true).is_empty());

        let mut columns = schema();
        columns.retain(|column| column.name != "payload");
        columns[4].type_name = "integer".to_owned(); // epoch
        columns[3].not_null = true; // owner
        columns.push(FoundColumn {
            name: "tenant".to_owned(),
            type_name: "text".to_owned(),
            not_null: true,
            filled_by_server: false,
        });
        columns.push(FoundColumn {
            name: "created_at".to_owned(),
            type_name: "timestamp with time zone".to_owned(),
            not_null: true,
            filled_by_server: true,
        });
        assert_eq!(
            shape_differences(&columns, false),
            [
                "column `owner` is NOT NULL, expected nullable",
                "column `epoch` is integer, expected bigint",
                "column `payload` is missing",
                "column `tenant` is NOT NULL without a default, and the store never writes it",
                "no primary key or unique index on exactly (scope, key)",
            ]
        );
    }
}
