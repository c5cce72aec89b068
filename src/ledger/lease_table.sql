-- The migration lease (format 4): one row, held by a run that cannot keep a
-- session advisory lock (through a transaction pooler). Free when
-- `expires_at` is NULL or past. `token` is the fencing token: it grows by one
-- at every take and never goes back, so a holder whose lease expired or was
-- taken over can never prove it again. The owner columns name the process
-- that holds it, for waiters to report.
CREATE TABLE IF NOT EXISTS {schema}."lease" (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    token bigint NOT NULL DEFAULT 0,
    host text,
    pid integer,
    application_name text,
    taken_at timestamptz,
    renewed_at timestamptz,
    expires_at timestamptz
);
INSERT INTO {schema}."lease" DEFAULT VALUES ON CONFLICT DO NOTHING;
