-- A backfill changes state: pause, resume, fail. $1 name, $2 revision, $3 new
-- state (NULL: `running` if it has started, else `pending`), $4 the states it
-- may move from (`pending` includes "no row yet"), $5 event kind, $6 error
WITH u AS (
    UPDATE {schema}."backfills"
    SET state = coalesce($3::text, CASE WHEN started_at IS NULL THEN 'pending' ELSE 'running' END),
        last_error = coalesce($6::text, last_error), updated_at = clock_timestamp()
    WHERE name = $1::text AND state = ANY($4::text[])
    RETURNING name, revision, state
), i AS (
    INSERT INTO {schema}."backfills" (name, revision, state, last_error)
    SELECT $1::text, $2::text, coalesce($3::text, 'pending'), $6::text
    WHERE 'pending' = ANY($4::text[])
      AND NOT EXISTS (SELECT 1 FROM {schema}."backfills" WHERE name = $1::text)
    ON CONFLICT (name) DO NOTHING
    RETURNING name, revision, state
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    SELECT $5::text, revision, jsonb_strip_nulls(jsonb_build_object('backfill', name, 'state', state, 'error', $6::text))
    FROM (SELECT * FROM u UNION ALL SELECT * FROM i) t
)
SELECT count(*) FROM (SELECT 1 FROM u UNION ALL SELECT 1 FROM i) t
