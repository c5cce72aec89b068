CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}."meta" (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}."applied" (
    id text PRIMARY KEY,
    revises text[] NOT NULL DEFAULT '{}',
    depends_on text[] NOT NULL DEFAULT '{}',
    checksum text NOT NULL,
    checksum_version smallint NOT NULL,
    kind text NOT NULL,
    state text NOT NULL CHECK (state IN ('applied', 'running', 'failed')),
    failed_statement integer,
    last_error text,
    direction text,
    invalid_before oid[],
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision,
    applied_by text NOT NULL DEFAULT current_user,
    application_name text NOT NULL DEFAULT current_setting('application_name'),
    client_addr inet DEFAULT inet_client_addr(),
    app_version text
);
CREATE TABLE IF NOT EXISTS {schema}."events" (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL,
    revision text,
    duration_ms double precision,
    actor text NOT NULL DEFAULT current_user,
    application_name text NOT NULL DEFAULT current_setting('application_name'),
    client_addr inet DEFAULT inet_client_addr(),
    detail jsonb
);
{backfills_table}
{lease_table}
INSERT INTO {schema}."meta" (key, value) VALUES ('format', '4'), ('readable_by', '3')
    ON CONFLICT (key) DO NOTHING;
{functions}
SELECT value FROM {schema}."meta" WHERE key = 'format';
