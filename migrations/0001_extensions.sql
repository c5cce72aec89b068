-- Extensions the rest of the schema relies on:
--   pgcrypto   digest() for content checksums and token hashes, crypt()/gen_salt() for passwords
--   pg_trgm    trigram operator classes for fuzzy title search
--   btree_gist lets scalar columns (uuid) take part in GiST exclusion constraints
-- pgskein: message Install the pgcrypto, pg_trgm and btree_gist extensions
-- pgskein: up
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- pgskein: down
-- No CASCADE: if anything still depends on an extension, fail instead of
-- silently dropping columns, indexes or functions along with it.
DROP EXTENSION btree_gist;
DROP EXTENSION pg_trgm;
DROP EXTENSION pgcrypto;

-- pgskein: verify
SELECT count(*) = 3
  FROM pg_extension
 WHERE extname IN ('pgcrypto', 'pg_trgm', 'btree_gist');
