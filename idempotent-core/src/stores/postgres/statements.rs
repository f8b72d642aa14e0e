//! The SQL, from the `.sql` files beside this one, with the placeholders filled in once per
//! store: `{table}` (the table's quoted name), `{index}` (its expiry index's) and
//! `{lock_timeout}` (the claim's, as PostgreSQL spells it).
//!
//! The files are the one source of each statement: `schema.sql` is also the schema in the
//! module docs, and the reasoning behind a statement is a comment in its file. Comments are
//! taken out here, so the server, its logs and `pg_stat_statements` see only the SQL.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::types::PgInterval;

use super::table::PgTable;
use crate::store::time::micros;

/// The table and its index (the schema in the module docs is this file).
pub(super) const SCHEMA: &str = include_str!("schema.sql");

/// Every statement the store runs, for one table.
pub(super) struct Statements {
    pub(super) create_table: Arc<str>,
    pub(super) create_index: Arc<str>,
    pub(super) migrate_lock: Arc<str>,
    pub(super) columns: Arc<str>,
    pub(super) unique_key: Arc<str>,
    pub(super) claim: Arc<str>,
    pub(super) complete: Arc<str>,
    pub(super) release: Arc<str>,
    pub(super) extend: Arc<str>,
    pub(super) inspect: Arc<str>,
    pub(super) inspect_for_update: Arc<str>,
    pub(super) forget: Arc<str>,
    pub(super) purge: Arc<str>,
}

impl Statements {
    /// The table's names are validated identifiers (see `table_name.rs`), so they go into the
    /// SQL quoted but not escaped.
    pub(super) fn new(table: &PgTable, lock_timeout: Duration) -> Self {
        let lock_timeout = lock_timeout_setting(lock_timeout);
        let fill = |text: &str| -> String {
            without_comments(text)
                .replace("{table}", &table.quoted)
                .replace("{index}", &table.index_quoted())
                .replace("{lock_timeout}", &lock_timeout)
        };
        let sql = |text: &str| -> Arc<str> { fill(text).into() };
        // Two statements: `migrate` checks the table's shape between them.
        let inspect = fill(include_str!("inspect.sql"));
        let schema = fill(SCHEMA);
        let (create_table, create_index) = schema.split_once(';').unwrap_or((&schema, ""));
        let create_index = create_index.trim().trim_end_matches(';');
        Statements {
            create_table: create_table.trim().into(),
            create_index: create_index.into(),
            migrate_lock: sql(include_str!("migrate_lock.sql")),
            columns: sql(include_str!("columns.sql")),
            unique_key: sql(include_str!("unique_key.sql")),
            claim: sql(include_str!("claim.sql")),
            complete: sql(include_str!("complete.sql")),
            release: sql(include_str!("release.sql")),
            extend: sql(include_str!("extend.sql")),
            inspect_for_update: format!("{inspect}\nFOR UPDATE").into(),
            inspect: inspect.into(),
            forget: sql(include_str!("forget.sql")),
            purge: sql(include_str!("purge.sql")),
        }
    }
}

/// A statement string for sqlx. Only ever called with the statements built in
/// [`Statements::new`], whose dynamic parts are validated, quoted names and a number.
pub(super) fn sql(statement: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(statement))
}

/// A duration as a PostgreSQL interval of whole microseconds, capped at "forever".
pub(super) fn interval(duration: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: micros(duration),
    }
}

/// `lock_timeout` as the claim sets it: whole milliseconds, rounded up, at least 1 (0 would
/// mean "wait forever") and at most what PostgreSQL accepts.
fn lock_timeout_setting(timeout: Duration) -> String {
    let millis = timeout
        .as_nanos()
        .div_ceil(1_000_000)
        .clamp(1, i32::MAX as u128);
    format!("{millis}ms")
}

/// `text` without its `--` comments and the lines they leave empty, each line trimmed at its
/// end. A `--` inside a string literal is kept; no literal in these files spans lines.
fn without_comments(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line[..comment_start(line).unwrap_or(line.len())].trim_end();
        if !line.is_empty() {
            if !code.is_empty() {
                code.push('\n');
            }
            code.push_str(line);
        }
    }
    code
}

