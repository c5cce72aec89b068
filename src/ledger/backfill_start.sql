-- A backfill starts: its key range is fixed here, once. Only a `pending` row
-- (or none) may start, so a concurrent pause wins.
-- $1 name, $2 revision, $3 key_start, $4 key_end, $5 first cursor, $6 estimated total, $7 batch size
WITH s AS (
    INSERT INTO {schema}."backfills" AS b
        (name, revision, state, key_start, key_end, cursor, estimated_total, batch_size, started_at, updated_at)
    VALUES ($1::text, $2::text, 'running', $3::bigint, $4::bigint, $5::text, $6::bigint, $7::bigint,
            clock_timestamp(), clock_timestamp())
    ON CONFLICT (name) DO UPDATE
    SET revision = EXCLUDED.revision, state = 'running', key_start = EXCLUDED.key_start,
        key_end = EXCLUDED.key_end, cursor = EXCLUDED.cursor, rows_done = 0, batches = 0,
        estimated_total = EXCLUDED.estimated_total, batch_size = EXCLUDED.batch_size,
        started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at
    WHERE b.state = 'pending'
    RETURNING name, revision
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    SELECT 'backfill_start', revision,
           jsonb_build_object('backfill', name, 'key_start', $3::bigint, 'key_end', $4::bigint,
                              'estimated_total', $6::bigint)
    FROM s
)
SELECT count(*) FROM s
