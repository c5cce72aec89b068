-- An operator records the current checksum of an applied revision after an
-- intentional edit. $1 id, $2 new checksum, $3 checksum_version, $4 lock key,
-- $5 lease token (NULL: no lock, no lease)
WITH old AS (
    SELECT checksum FROM {schema}."applied" WHERE id = $1::text AND state = 'applied'
), r AS (
    UPDATE {schema}."applied" SET checksum = $2::text, checksum_version = $3::smallint
    WHERE id = $1::text AND state = 'applied'
    RETURNING id
), e AS (
    INSERT INTO {schema}."events" (kind, revision, detail)
    SELECT 'repair', r.id, jsonb_build_object('old', (SELECT checksum FROM old), 'new', $2::text) FROM r
)
SELECT {schema}."held"($4::bigint, $5::bigint), (SELECT count(*) FROM r)
