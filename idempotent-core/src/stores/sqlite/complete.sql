-- Compare-and-set on the lease; also matches this lease's own completed row (a retried
-- completion), which it leaves as it is.
UPDATE "{table}" SET state = 'completed',
    payload = CASE WHEN state = 'completed' THEN payload ELSE ?1 END,
    expires_at_ms = CASE WHEN state = 'completed' THEN expires_at_ms ELSE ?2 END,
    lease_until_ms = NULL
WHERE scope = ?3 AND "key" = ?4 AND owner = ?5 AND epoch = ?6
    AND state IN ('in_progress', 'completed')
