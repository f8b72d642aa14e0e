CREATE TABLE IF NOT EXISTS "{table}" (
    scope          TEXT    NOT NULL,  -- ClaimRequest::scope, as given
    "key"          TEXT    NOT NULL,  -- ClaimRequest::key, as given
    state          TEXT    NOT NULL,  -- 'in_progress' | 'completed' | 'released'
    owner          BLOB,              -- OwnerId, 16 bytes big-endian (last claimant)
    epoch          INTEGER NOT NULL,  -- fencing token: above the previous one, >= clock in µs
    fingerprint    BLOB    NOT NULL,  -- request fingerprint, 32 bytes
    lease_until_ms INTEGER,           -- 'in_progress' only: Unix ms the lease ends
    expires_at_ms  INTEGER NOT NULL,  -- Unix ms the record expires (purge deletes it)
    payload        BLOB,              -- 'completed' only: the stored result, opaque
    PRIMARY KEY (scope, "key")
);
CREATE INDEX IF NOT EXISTS "idx_{table}_expires_at" ON "{table}" (expires_at_ms);
