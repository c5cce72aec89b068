CREATE TABLE IF NOT EXISTS {schema}."backfills" (
    name text PRIMARY KEY,
    revision text NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'paused', 'done', 'failed')),
    key_start bigint,
    key_end bigint,
    cursor text,
    rows_done bigint NOT NULL DEFAULT 0,
    estimated_total bigint,
    batch_size bigint,
    batches bigint NOT NULL DEFAULT 0,
    last_error text,
    started_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
