-- A `transaction none` revision starts: `running` for up (a new row), or for
-- down (the applied row). The invalid indexes that exist now are kept, so
-- that those the revision leaves behind can be told apart later.
-- $1 id, $2 revises, $3 depends_on, $4 checksum, $5 checksum_version, $6 kind,
-- $7 app_version, $8 direction, $9 lock key, $10 lease token (NULL: no lock, no lease)
WITH invalid AS (
    SELECT coalesce(array_agg(indexrelid ORDER BY indexrelid), '{}') AS oids
    FROM pg_catalog.pg_index WHERE NOT indisvalid
), up AS (
    INSERT INTO {schema}."applied"
        (id, revises, depends_on, checksum, checksum_version, kind, state, app_version, direction, invalid_before)
    SELECT $1::text, $2::text[], $3::text[], $4::text, $5::smallint, $6::text, 'running', $7::text, 'up', oids
    FROM invalid WHERE $8::text = 'up'
    RETURNING id
), down AS (
    UPDATE {schema}."applied" SET state = 'running', applied_at = now(), direction = 'down',
        failed_statement = NULL, last_error = NULL, invalid_before = (SELECT oids FROM invalid)
    WHERE id = $1::text AND state = 'applied' AND $8::text = 'down'
    RETURNING id
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    VALUES ('start', $1::text, jsonb_build_object('direction', $8::text))
)
SELECT {schema}."held"($9::bigint, $10::bigint), (SELECT count(*) FROM up) + (SELECT count(*) FROM down),
       (SELECT array_to_string(oids, ' ') FROM invalid)
