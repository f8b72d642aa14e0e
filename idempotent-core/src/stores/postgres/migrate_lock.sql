-- Serializes concurrent migrations of one table ($1 names it) until the transaction ends.
SELECT pg_advisory_xact_lock(hashtext($1))
