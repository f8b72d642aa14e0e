UPDATE "{table}" SET lease_until_ms = ?1, expires_at_ms = MAX(expires_at_ms, ?1)
WHERE scope = ?2 AND "key" = ?3
