-- Forgets the record ($1 scope, $2 key) its transaction read and locked (inspect.sql, FOR
-- UPDATE). The row stays, released, so the next claim's epoch is above its epoch.
UPDATE {table} SET state = 'released', lease_until = NULL, payload = NULL
WHERE scope = $1 AND key = $2
