-- pgskein: revises 0002_core_tables
-- pgskein: message Add source, language, word count and publication date to documents; search indexes
-- pgskein: up
-- A constant default (language) is stored in the catalog since PostgreSQL 11,
-- so adding a NOT NULL column with it does not rewrite the table.
ALTER TABLE documents
    ADD COLUMN source_url   text CHECK (source_url ~ '^https?://'),
    ADD COLUMN language     text NOT NULL DEFAULT 'en'
                            CHECK (language ~ '^[a-z]{2}(-[A-Z]{2})?$'),
    ADD COLUMN word_count   integer DEFAULT 0 CHECK (word_count >= 0),
    ADD COLUMN published_at timestamptz;

COMMENT ON COLUMN documents.language IS 'BCP 47 language tag (en, fr, pt-BR...).';

-- Existing published documents get a publication date before the constraint
-- below is validated.
UPDATE documents
   SET published_at = updated_at
 WHERE status = 'published';

ALTER TABLE documents
    ADD CONSTRAINT documents_published_has_date
    CHECK (status <> 'published' OR published_at IS NOT NULL);

-- Fuzzy title search (ILIKE '%...%', similarity()).
CREATE INDEX documents_title_trgm_idx ON documents USING gin (title gin_trgm_ops);
-- jsonb_path_ops: smaller and faster than the default opclass; only @>
-- containment queries are needed on metadata.
CREATE INDEX documents_metadata_idx ON documents USING gin (metadata jsonb_path_ops);
-- The public listing only ever shows published, non-deleted documents.
CREATE INDEX documents_published_at_idx
    ON documents (published_at DESC)
    WHERE status = 'published' AND deleted_at IS NULL;

-- pgskein: down
DROP INDEX documents_published_at_idx;
DROP INDEX documents_metadata_idx;
DROP INDEX documents_title_trgm_idx;
ALTER TABLE documents DROP CONSTRAINT documents_published_has_date;
-- Dropping the columns also drops their CHECK constraints and comments.
ALTER TABLE documents
    DROP COLUMN published_at,
    DROP COLUMN word_count,
    DROP COLUMN language,
    DROP COLUMN source_url;
