SELECT scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload
FROM "{table}" LIMIT 0
