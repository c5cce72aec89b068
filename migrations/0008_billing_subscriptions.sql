-- pgskein: revises 0007_billing_plans
-- Subscriptions belong to users, which the auth branch creates.
-- pgskein: depends-on 0005_auth_users
-- pgskein: message Create subscriptions, at most one live subscription per user at any time
-- pgskein: up
CREATE TYPE subscription_status AS ENUM ('trialing', 'active', 'past_due', 'canceled');

CREATE TABLE subscriptions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- No cascade here: a plan with subscribers cannot be deleted (retire it
    -- with plans.active instead).
    plan_id    uuid NOT NULL REFERENCES plans (id),
    status     subscription_status NOT NULL DEFAULT 'trialing',
    period     tstzrange NOT NULL CHECK (NOT isempty(period) AND NOT lower_inf(period)),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- btree_gist provides the uuid "=" operator class for GiST. Canceled
    -- subscriptions are history and may overlap anything.
    CONSTRAINT subscriptions_no_overlap
        EXCLUDE USING gist (user_id WITH =, period WITH &&)
        WHERE (status <> 'canceled')
);

-- The exclusion index is partial, so it cannot serve the cascade from users
-- nor the FK check when a plan is deleted: both get a plain index.
CREATE INDEX subscriptions_user_id_idx ON subscriptions (user_id);
CREATE INDEX subscriptions_plan_id_idx ON subscriptions (plan_id);

-- pgskein: down
DROP TABLE subscriptions;
DROP TYPE subscription_status;

-- pgskein: verify
-- Probe the exclusion constraint. Leaving the inner block through its
-- exception handler rolls back every probe row.
DO $$
DECLARE
    probe_user uuid;
    probe_plan uuid;
BEGIN
    BEGIN
        INSERT INTO users (email)
        VALUES ('probe-' || gen_random_uuid() || '@example.invalid')
        RETURNING id INTO probe_user;

        INSERT INTO plans (code, name, price_cents)
        VALUES ('probe_' || replace(gen_random_uuid()::text, '-', '_'), 'Probe', 0)
        RETURNING id INTO probe_plan;

        INSERT INTO subscriptions (user_id, plan_id, status, period)
        VALUES (probe_user, probe_plan, 'active', tstzrange('2024-01-01', '2024-02-01'));
        -- Allowed: canceled subscriptions do not take part in the constraint.
        INSERT INTO subscriptions (user_id, plan_id, status, period)
        VALUES (probe_user, probe_plan, 'canceled', tstzrange('2024-01-15', '2024-02-15'));
        -- Rejected: overlaps the active one.
        INSERT INTO subscriptions (user_id, plan_id, status, period)
        VALUES (probe_user, probe_plan, 'active', tstzrange('2024-01-20', '2024-03-01'));

        RAISE EXCEPTION 'subscriptions_no_overlap accepted overlapping periods';
    EXCEPTION
        WHEN exclusion_violation THEN
            NULL;  -- expected
    END;
END
$$;
