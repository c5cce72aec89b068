-- pgskein: revises 0005_auth_users
-- pgskein: message Create login sessions
-- pgskein: up
-- Only a SHA-256 digest of the session token is stored, so a leaked copy of
-- the table cannot be replayed.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    user_agent   text,
    ip           inet,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    CONSTRAINT sessions_expire_after_creation CHECK (expires_at > created_at)
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
-- Used by the job that purges expired sessions; revoked ones go separately.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at) WHERE revoked_at IS NULL;

-- A quoted body rather than a SQL-standard `RETURN` one, which needs
-- PostgreSQL 14: the schema installs on every supported server, 13 included.
CREATE FUNCTION session_token_digest(token text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT digest(token, 'sha256') $$;

-- pgskein: down
DROP FUNCTION session_token_digest(text);
DROP TABLE sessions;
