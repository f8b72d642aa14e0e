DELETE FROM "{table}" WHERE rowid IN
    (SELECT rowid FROM "{table}" WHERE expires_at_ms <= ?1 LIMIT ?2)
