-- An operator retries a failed `transaction none` revision: it is running again.
-- $1 id, $2 the 1-based statement it resumes at
WITH r AS (
    UPDATE {schema}."applied" SET state = 'running', last_error = NULL
    WHERE id = $1::text AND state <> 'applied'
    RETURNING id
)
INSERT INTO {schema}."events" (kind, revision, detail)
SELECT 'retry', id, jsonb_build_object('from_statement', $2::integer) FROM r
