//! Adds a NOT NULL column to a table with existing rows, safely: add it
//! nullable, fill it with a backfill, then add the constraint without a long
//! lock. The revision that makes the column NOT NULL depends on the backfill,
//! so it is not applied until the backfill is done.
//!
//! ```text
//! cargo run --example backfill
//! ```
//!
//! With `DATABASE_URL` unset it starts a private PostgreSQL from the machine's
//! binaries; with it set, it creates (and afterwards drops) a fresh database on
//! that server. Set `RUST_LOG=pgskein=info` to see the library's progress events.

use std::time::Duration;

use pgskein::backfill::Backfill;
use pgskein::testing::TestServer;
use pgskein::{Error, MigrationSet, Migrator};

const DOCUMENTS: &str = "\
-- pgskein: up
CREATE TABLE documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);
INSERT INTO documents (body) SELECT 'document ' || g FROM generate_series(1, 300000) g;
-- pgskein: down
DROP TABLE documents;
";

// Step 1: the column arrives nullable (instant, whatever the table's size).
// The application starts writing it for new rows from this release on.
const ADD_COLUMN: &str = "\
-- pgskein: revises 0001_documents
-- pgskein: up
ALTER TABLE documents ADD COLUMN sha256 text;
-- pgskein: down
ALTER TABLE documents DROP COLUMN sha256;
";

// Step 3, after the backfill: a CHECK added NOT VALID (instant), validated
// without blocking writes, then SET NOT NULL, which trusts the valid CHECK and
// skips the table scan (PostgreSQL 12+). `transaction none` runs each statement
// in its own transaction, so no long lock is held across them.
const NOT_NULL: &str = "\
-- pgskein: revises 0002_documents_sha256
-- pgskein: depends-on documents_sha256_fill
-- pgskein: transaction none
-- pgskein: up
ALTER TABLE documents ADD CONSTRAINT documents_sha256_not_null CHECK (sha256 IS NOT NULL) NOT VALID;
ALTER TABLE documents VALIDATE CONSTRAINT documents_sha256_not_null;
ALTER TABLE documents ALTER COLUMN sha256 SET NOT NULL;
ALTER TABLE documents DROP CONSTRAINT documents_sha256_not_null;
-- pgskein: down
ALTER TABLE documents ALTER COLUMN sha256 DROP NOT NULL;
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();

    // Step 2: the backfill, attached to the revision that adds the column.
    let fill = Backfill::sql("documents_sha256_fill", "0002_documents_sha256")
        .table("documents")
        .key("id")
        .statement(
            "UPDATE documents SET sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex') \
             WHERE id >= $1 AND id < $2 AND sha256 IS NULL",
        )
        .target_batch_duration(Duration::from_millis(50))
        .on_progress(|p| {
            if p.batches % 10 == 0 || p.fraction == Some(1.0) {
                println!(
                    "  {:>5.1} %  {:>7} rows  {:>8.0} rows/s  batch {:>6} in {:>6.1?}  eta {:.1?}",
                    100.0 * p.fraction.unwrap_or_default(),
                    p.rows_done,
                    p.rows_per_second,
                    p.batch_size,
                    p.batch_duration,
                    p.eta.unwrap_or_default()
                );
            }
        });
    let set = MigrationSet::builder()
        .file("0001_documents.sql", DOCUMENTS.as_bytes())
        .file("0002_documents_sha256.sql", ADD_COLUMN.as_bytes())
        .file("0003_documents_sha256_not_null.sql", NOT_NULL.as_bytes())
        .backfill(fill)
        .build()?;

    let server = TestServer::shared()?;
    let db = server.create_database("pgskein_backfill_example").await?;
    let pool = db.pool(4);

    println!("run: applies what it can");
    match set.run(&pool).await {
        Err(Error::BackfillIncomplete { revision, backfill, report }) => {
            for step in &report.steps {
                println!("  applied {}", step.id);
            }
            println!("  {revision} waits for backfill {backfill}");
        }
        other => println!("  unexpected: {other:?}"),
    }

    println!("\nbackfill, deferred on a background task:");
    let handle = set.backfills()?.spawn(&pool);
    let report = handle.wait().await?;
    for b in &report.backfills {
        println!(
            "  {}: {:?}, {} rows in {} batches, {:.2?}",
            b.name, b.outcome, b.rows, b.batches, b.duration
        );
    }

    println!("\nrun again: the dependent revision applies");
    let report = set.run(&pool).await?;
    for step in &report.steps {
        println!("  applied {} in {:.2?}", step.id, step.duration);
    }

    println!("\nbackfill status:");
    for s in set.backfills()?.status(&pool).await? {
        println!("  {}: {} ({} rows, {} batches)", s.name, s.state, s.rows_done, s.batches);
    }
    let client = pool.get().await?;
    let not_null: bool = client
        .query_one(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'documents'::regclass AND attname = 'sha256'",
            &[],
        )
        .await?
        .get(0);
    println!("\ndocuments.sha256 NOT NULL: {not_null}");
    Ok(())
}
