-- $1 id, $2 revises, $3 depends_on, $4 checksum, $5 checksum_version, $6 kind,
-- $7 app_version, $8 event kind, $9 digest of the applied set afterwards
WITH a AS (
    INSERT INTO {schema}."applied"
        (id, revises, depends_on, checksum, checksum_version, kind, state, duration_ms, app_version)
    VALUES ($1, $2, $3, $4, $5, $6, 'applied', {elapsed_ms}, $7)
    -- A repeatable revision re-applied after a change replaces its row.
    ON CONFLICT (id) DO UPDATE SET checksum = EXCLUDED.checksum, checksum_version = EXCLUDED.checksum_version,
        applied_at = now(), duration_ms = EXCLUDED.duration_ms, app_version = EXCLUDED.app_version
    RETURNING id, duration_ms
), e AS (
    INSERT INTO {schema}."events" (kind, revision, duration_ms)
    SELECT $8, id, duration_ms FROM a
), m AS (
    UPDATE {schema}."meta" SET value = $9 WHERE key = 'digest'
)
-- Reading `a` makes the INSERT (and its elapsed time) happen before the mark.
SELECT {mark_step_end} FROM a
