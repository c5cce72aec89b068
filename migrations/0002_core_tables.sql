-- pgskein: revises 0001_extensions
-- pgskein: message Create folders, documents and document versions
-- pgskein: up
CREATE TYPE document_status AS ENUM ('draft', 'published', 'archived');

CREATE TABLE folders (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    parent_id  uuid REFERENCES folders (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(btrim(name)) > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT folders_not_own_parent CHECK (parent_id <> id)
);

-- Folder names are unique among siblings (case-insensitively). NULLs are
-- distinct in a unique index, so top-level folders (parent_id IS NULL) need
-- their own partial index.
CREATE UNIQUE INDEX folders_root_name_key
    ON folders (lower(name))
    WHERE parent_id IS NULL;
CREATE UNIQUE INDEX folders_child_name_key
    ON folders (parent_id, lower(name))
    WHERE parent_id IS NOT NULL;

CREATE TABLE documents (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    folder_id  uuid NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    status     document_status NOT NULL DEFAULT 'draft',
    metadata   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    tags       text[] NOT NULL DEFAULT '{}' CHECK (array_position(tags, NULL) IS NULL),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT documents_updated_after_created CHECK (updated_at >= created_at)
);

COMMENT ON TABLE documents IS 'One row per document; the content lives in document_versions.';
COMMENT ON COLUMN documents.metadata IS 'Free-form attributes set by importers (always a JSON object).';
COMMENT ON COLUMN documents.deleted_at IS 'Soft-delete marker: set instead of deleting the row.';

-- Full index for the ON DELETE CASCADE from folders (a partial index cannot
-- serve it), plus a partial one for listing the live documents of a folder.
CREATE INDEX documents_folder_id_idx ON documents (folder_id);
CREATE INDEX documents_live_by_folder_idx
    ON documents (folder_id, updated_at DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX documents_tags_idx ON documents USING gin (tags);

CREATE TABLE document_versions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id    uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    version        integer NOT NULL CHECK (version > 0),
    body           text NOT NULL,
    content_sha256 bytea GENERATED ALWAYS AS (digest(body, 'sha256')) STORED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Also the index used by the cascade from documents.
    UNIQUE (document_id, version)
);

-- pgskein: down
DROP TABLE document_versions;
DROP TABLE documents;
DROP TABLE folders;
DROP TYPE document_status;

-- pgskein: verify
SELECT count(*) = 3
  FROM pg_enum e
  JOIN pg_type t ON t.oid = e.enumtypid
 WHERE t.typname = 'document_status';
SELECT to_regclass('folders') IS NOT NULL
   AND to_regclass('documents') IS NOT NULL
   AND to_regclass('document_versions') IS NOT NULL;
