-- A `transaction none` revision starts: `running` for up (a new row), or for
-- down (the applied row). $1 id, $2 revises, $3 depends_on, $4 checksum,
-- $5 checksum_version, $6 kind, $7 app_version, $8 direction, $9 digest afterwards
WITH up AS (
    INSERT INTO {schema}."applied"
        (id, revises, depends_on, checksum, checksum_version, kind, state, app_version, direction)
    SELECT $1::text, $2::text[], $3::text[], $4::text, $5::smallint, $6::text, 'running', $7::text, 'up'
    WHERE $8::text = 'up'
    RETURNING id
), down AS (
    UPDATE {schema}."applied" SET state = 'running', applied_at = now(), direction = 'down'
    WHERE id = $1::text AND $8::text = 'down'
    RETURNING id
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    VALUES ('start', $1::text, jsonb_build_object('direction', $8::text))
), m AS (
    UPDATE {schema}."meta" SET value = $9::text WHERE key = 'digest'
)
SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM down)
