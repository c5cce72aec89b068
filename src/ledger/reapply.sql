-- A repeatable revision is applied again after its checksum changed: its row is replaced.
-- Parameters as in apply.sql.
WITH a AS (
    INSERT INTO {schema}."applied"
        (id, revises, depends_on, checksum, checksum_version, kind, state, duration_ms, app_version)
    VALUES ($1, $2, $3, $4, $5, $6, 'applied', {elapsed_ms}, $7)
    ON CONFLICT (id) DO UPDATE SET checksum = EXCLUDED.checksum, checksum_version = EXCLUDED.checksum_version,
        applied_at = now(), duration_ms = EXCLUDED.duration_ms, app_version = EXCLUDED.app_version
    WHERE {schema}."applied".state = 'applied'
    RETURNING id, duration_ms
), e AS (
    INSERT INTO {schema}."events" (kind, revision, duration_ms)
    SELECT $8, id, duration_ms FROM a
)
SELECT {schema}."held"($9::bigint, $10::bigint), (SELECT count(*) FROM a)
