-- The bookkeeping functions. Their bodies name no schema: each function fixes
-- its own search_path (pg_catalog first, then this schema), so the session's
-- search_path and role cannot change what they read or write.

-- The advisory lock proof, called by the writes of a run under the advisory
-- lock (and by format-3 code, whose writes call this function): true when
-- this session holds the advisory lock `key` (NULL: a run without a lock) and
-- no live lease is held. A live lease means a run through a connection pooler
-- is migrating; a writer that does not know the lease must not record over it.
CREATE OR REPLACE FUNCTION {schema}."held"(key bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, {schema} AS $pgskein$
DECLARE
    l record;
BEGIN
    IF key IS NULL THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = pg_backend_pid()
          AND classid = ((key >> 32) & 4294967295)::oid AND objid = (key & 4294967295)::oid
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
    THEN
        RAISE EXCEPTION 'this session no longer holds the pgskein lock it took'
            USING ERRCODE = 'PGSK1',
                  HINT = 'Something run in this session released it (pg_advisory_unlock_all(), DISCARD ALL); nothing more is recorded.';
    END IF;
    SELECT * INTO l FROM "lease" WHERE expires_at > clock_timestamp();
    IF FOUND THEN
        RAISE EXCEPTION 'the pgskein lease of this schema is held by process % on host % (token %) until %',
                        l.pid, l.host, l.token, l.expires_at
            USING ERRCODE = 'PGSK3',
                  HINT = 'A pgskein run through a connection pooler holds the lease, and this one does not know it: nothing more is recorded. Upgrade pgskein on every replica.';
    END IF;
    RETURN true;
END
$pgskein$;

-- The lock proof of every ledger write: with a lease token, true when that
-- lease is still this run's and live. The proof share-locks the lease row
-- until the write's transaction ends, so the lease cannot be taken over
-- between the proof and the commit. Without a token, the advisory proof.
CREATE OR REPLACE FUNCTION {schema}."held"(lock_key bigint, lease_token bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, {schema} AS $pgskein$
#variable_conflict use_column
DECLARE
    l record;
BEGIN
    IF lease_token IS NULL THEN
        RETURN "held"(lock_key);
    END IF;
    PERFORM FROM "lease" WHERE token = lease_token AND expires_at > clock_timestamp() FOR KEY SHARE;
    IF FOUND THEN
        RETURN true;
    END IF;
    SELECT * INTO l FROM "lease";
    IF l.token IS DISTINCT FROM lease_token THEN
        RAISE EXCEPTION 'the pgskein lease this run held (token %) was taken over: process % on host % holds token %',
                        lease_token, l.pid, l.host, l.token
            USING ERRCODE = 'PGSK2',
                  HINT = 'The run stalled or lost its connection past the lease''s expiry; nothing more is recorded.';
    END IF;
    RAISE EXCEPTION 'the pgskein lease this run held (token %) expired at %', lease_token, l.expires_at
        USING ERRCODE = 'PGSK2',
              HINT = 'The run stalled or could not renew the lease before it expired; nothing more is recorded.';
END
$pgskein$;

-- Takes the lease when it is free (released, or expired) and no session
-- holds the advisory lock `lock_key` (a run under the advisory lock): one
-- short transaction that never waits. A row locked by a proving write, a
-- renewal or another take counts as taken. Returns the new token, or NULL and
-- the live holder (no holder: a session holds the advisory lock). The token
-- grows by one at every take; a row deleted by hand comes back with a token
-- from the clock, above any token handed out before.
CREATE OR REPLACE FUNCTION {schema}."take_lease"(lock_key bigint, ttl_ms bigint, owner_host text,
                                                 owner_pid integer, owner_app text,
                                                 OUT got bigint, OUT holder_token bigint, OUT holder_pid integer,
                                                 OUT holder_host text, OUT holder_app text,
                                                 OUT holder_since text)
LANGUAGE plpgsql SET search_path = pg_catalog, {schema} AS $pgskein$
#variable_conflict use_column
DECLARE
    l "lease"%ROWTYPE;
BEGIN
    SELECT * INTO l FROM "lease" FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        -- Locked: a write is proving it, or it is being renewed or taken.
        SELECT * INTO l FROM "lease";
        IF NOT FOUND THEN
            INSERT INTO "lease" (token) VALUES ((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                ON CONFLICT DO NOTHING;
            RETURN;
        END IF;
    ELSIF l.expires_at IS NULL OR l.expires_at <= clock_timestamp() THEN
        IF NOT pg_try_advisory_xact_lock(lock_key) THEN
            RETURN;
        END IF;
        got := l.token + 1;
    END IF;
    IF got IS NULL THEN
        IF l.expires_at > clock_timestamp() THEN
            holder_token := l.token;
            holder_pid := l.pid;
            holder_host := l.host;
            holder_app := l.application_name;
            holder_since := l.taken_at::text;
        END IF;
        RETURN;
    END IF;
    UPDATE "lease" SET token = got, host = owner_host, pid = owner_pid,
        application_name = coalesce(owner_app, current_setting('application_name')),
        taken_at = clock_timestamp(), renewed_at = clock_timestamp(),
        expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond';
    INSERT INTO "events" (kind, detail)
    VALUES ('lease', jsonb_strip_nulls(jsonb_build_object(
        'token', got, 'host', owner_host, 'pid', owner_pid,
        'took_over', CASE WHEN l.expires_at IS NOT NULL
                          THEN jsonb_build_object('token', l.token, 'host', l.host, 'pid', l.pid,
                                                  'expired_at', l.expires_at) END)));
END
$pgskein$;

-- Renews the lease `lease_token` for `ttl_ms` more, if it is still live:
-- once expired, a lease stays lost, even if no one took it over (a run under
-- the advisory lock may have started meanwhile).
CREATE OR REPLACE FUNCTION {schema}."renew_lease"(lease_token bigint, ttl_ms bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, {schema} AS $pgskein$
#variable_conflict use_column
BEGIN
    UPDATE "lease" SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond'
    WHERE token = lease_token AND expires_at > clock_timestamp();
    RETURN FOUND;
END
$pgskein$;

-- Gives the lease `lease_token` back; false when it was no longer held.
CREATE OR REPLACE FUNCTION {schema}."release_lease"(lease_token bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, {schema} AS $pgskein$
#variable_conflict use_column
BEGIN
    UPDATE "lease" SET expires_at = NULL WHERE token = lease_token AND expires_at IS NOT NULL;
    RETURN FOUND;
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
