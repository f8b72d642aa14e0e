SELECT state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload
FROM "{table}" WHERE scope = ?1 AND "key" = ?2
