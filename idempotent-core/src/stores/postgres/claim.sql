-- The claim: the decision table of IdempotencyStore::claim in one statement.
--
-- $1 scope, $2 key, $3 fingerprint, $4 owner, $5 the lease and $6 the ttl (at least the
-- lease) as intervals. It returns one row: the new claim's epoch if it acquired, and
-- otherwise the record as the statement's snapshot saw it (see rows.rs for the columns).
--
-- Why it is shaped like this:
-- - INSERT ... ON CONFLICT DO UPDATE ... WHERE decides atomically: the conflicting row is
--   locked and the WHERE is evaluated on its latest committed version, even one committed
--   after the statement's snapshot. Two claimers cannot both take a key over. The CASE
--   renews the owner's own live claim (a retried claim) without bumping the epoch; a
--   takeover bumps it.
-- - The common answers for an existing record (replay a completed result, report a live
--   claim in flight, report a mismatch) are read from `cur` and skip the insert (WHERE NOT
--   EXISTS): one round trip that locks no row and writes nothing, so a replay commits
--   without flushing anything. A completed row cannot change until it expires, so reading
--   it from the snapshot is exact; an in-flight answer was true at the snapshot, which is
--   within the call.
-- - When `cur` is stale (the row was inserted, completed or released after the snapshot and
--   the upsert found a row it may not take over), the statement returns no epoch and either
--   no snapshot row or one marked takeable: the store runs it again with a fresh snapshot,
--   at most five times. A serialization failure or deadlock (possible only when the
--   server's default isolation is stricter than READ COMMITTED) is retried the same way.
-- - Readability (the checks written out twice below, once per alias, in the same order) is
--   checked on the row the upsert locked, its latest version, before the SET computes
--   anything from it: the epoch formula would otherwise turn a negative epoch into a
--   plausible one. So an unreadable row stays as it is, and every claim reports it. On the
--   snapshot, `unreadable` alone decides, so the checks run once per replay.
-- - A new epoch is at least the server clock in microseconds since the Unix epoch, so a
--   key's epochs never repeat, even once its row was purged.
-- - set_config(..., true) sets lock_timeout for the rest of the statement's own transaction
--   (a claim runs in autocommit), and PostgreSQL reads lock_timeout when a lock wait
--   begins: evaluated in the insert's WHERE, it bounds the upsert's wait for the row lock,
--   and nothing else the connection runs. A claim that runs out of it reports the key in
--   flight.
-- - The price of one statement: even when it inserts nothing, PostgreSQL sets up the insert
--   (its ON CONFLICT projection and quals) on every execution, so a replay costs the server
--   about 1.4 times a plain primary-key SELECT.
WITH cur AS (
    SELECT epoch, state, fingerprint = $3 AS same_fingerprint, payload, lease_until,
        expires_at,
        -- Whether $4 may claim the row, if it can be read: past its ttl, released, or in
        -- progress by $4 (a retried claim) or with an expired lease.
        (c.expires_at <= statement_timestamp() OR c.state = 'released'
            OR (c.state = 'in_progress'
                AND (c.owner = $4 OR c.lease_until <= statement_timestamp()))) AS takeable,
        -- Why the row cannot be read; NULL when it can. A NULL check counts as failed.
        CASE
            WHEN (c.epoch >= 0) IS NOT TRUE THEN 'negative epoch'
            -- The next claim adds one; none comes after the largest bigint.
            WHEN (c.epoch < 9223372036854775807) IS NOT TRUE
                THEN 'epoch at its maximum (no later epoch exists)'
            WHEN (c.state IN ('in_progress', 'completed', 'released')) IS NOT TRUE
                THEN 'unknown state'
            WHEN (octet_length(c.fingerprint) = 32) IS NOT TRUE
                THEN 'fingerprint is not 32 bytes'
            WHEN (c.owner IS NULL OR octet_length(c.owner) = 16) IS NOT TRUE
                THEN 'owner is not 16 bytes'
            WHEN (c.state <> 'in_progress' OR c.owner IS NOT NULL) IS NOT TRUE
                THEN 'in-progress record without owner'
            WHEN (c.state <> 'in_progress' OR c.lease_until IS NOT NULL) IS NOT TRUE
                THEN 'in-progress record without lease deadline'
            WHEN (c.state <> 'completed' OR c.payload IS NOT NULL) IS NOT TRUE
                THEN 'completed record without payload'
            WHEN (c.expires_at IS NOT NULL) IS NOT TRUE THEN 'record without expiry'
        END AS unreadable
    FROM {table} AS c WHERE scope = $1 AND key = $2
), up AS (
    INSERT INTO {table} AS r
        (scope, key, state, owner, epoch, fingerprint, lease_until, expires_at, payload)
    SELECT $1, $2, 'in_progress', $4,
        CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp()) * 1000000) AS bigint), $3,
        statement_timestamp() + $5, statement_timestamp() + $6, NULL
    WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.unreadable IS NOT NULL OR NOT cur.takeable)
        AND set_config('lock_timeout', '{lock_timeout}', true) IS NOT NULL
    ON CONFLICT (scope, key) DO UPDATE SET
        -- The owner's own live claim keeps its epoch; a takeover gets a new one.
        epoch = CASE
            WHEN r.state = 'in_progress' AND r.owner = excluded.owner
                AND r.expires_at > statement_timestamp() THEN r.epoch
            ELSE GREATEST(r.epoch + 1,
                CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp()) * 1000000) AS bigint))
        END,
        state = 'in_progress', owner = excluded.owner, fingerprint = excluded.fingerprint,
        lease_until = excluded.lease_until,
        expires_at = GREATEST(r.expires_at, excluded.expires_at), payload = NULL
    -- The row can be read (the checks of `unreadable`, on the locked row) ...
    WHERE (r.epoch >= 0) IS TRUE
        AND (r.epoch < 9223372036854775807) IS TRUE
        AND (r.state IN ('in_progress', 'completed', 'released')) IS TRUE
        AND (octet_length(r.fingerprint) = 32) IS TRUE
        AND (r.owner IS NULL OR octet_length(r.owner) = 16) IS TRUE
        AND (r.state <> 'in_progress' OR r.owner IS NOT NULL) IS TRUE
        AND (r.state <> 'in_progress' OR r.lease_until IS NOT NULL) IS TRUE
        AND (r.state <> 'completed' OR r.payload IS NOT NULL) IS TRUE
        AND (r.expires_at IS NOT NULL) IS TRUE
        -- ... and the claimer may take it (`takeable`, on the locked row).
        AND (r.expires_at <= statement_timestamp() OR r.state = 'released'
            OR (r.state = 'in_progress'
                AND (r.owner = excluded.owner OR r.lease_until <= statement_timestamp())))
    RETURNING r.epoch
)
SELECT (SELECT epoch FROM up), cur.epoch, cur.state, cur.same_fingerprint, cur.payload,
    cur.lease_until - statement_timestamp(), cur.takeable, cur.expires_at - statement_timestamp(),
    cur.unreadable
FROM (SELECT) AS one LEFT JOIN cur ON true
