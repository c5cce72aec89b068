-- A revision is applied (or stamped). A plain INSERT: a revision recorded
-- twice is an error, never an overwrite. The digest follows by trigger.
-- $1 id, $2 revises, $3 depends_on, $4 checksum, $5 checksum_version, $6 kind,
-- $7 app_version, $8 event kind, $9 lock key, $10 lease token (NULL: no lock, no lease)
WITH a AS (
    INSERT INTO {schema}."applied"
        (id, revises, depends_on, checksum, checksum_version, kind, state, duration_ms, app_version)
    VALUES ($1, $2, $3, $4, $5, $6, 'applied', {elapsed_ms}, $7)
    RETURNING id, duration_ms
), e AS (
    INSERT INTO {schema}."events" (kind, revision, duration_ms)
    SELECT $8, id, duration_ms FROM a
)
-- The lock proof runs in this statement, whatever the CTEs matched.
SELECT {schema}."held"($9::bigint, $10::bigint), (SELECT count(*) FROM a)
