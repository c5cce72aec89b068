-- An operator retries a failed `transaction none` revision: it is running
-- again, from statement $2 (1-based). $1 id, $3 lock key, $4 lease token
-- (NULL: no lock, no lease)
WITH r AS (
    UPDATE {schema}."applied" SET state = 'running', last_error = NULL, failed_statement = $2::integer
    WHERE id = $1::text AND state <> 'applied'
    RETURNING id
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    SELECT 'retry', id, jsonb_build_object('from_statement', $2::integer) FROM r
)
SELECT {schema}."held"($3::bigint, $4::bigint), (SELECT count(*) FROM r)
