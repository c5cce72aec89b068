-- Formats 1 and 2 -> 3, in place. Format 2 added the `backfills` table and
-- `applied.direction`; format 3 adds `applied.invalid_before`, the lock-proof
-- and digest functions, the digest triggers, and the `readable_by` marker.
-- The lock on `meta` serialises two upgraders; every step is idempotent, so
-- the second finds everything in place.
BEGIN;
LOCK TABLE {schema}."meta" IN SHARE ROW EXCLUSIVE MODE;
{backfills_table}
ALTER TABLE {schema}."applied" ADD COLUMN IF NOT EXISTS direction text;
ALTER TABLE {schema}."applied" ADD COLUMN IF NOT EXISTS invalid_before oid[];
{functions}
INSERT INTO {schema}."events" (kind, detail)
SELECT 'upgrade_format', jsonb_build_object('from', value::integer, 'to', 3)
FROM {schema}."meta" WHERE key = 'format' AND value::integer < 3;
INSERT INTO {schema}."meta" (key, value) VALUES ('readable_by', '3')
    ON CONFLICT (key) DO NOTHING;
UPDATE {schema}."meta" SET value = '3' WHERE key = 'format' AND value::integer < 3;
COMMIT;
