-- At most $1 expired rows. Rows claimed right now are skipped (SKIP LOCKED), and the expiry
-- is checked again on the row version the delete sees, so a record taken over meanwhile is
-- kept.
DELETE FROM {table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE expires_at <= statement_timestamp()
    LIMIT $1 FOR UPDATE SKIP LOCKED
)) AND expires_at <= statement_timestamp()
