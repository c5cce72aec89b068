-- Format 1 -> 2: the `backfills` table, and `applied.direction` (the
-- direction of a running or failed `transaction none` revision). The lock on `meta` serialises two
-- upgraders; the second finds the table and the new format in place.
BEGIN;
LOCK TABLE {schema}."meta" IN SHARE ROW EXCLUSIVE MODE;
{backfills_table}
ALTER TABLE {schema}."applied" ADD COLUMN IF NOT EXISTS direction text;
INSERT INTO {schema}."events" (kind, detail)
SELECT 'upgrade_format', jsonb_build_object('from', value::integer, 'to', 2)
FROM {schema}."meta" WHERE key = 'format' AND value::integer < 2;
UPDATE {schema}."meta" SET value = '2' WHERE key = 'format' AND value::integer < 2;
COMMIT;
