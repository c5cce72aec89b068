-- One batch's checkpoint, in the batch's own transaction. It only moves a
-- `running` row from the cursor the batch started at: a pause (or anything
-- else that moved the row) makes it match nothing, and the batch rolls back.
-- $1 name, $2 new cursor, $3 rows in the batch, $4 batch size, $5 cursor the batch started from,
-- $6 done, $7 whether a progress event is due, $8 rows/s, $9 ETA in seconds
WITH c AS (
    UPDATE {schema}."backfills"
    SET cursor = $2::text, rows_done = rows_done + $3::bigint, batch_size = $4::bigint,
        batches = batches + 1,
        state = CASE WHEN $6::boolean THEN 'done' ELSE state END,
        last_error = CASE WHEN $6::boolean THEN NULL ELSE last_error END,
        finished_at = CASE WHEN $6::boolean THEN clock_timestamp() END,
        updated_at = clock_timestamp()
    WHERE name = $1::text AND state = 'running' AND cursor IS NOT DISTINCT FROM $5::text
    RETURNING name, revision, rows_done, batches, estimated_total,
              1000 * extract(epoch FROM clock_timestamp() - started_at) AS elapsed_ms
), e AS (
    INSERT INTO {schema}."events" (kind, revision, duration_ms, detail)
    SELECT CASE WHEN $6::boolean THEN 'backfill_done' ELSE 'backfill_progress' END, revision,
           CASE WHEN $6::boolean THEN elapsed_ms END,
           jsonb_build_object('backfill', name, 'rows_done', rows_done, 'batches', batches,
                              'estimated_total', estimated_total, 'rows_per_second', $8::float8,
                              'eta_seconds', $9::float8)
    FROM c WHERE $6::boolean OR $7::boolean
)
SELECT count(*) FROM c
