-- An operator resets a backfill: its row goes, so the next run starts it
-- again from nothing (`pending`), over the key range it finds then; the reset
-- is logged with what the row held. A backfill whose advisory lock another
-- session holds is being run: it is left alone unless the reset is forced
-- (the runner's next checkpoint then finds its row gone and starts over).
-- $1 name, $2 the backfill's lock key, $3 forced
-- Returns the state reset from (NULL: nothing reset), the state before, and
-- the pid of the session holding the lock.
WITH held AS (
    SELECT pid FROM pg_catalog.pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid <> pg_catalog.pg_backend_pid()
      AND classid = (($2::bigint >> 32) & 4294967295)::oid AND objid = ($2::bigint & 4294967295)::oid
      AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
    LIMIT 1
), d AS (
    DELETE FROM {schema}."backfills"
    WHERE name = $1::text AND state <> 'pending' AND ($3::boolean OR NOT EXISTS (SELECT FROM held))
    RETURNING name, revision, state, rows_done, batches
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    SELECT 'backfill_reset', revision,
           jsonb_build_object('backfill', name, 'state', state, 'rows_done', rows_done, 'batches', batches,
                              'why', CASE WHEN EXISTS (SELECT FROM held) THEN 'reset while running (forced)'
                                          ELSE 'reset' END)
    FROM d
)
SELECT (SELECT state FROM d),
       (SELECT state FROM {schema}."backfills" WHERE name = $1::text),
       (SELECT pid FROM held)
