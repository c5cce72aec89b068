-- A running `transaction none` revision is about to run statement $2 (1-based):
-- if the process dies now, a retry resumes there. $1 id, $3 lock key, $4
-- lease token (NULL: no lock, no lease)
WITH p AS (
    UPDATE {schema}."applied" SET failed_statement = $2::integer
    WHERE id = $1::text AND state = 'running'
    RETURNING id
)
SELECT {schema}."held"($3::bigint, $4::bigint), (SELECT count(*) FROM p)
