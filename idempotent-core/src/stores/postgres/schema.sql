CREATE TABLE IF NOT EXISTS {table} (
    scope       bytea       NOT NULL,  -- the scope's UTF-8 bytes
    key         bytea       NOT NULL,  -- the key's UTF-8 bytes
    state       text        NOT NULL,  -- 'in_progress' | 'completed' | 'released'
    owner       bytea,                 -- the last claimant (OwnerId: 16 bytes, big-endian)
    epoch       bigint      NOT NULL,  -- fencing token: above the previous one, >= clock in µs
    fingerprint bytea       NOT NULL,  -- the 32-byte request fingerprint
    lease_until timestamptz,           -- in_progress only: the claim holds until then
    expires_at  timestamptz NOT NULL,  -- past it, the row is as good as absent
    payload     bytea,                 -- completed only: the stored result
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
