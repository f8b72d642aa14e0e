UPDATE "{table}" SET state = 'released', lease_until_ms = NULL, payload = NULL
WHERE scope = ?1 AND "key" = ?2
