-- Formats 1, 2 and 3 -> 4, in place, inside the caller's transaction. Format
-- 2 added the `backfills` table and `applied.direction`; format 3 added
-- `applied.invalid_before`, the lock-proof and digest functions, the digest
-- triggers, and the `readable_by` marker; format 4 adds the `lease` table and
-- the lease's functions, and makes the lock proof refuse writes while a live
-- lease is held. Format-3 code can still use format-4 tables (`readable_by`
-- stays 3): it ignores the lease, but its writes call the lock proof, which
-- the server now answers with this format's rules.
-- The lock on `meta` serialises two upgraders; every step is idempotent, so
-- the second finds everything in place.
LOCK TABLE {schema}."meta" IN SHARE ROW EXCLUSIVE MODE;
{backfills_table}
{lease_table}
ALTER TABLE {schema}."applied" ADD COLUMN IF NOT EXISTS direction text;
ALTER TABLE {schema}."applied" ADD COLUMN IF NOT EXISTS invalid_before oid[];
{functions}
INSERT INTO {schema}."events" (kind, detail)
SELECT 'upgrade_format', jsonb_build_object('from', value::integer, 'to', 4)
FROM {schema}."meta" WHERE key = 'format' AND value::integer < 4;
INSERT INTO {schema}."meta" (key, value) VALUES ('readable_by', '3')
    ON CONFLICT (key) DO NOTHING;
UPDATE {schema}."meta" SET value = '4' WHERE key = 'format' AND value::integer < 4;
