-- One record as it is ($1 scope, $2 key), for inspect and forget: the columns the SQL stores
-- share (see sql_rows.rs), deadlines in microseconds since the Unix epoch, then the
-- statement's time in the same unit. Rows are checked in Rust, where an unreadable row is an
-- error; forget locks the row (FOR UPDATE, added in statements.rs).
SELECT state, owner, epoch, fingerprint,
    CAST(FLOOR(EXTRACT(EPOCH FROM lease_until) * 1000000) AS bigint),
    CAST(FLOOR(EXTRACT(EPOCH FROM expires_at) * 1000000) AS bigint),
    payload,
    CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp()) * 1000000) AS bigint)
FROM {table} WHERE scope = $1 AND key = $2