/// Where the line's `--` comment starts, outside string literals.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut in_literal = false;
    for (at, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\'' => in_literal = !in_literal,
            b'-' if !in_literal && bytes.get(at + 1) == Some(&b'-') => return Some(at),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::table_name::TableName;

    fn statements(lock_timeout: Duration) -> Statements {
        let name = TableName {
            schema: None,
            table: "idempotency_records".to_owned(),
        };
        Statements::new(&PgTable::new(&name), lock_timeout)
    }

    /// A persisted format: the table must not change shape by accident.
    #[test]
    fn the_table_is_created_as_the_docs_show() {
        let sql = statements(Duration::from_millis(100));
        assert_eq!(
            &*sql.create_table,
            "CREATE TABLE IF NOT EXISTS \"idempotency_records\" (\n\
             \x20   scope       bytea       NOT NULL,\n\
             \x20   key         bytea       NOT NULL,\n\
             \x20   state       text        NOT NULL,\n\
             \x20   owner       bytea,\n\
             \x20   epoch       bigint      NOT NULL,\n\
             \x20   fingerprint bytea       NOT NULL,\n\
             \x20   lease_until timestamptz,\n\
             \x20   expires_at  timestamptz NOT NULL,\n\
             \x20   payload     bytea,\n\
             \x20   PRIMARY KEY (scope, key)\n\
             )"
        );
        assert_eq!(
            &*sql.create_index,
            "CREATE INDEX IF NOT EXISTS \"idempotency_records_expires_at_idx\" \
             ON \"idempotency_records\" (expires_at)"
        );
    }

    #[test]
    fn every_placeholder_is_filled_and_every_comment_removed() {
        let sql = statements(Duration::from_millis(100));
        assert!(
            sql.claim
                .contains("set_config('lock_timeout', '100ms', true)")
        );
        for statement in [
            &sql.create_table,
            &sql.create_index,
            &sql.migrate_lock,
            &sql.columns,
            &sql.unique_key,
            &sql.claim,
            &sql.complete,
            &sql.release,
            &sql.extend,
            &sql.purge,
        ] {
            assert!(!statement.is_empty());
            assert!(
                !statement.contains(['{', '}']) && !statement.contains("--"),
                "{statement}"
            );
        }
    }

    #[test]
    fn comments_end_at_the_line_and_never_inside_a_literal() {
        assert_eq!(
            without_comments("-- why\nSELECT 'a--b', 1 -- what\n\n  -- more\nFROM t  "),
            "SELECT 'a--b', 1\nFROM t"
        );
    }

    /// The claim writes the row checks and `takeable` out once per alias: the snapshot's
    /// (`c`, claimed by `$4`) and the locked row's (`r`, claimed by `excluded.owner`). They
    /// must stay the same conditions.
    #[test]
    fn the_claim_checks_both_rows_alike() {
        let claim = statements(Duration::from_millis(100))
            .claim
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let snapshot: Vec<String> = between(&claim, "CASE WHEN ", " END AS unreadable")
            .split(" WHEN ")
            .map(|case| between(case, "", " IS NOT TRUE").replace("c.", "r."))
            .collect();
        let locked_where = between(&claim, "payload = NULL WHERE ", " RETURNING r.epoch");
        let mut locked: Vec<&str> = locked_where.split(" IS TRUE AND ").collect();
        let locked_takeable = locked.pop().unwrap_or_default();
        assert_eq!(snapshot.len(), 9);
        assert_eq!(snapshot, locked);
        let snapshot_takeable = between(&claim, "lease_until, expires_at, ", " AS takeable")
            .replace("c.", "r.")
            .replace("$4", "excluded.owner");
        assert_eq!(snapshot_takeable, locked_takeable);
    }

    /// The text of `text` after `from` (from the start if empty) up to `to`.
    fn between<'t>(text: &'t str, from: &str, to: &str) -> &'t str {
        let start = text.find(from).map_or(0, |at| at + from.len());
        let end = text[start..].find(to).map_or(text.len(), |at| start + at);
        &text[start..end]
    }

    #[test]
    fn lock_timeouts_are_whole_milliseconds_and_never_zero() {
        assert_eq!(lock_timeout_setting(Duration::from_millis(100)), "100ms");
        assert_eq!(lock_timeout_setting(Duration::from_micros(1500)), "2ms");
        assert_eq!(lock_timeout_setting(Duration::ZERO), "1ms");
        assert_eq!(lock_timeout_setting(Duration::MAX), "2147483647ms");
    }
}
