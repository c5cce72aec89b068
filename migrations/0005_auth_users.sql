-- pgskein: revises 0004_documents_source_index
-- pgskein: branch auth
-- pgskein: message Create the users table
-- pgskein: up
CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    display_name  text,
    -- bcrypt hash from crypt(password, gen_salt('bf')); NULL for SSO-only accounts.
    password_hash text CHECK (password_hash LIKE '$2a$%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- Emails are unique regardless of case; an expression index rather than a
-- citext column keeps the stored address exactly as the user typed it.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

COMMENT ON TABLE users IS 'Accounts that can sign in.';

-- pgskein: down
DROP TABLE users;

-- pgskein: verify
SELECT indisunique
  FROM pg_index
 WHERE indexrelid = 'users_email_lower_key'::regclass;
-- The hash format accepted by the CHECK constraint is the one pgcrypto produces.
SELECT crypt('correct horse', gen_salt('bf', 4)) LIKE '$2a$04$%';
