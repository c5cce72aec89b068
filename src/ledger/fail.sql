-- A revision failed. $1 id, $2 1-based index of the failed statement (NULL
-- when unknown), $3 error, $4 direction, $5 lock key, $6 lease token (NULL:
-- no lock, no lease). A transactional failure was rolled back: only the event
-- remains; a `transaction none` one is `failed`.
WITH f AS (
    UPDATE {schema}."applied" SET state = 'failed', failed_statement = $2::integer, last_error = $3::text
    WHERE id = $1::text AND state = 'running'
    RETURNING id
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    VALUES ('fail', $1::text, jsonb_build_object('statement', $2::integer, 'error', $3::text, 'direction', $4::text))
)
SELECT {schema}."held"($5::bigint, $6::bigint), (SELECT count(*) FROM f)
