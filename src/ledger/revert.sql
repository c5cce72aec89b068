-- A revision is reverted (or un-stamped): its row goes, and the backfills
-- attached to it start again from nothing if it is applied again.
-- $1 id, $2 event kind, $3 lock key, $4 lease token (NULL: no lock, no lease)
WITH d AS (
    DELETE FROM {schema}."applied" WHERE id = $1 RETURNING id, {elapsed_ms} AS elapsed
), e AS (
    INSERT INTO {schema}."events" (kind, revision, duration_ms)
    SELECT $2, id, elapsed FROM d
), b AS (
    DELETE FROM {schema}."backfills" WHERE revision = $1 AND EXISTS (SELECT FROM d)
    RETURNING name, state, rows_done
), be AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    SELECT 'backfill_reset', $1,
           jsonb_build_object('backfill', name, 'state', state, 'rows_done', rows_done, 'why', 'revision reverted')
    FROM b
)
SELECT {schema}."held"($3::bigint, $4::bigint), (SELECT count(*) FROM d)
