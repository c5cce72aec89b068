-- $1 id, $2 event kind, $3 digest of the applied set afterwards
WITH d AS (
    DELETE FROM {schema}."applied" WHERE id = $1 RETURNING id, {elapsed_ms} AS elapsed
), e AS (
    INSERT INTO {schema}."events" (kind, revision, duration_ms)
    SELECT $2, id, elapsed FROM d
), m AS (
    UPDATE {schema}."meta" SET value = $3 WHERE key = 'digest'
)
SELECT {mark_step_end} FROM d
