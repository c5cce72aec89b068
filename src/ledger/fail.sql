-- $1 id, $2 1-based index of the failed statement (NULL when unknown), $3 error,
-- $4 direction. A transactional failure was rolled back: only the event remains.
WITH f AS (
    UPDATE {schema}."applied" SET state = 'failed', failed_statement = $2::integer, last_error = $3::text
    WHERE id = $1::text AND state = 'running'
    RETURNING id
)
INSERT INTO {schema}."events" (kind, revision, detail)
VALUES ('fail', $1::text, jsonb_build_object('statement', $2::integer, 'error', $3::text, 'direction', $4::text))
