-- Whether the table $1 has a unique index that ON CONFLICT (scope, key) can use: immediate,
-- not partial, on exactly those two columns (in either order).
SELECT EXISTS (
    SELECT 1 FROM pg_index AS i
    WHERE i.indrelid = CAST($1::text AS regclass) AND i.indisunique AND i.indimmediate
        AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = 2
        AND ARRAY(
            SELECT a.attname::text FROM pg_attribute AS a
            WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:1])
            ORDER BY 1
        ) = ARRAY['key', 'scope']
)
