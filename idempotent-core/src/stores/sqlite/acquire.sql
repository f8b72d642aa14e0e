INSERT INTO "{table}"
    (scope, "key", state, owner, epoch, fingerprint, lease_until_ms, expires_at_ms, payload)
VALUES (?1, ?2, 'in_progress', ?3, ?4, ?5, ?6, ?7, NULL)
ON CONFLICT (scope, "key") DO UPDATE SET
    state = excluded.state, owner = excluded.owner, epoch = excluded.epoch,
    fingerprint = excluded.fingerprint, lease_until_ms = excluded.lease_until_ms,
    expires_at_ms = excluded.expires_at_ms, payload = NULL
