-- pgskein: revises 0003_enhance_documents
-- pgskein: transaction none
-- pgskein: message Add the documents source index
-- Importers look documents up by source URL. documents is large and written
-- to constantly, so the index is built without blocking writes; CONCURRENTLY
-- cannot run inside a transaction block, hence "transaction none".
-- pgskein: up
CREATE INDEX CONCURRENTLY documents_source_url_idx
    ON documents (source_url)
    WHERE source_url IS NOT NULL;

-- pgskein: down
DROP INDEX CONCURRENTLY documents_source_url_idx;

-- pgskein: verify
-- A failed or cancelled concurrent build leaves an INVALID index behind;
-- treat that as a failure (the down section removes it before a retry).
SELECT indisvalid
  FROM pg_index
 WHERE indexrelid = 'documents_source_url_idx'::regclass;
