//! The table names the SQL stores accept, checked rather than escaped: a name goes into SQL
//! text (quoted), so it must be one no quoting can get wrong.
//!
//! A name is a lowercase identifier matching `^[a-z_][a-z0-9_]{0,62}$` (PostgreSQL's identifier
//! length, so a name works in both dialects), not starting with `sqlite_` (SQLite reserves
//! it). PostgreSQL also accepts `schema.table`, each part by the same rule.

use crate::error::Error;

/// PostgreSQL's longest identifier, in bytes.
pub(crate) const MAX_IDENTIFIER_LEN: usize = 63;

/// A validated table name, optionally qualified by a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    pub(crate) schema: Option<String>,
    pub(crate) table: String,
}

impl TableName {
    /// Parses `name`; `allow_schema` accepts `schema.table`.
    pub(crate) fn parse(name: &str, allow_schema: bool) -> Result<Self, Error> {
        let invalid = || Error::InvalidInput {
            reason: format!(
                "invalid table name {name:?}: expected a lowercase identifier matching \
                 ^[a-z_][a-z0-9_]{{0,62}}$, not starting with `sqlite_`{}",
                if allow_schema {
                    ", optionally schema-qualified (schema.table)"
                } else {
                    ""
                }
            ),
        };
        let mut parts = name.split('.');
        let (schema, table) = match (parts.next(), parts.next(), parts.next()) {
            (Some(table), None, None) => (None, table),
            (Some(schema), Some(table), None) if allow_schema => (Some(schema), table),
            _ => return Err(invalid()),
        };
        if !schema.is_none_or(is_identifier) || !is_identifier(table) {
            return Err(invalid());
        }
        Ok(TableName {
            schema: schema.map(str::to_owned),
            table: table.to_owned(),
        })
    }
}

/// `^[a-z_][a-z0-9_]{0,62}$`, and not `sqlite_...`.
fn is_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'_'))
        && bytes.len() <= MAX_IDENTIFIER_LEN
        && bytes
            .iter()
            .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && !name.starts_with("sqlite_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        let longest = "a".repeat(63);
        for valid in ["t", "_t", "idempotency_records", "a1_b2", &longest] {
            assert!(
                TableName::parse(valid, false).is_ok(),
                "{valid} must be accepted"
            );
            assert!(
                TableName::parse(valid, true).is_ok(),
                "{valid} must be accepted"
            );
        }
        assert_eq!(
            TableName::parse("billing.records", true).ok(),
            Some(TableName {
                schema: Some("billing".to_owned()),
                table: "records".to_owned()
            })
        );
        assert!(TableName::parse("billing.records", false).is_err());
        for invalid in [
            "",
            "Records",
            "1records",
            "re-cords",
            "a.b.c",
            ".t",
            "t.",
            "t; DROP TABLE x",
            "\"t\"",
            "tëst",
            "sqlite_stat1",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    TableName::parse(invalid, true),
                    Err(Error::InvalidInput { .. })
                ),
                "{invalid:?} must be rejected"
            );
        }
    }
}
