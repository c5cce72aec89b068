-- A `transaction none` revision's up finished. $1 id, $2 lock key, $3 lease
-- token (NULL: no lock, no lease)
WITH a AS (
    UPDATE {schema}."applied"
    SET state = 'applied', failed_statement = NULL, last_error = NULL, direction = NULL, invalid_before = NULL,
        duration_ms = 1000 * extract(epoch FROM clock_timestamp() - applied_at)
    WHERE id = $1::text AND state = 'running'
    RETURNING id, duration_ms
), e AS (
    INSERT INTO {schema}."events" (kind, revision, duration_ms)
    SELECT 'apply', id, duration_ms FROM a
)
SELECT {schema}."held"($2::bigint, $3::bigint), (SELECT count(*) FROM a)
