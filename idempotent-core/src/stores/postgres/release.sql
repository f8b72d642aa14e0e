-- Compare-and-set on the lease ($1 to $4). The row stays, as a tombstone that keeps the
-- epoch until it expires.
UPDATE {table} SET state = 'released', lease_until = NULL, payload = NULL
WHERE scope = $1 AND key = $2 AND state = 'in_progress' AND owner = $3 AND epoch = $4
