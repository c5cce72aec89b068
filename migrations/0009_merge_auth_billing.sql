-- pgskein: revises 0006_auth_sessions, 0008_billing_subscriptions
-- pgskein: message Merge the auth and billing branches: updated_at triggers and the current plan view
-- pgskein: up
-- Keeps updated_at honest whatever the client sends.
CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- The WHEN clause leaves no-op updates (same values) untouched.
CREATE TRIGGER users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER documents_set_updated_at
    BEFORE UPDATE ON documents
    FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION set_updated_at();

-- Every user with the subscription covering the current instant, if any.
-- subscriptions_no_overlap guarantees at most one such live subscription.
CREATE VIEW user_current_plans AS
SELECT u.id     AS user_id,
       u.email,
       p.code   AS plan_code,
       p.name   AS plan_name,
       s.status AS subscription_status,
       s.period AS subscription_period
  FROM users u
  LEFT JOIN (subscriptions s JOIN plans p ON p.id = s.plan_id)
         ON s.user_id = u.id
        AND s.status <> 'canceled'
        AND s.period @> now();

COMMENT ON VIEW user_current_plans IS 'Users and their live subscription (NULL plan when none).';

-- pgskein: down
DROP VIEW user_current_plans;
DROP TRIGGER documents_set_updated_at ON documents;
DROP TRIGGER users_set_updated_at ON users;
DROP FUNCTION set_updated_at();

-- pgskein: verify
SELECT count(*) = 2
  FROM pg_trigger
 WHERE NOT tgisinternal
   AND tgfoid = 'set_updated_at()'::regprocedure;
SELECT count(*) = 6
  FROM information_schema.columns
 WHERE table_schema = 'public' AND table_name = 'user_current_plans';
