-- The columns of the table $1 (its quoted name, resolved like the other statements' table
-- name): name, type as format_type spells it, NOT NULL, and whether the server fills it
-- (a default, an identity or a generated column).
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
    a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
FROM pg_attribute AS a
WHERE a.attrelid = CAST($1::text AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
