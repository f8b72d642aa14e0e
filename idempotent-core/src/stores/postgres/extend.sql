-- Compare-and-set on the lease ($1 to $4); $5 is the new lease. The record lives at least
-- as long as its lease.
UPDATE {table} SET lease_until = statement_timestamp() + $5,
    expires_at = GREATEST(expires_at, statement_timestamp() + $5)
WHERE scope = $1 AND key = $2 AND state = 'in_progress' AND owner = $3 AND epoch = $4
