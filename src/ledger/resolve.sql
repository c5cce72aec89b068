-- An operator resolves a failed or running `transaction none` revision.
-- $1 id, $2 'applied' or 'reverted', $3 lock key, $4 lease token (NULL: no lock, no lease)
WITH a AS (
    UPDATE {schema}."applied"
    SET state = 'applied', failed_statement = NULL, last_error = NULL, direction = NULL, invalid_before = NULL
    WHERE id = $1::text AND state <> 'applied' AND $2::text = 'applied'
    RETURNING id
), d AS (
    DELETE FROM {schema}."applied" WHERE id = $1::text AND state <> 'applied' AND $2::text = 'reverted'
    RETURNING id
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    SELECT 'resolve', id, jsonb_build_object('as', $2::text) FROM (SELECT id FROM a UNION ALL SELECT id FROM d) r
)
SELECT {schema}."held"($3::bigint, $4::bigint), (SELECT count(*) FROM a) + (SELECT count(*) FROM d)
