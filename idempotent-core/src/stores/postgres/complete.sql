-- Compare-and-set on the lease ($1 to $4); also matches this lease's own completed row (a
-- retried completion), which it leaves as it is. $5 is the payload, $6 the ttl.
UPDATE {table} SET state = 'completed', lease_until = NULL,
    payload = CASE WHEN state = 'completed' THEN payload ELSE $5 END,
    expires_at = CASE WHEN state = 'completed' THEN expires_at ELSE statement_timestamp() + $6 END
WHERE scope = $1 AND key = $2 AND owner = $3 AND epoch = $4
    AND state IN ('in_progress', 'completed')
