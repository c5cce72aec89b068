-- pgskein: revises 0004_documents_source_index
-- pgskein: branch billing
-- pgskein: message Create billing plans with the three launch plans
-- pgskein: up
CREATE TYPE billing_interval AS ENUM ('month', 'year');

CREATE TABLE plans (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code             text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_]*$'),
    name             text NOT NULL,
    price_cents      integer NOT NULL CHECK (price_cents >= 0),
    currency         char(3) NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    billing_interval billing_interval NOT NULL DEFAULT 'month',
    -- NULL means unlimited.
    max_documents    integer CHECK (max_documents > 0),
    features         jsonb NOT NULL DEFAULT '{}',
    -- Plans are retired, never deleted: subscriptions keep referring to them.
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (code, name, price_cents, billing_interval, max_documents, features)
VALUES ('free', 'Free',     0, 'month',   100, '{"search": "basic"}'),
       ('pro',  'Pro',   1200, 'month', 10000, '{"search": "fuzzy", "audit": true}'),
       ('team', 'Team', 12000, 'year',   NULL, '{"search": "fuzzy", "audit": true, "sso": true}');

-- pgskein: down
DROP TABLE plans;
DROP TYPE billing_interval;

-- pgskein: verify
SELECT count(*) = 3 FROM plans WHERE active;
