//! The table's names as PostgreSQL spells them: quoted, optionally schema-qualified, and the
//! name of its expiry index. Which names are valid is the SQL stores' one rule
//! (`stores/table_name.rs`).

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::stores::table_name::{MAX_IDENTIFIER_LEN, TableName};

/// The table records are kept in unless the builder names another.
pub(super) const DEFAULT_TABLE: &str = "idempotency_records";

/// A validated table name and its PostgreSQL spellings.
pub(super) struct PgTable {
    /// As configured: `table` or `schema.table`.
    pub(super) display: String,
    /// Quoted for SQL: `"table"` or `"schema"."table"`.
    pub(super) quoted: String,
    /// The name of the expiry index (unqualified: it lives in the table's schema).
    pub(super) index: String,
}

impl PgTable {
    pub(super) fn default_table() -> Self {
        PgTable::new(&TableName {
            schema: None,
            table: DEFAULT_TABLE.to_owned(),
        })
    }

    /// Validates `name` (see [`TableName`]; PostgreSQL takes `schema.table` too).
    pub(super) fn parse(name: &str) -> Result<Self, Error> {
        TableName::parse(name, true).map(|name| PgTable::new(&name))
    }

    pub(super) fn new(name: &TableName) -> Self {
        let table = &name.table;
        let (display, quoted) = match &name.schema {
            Some(schema) => (
                format!("{schema}.{table}"),
                format!("\"{schema}\".\"{table}\""),
            ),
            None => (table.clone(), format!("\"{table}\"")),
        };
        const SUFFIX: &str = "_expires_at_idx";
        let index = if table.len() + SUFFIX.len() <= MAX_IDENTIFIER_LEN {
            format!("{table}{SUFFIX}")
        } else {
            // PostgreSQL would truncate a longer name, and two long table names sharing a
            // prefix would then share an index name; a digest of the full name keeps them
            // apart.
            let digest = Sha256::digest(table.as_bytes());
            let tag: String = digest[..4]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            format!(
                "{}_{tag}{SUFFIX}",
                &table[..MAX_IDENTIFIER_LEN - SUFFIX.len() - 9]
            )
        };
        PgTable {
            display,
            quoted,
            index,
        }
    }

    /// The index name, quoted for SQL.
    pub(super) fn index_quoted(&self) -> String {
        format!("\"{}\"", self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_table_names_get_distinct_short_index_names() {
        let name = |schema: Option<&str>, table: String| {
            PgTable::new(&TableName {
                schema: schema.map(str::to_owned),
                table,
            })
        };
        let a = name(None, format!("{}a", "x".repeat(62)));
        let b = name(None, format!("{}b", "x".repeat(62)));
        assert!(a.index.len() <= MAX_IDENTIFIER_LEN);
        assert_ne!(a.index, b.index);
        let short = name(Some("s"), "t".to_owned());
        assert_eq!(short.index, "t_expires_at_idx");
        assert_eq!(short.quoted, "\"s\".\"t\"");
        assert_eq!(short.display, "s.t");
        assert!(PgTable::parse("billing.records").is_ok());
        assert!(PgTable::parse("Billing.records").is_err());
    }
}
