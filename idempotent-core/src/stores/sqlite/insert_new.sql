INSERT INTO "{table}"
    (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
VALUES (?1, ?2, 'in_progress', ?3, ?7, ?4, ?5, ?6, NULL)
ON CONFLICT (scope, "key") DO NOTHING
