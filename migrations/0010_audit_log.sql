-- pgskein: revises 0009_merge_auth_billing
-- pgskein: message Record every change to documents, users and subscriptions in an audit log
-- pgskein: up
-- No foreign keys: the history of a row must outlive the row.
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text NOT NULL,
    row_id     uuid NOT NULL,
    action     char(1) NOT NULL CHECK (action IN ('I', 'U', 'D')),
    old_row    jsonb,
    new_row    jsonb,
    -- The application sets app.actor (SET LOCAL app.actor = '<user id>');
    -- maintenance done straight from psql falls back to the database role.
    actor      text NOT NULL
               DEFAULT coalesce(nullif(current_setting('app.actor', true), ''), current_user),
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_row_idx ON audit_log (table_name, row_id, changed_at DESC);

-- Secret columns are stripped before the row is copied into the log.
CREATE FUNCTION audit_row_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    old_data jsonb;
    new_data jsonb;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_data := to_jsonb(OLD) - 'password_hash';
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_data := to_jsonb(NEW) - 'password_hash';
    END IF;

    INSERT INTO audit_log (table_name, row_id, action, old_row, new_row)
    VALUES (TG_TABLE_NAME,
            (coalesce(new_data, old_data) ->> 'id')::uuid,
            left(TG_OP, 1),
            old_data,
            new_data);

    RETURN NULL;  -- AFTER trigger: the result is ignored
END;
$$;

CREATE TRIGGER documents_audit
    AFTER INSERT OR UPDATE OR DELETE ON documents
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER users_audit
    AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER subscriptions_audit
    AFTER INSERT OR UPDATE OR DELETE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

CREATE VIEW document_history AS
SELECT a.id,
       a.row_id AS document_id,
       coalesce(d.title, a.old_row ->> 'title') AS title,
       a.action,
       a.actor,
       a.changed_at,
       a.old_row,
       a.new_row
  FROM audit_log a
  LEFT JOIN documents d ON d.id = a.row_id
 WHERE a.table_name = 'documents';

-- pgskein: down
DROP VIEW document_history;
DROP TRIGGER subscriptions_audit ON subscriptions;
DROP TRIGGER users_audit ON users;
DROP TRIGGER documents_audit ON documents;
DROP FUNCTION audit_row_change();
-- Also drops the identity sequence and the index.
DROP TABLE audit_log;

-- pgskein: verify
-- Exercise the trigger on throwaway rows, then undo them by leaving the inner
-- block with a private error code that only its handler catches.
DO $$
DECLARE
    probe_folder uuid;
    probe_doc    uuid;
    actions      text;
BEGIN
    BEGIN
        INSERT INTO folders (name)
        VALUES ('probe ' || gen_random_uuid())
        RETURNING id INTO probe_folder;

        INSERT INTO documents (folder_id, title)
        VALUES (probe_folder, 'Audit probe')
        RETURNING id INTO probe_doc;
        UPDATE documents SET title = 'Audit probe, renamed' WHERE id = probe_doc;
        DELETE FROM folders WHERE id = probe_folder;  -- cascades to the document

        SELECT string_agg(action, '' ORDER BY id) INTO actions
          FROM document_history
         WHERE document_id = probe_doc;
        IF actions IS DISTINCT FROM 'IUD' THEN
            RAISE EXCEPTION 'audit log recorded % for the probe document, expected IUD', actions;
        END IF;

        RAISE EXCEPTION USING ERRCODE = 'ZX001', MESSAGE = 'undo audit probe';
    EXCEPTION
        WHEN SQLSTATE 'ZX001' THEN
            NULL;
    END;
END
$$;
SELECT count(*) = 3
  FROM pg_trigger
 WHERE NOT tgisinternal
   AND tgfoid = 'audit_row_change()'::regprocedure;
