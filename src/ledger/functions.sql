-- The bookkeeping functions. Their bodies name no schema: each function fixes
-- its own search_path (pg_catalog first, then this schema), so the session's
-- search_path and role cannot change what they read or write.

-- The lock proof, called by every ledger write in the same statement: true
-- when this session holds the advisory lock `key` (NULL: a run without a lock).
CREATE OR REPLACE FUNCTION {schema}."held"(key bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $pgskein$
BEGIN
    IF key IS NULL OR EXISTS (
        SELECT FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = pg_backend_pid()
          AND classid = ((key >> 32) & 4294967295)::oid AND objid = (key & 4294967295)::oid
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
    THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION 'this session no longer holds the pgskein lock it took'
        USING ERRCODE = 'PGSK1',
              HINT = 'Something run in this session released it (pg_advisory_unlock_all(), DISCARD ALL); nothing more is recorded.';
END
$pgskein$;

-- One revision's share of the applied-set digest, as the code computes it:
-- SHA-256 of the id, a newline and the checksum.
CREATE OR REPLACE FUNCTION {schema}."revision_hash"(id text, checksum text) RETURNS bit(256)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $pgskein$
    SELECT ('x' || encode(sha256(convert_to(id || E'\n' || checksum, 'UTF8')), 'hex'))::bit(256)
$pgskein$;

-- The digest text: the count, a colon, and the XOR of the hashes in hex.
CREATE OR REPLACE FUNCTION {schema}."digest_text"(n bigint, acc bit(256)) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $pgskein$
    SELECT n::text || ':' || string_agg(lpad(to_hex(substring(acc FROM i FOR 32)::bit(32)::integer), 8, '0'), '' ORDER BY i)
    FROM generate_series(1, 256, 32) AS i
$pgskein$;

-- Keeps meta's digest equal to the digest of the `applied` rows in state
-- `applied`, whoever changes them (pgskein, an operator by hand, a restore).
CREATE OR REPLACE FUNCTION {schema}."applied_digest"() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, {schema} AS $pgskein$
DECLARE
    cur text;
    n bigint;
    acc bit(256);
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE "meta" SET value = digest_text(0, 0::bit(256)) WHERE key = 'digest';
        RETURN NULL;
    END IF;
    SELECT value INTO cur FROM "meta" WHERE key = 'digest' FOR UPDATE;
    IF cur ~ '^[0-9]+:[0-9a-f]{64}$' THEN
        n := split_part(cur, ':', 1)::bigint;
        acc := ('x' || split_part(cur, ':', 2))::bit(256);
    ELSE
        -- Unreadable: start from the rows themselves.
        PERFORM recompute_digest();
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' AND OLD.state = 'applied' THEN
        n := n - 1;
        acc := acc # revision_hash(OLD.id, OLD.checksum);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.state = 'applied' THEN
        n := n + 1;
        acc := acc # revision_hash(NEW.id, NEW.checksum);
    END IF;
    UPDATE "meta" SET value = digest_text(n, acc) WHERE key = 'digest';
    RETURN NULL;
END
$pgskein$;

-- The digest computed from the rows, written to meta.
CREATE OR REPLACE FUNCTION {schema}."recompute_digest"() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, {schema} AS $pgskein$
DECLARE
    n bigint := 0;
    acc bit(256) := 0::bit(256);
    r record;
    d text;
BEGIN
    FOR r IN SELECT id, checksum FROM "applied" WHERE state = 'applied' LOOP
        n := n + 1;
        acc := acc # revision_hash(r.id, r.checksum);
    END LOOP;
    d := digest_text(n, acc);
    INSERT INTO "meta" (key, value) VALUES ('digest', d) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    RETURN d;
END
$pgskein$;

-- The triggers, enabled ALWAYS so that session_replication_role cannot skip them.
DROP TRIGGER IF EXISTS "pgskein_digest" ON {schema}."applied";
CREATE TRIGGER "pgskein_digest" AFTER INSERT OR UPDATE OR DELETE ON {schema}."applied"
    FOR EACH ROW EXECUTE FUNCTION {schema}."applied_digest"();
DROP TRIGGER IF EXISTS "pgskein_digest_truncate" ON {schema}."applied";
CREATE TRIGGER "pgskein_digest_truncate" AFTER TRUNCATE ON {schema}."applied"
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}."applied_digest"();
ALTER TABLE {schema}."applied"
    ENABLE ALWAYS TRIGGER "pgskein_digest", ENABLE ALWAYS TRIGGER "pgskein_digest_truncate";
SELECT {schema}."recompute_digest"();
