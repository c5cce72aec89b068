//! Rust-coded revisions next to SQL files, with a hook that reports each step.
//!
//! ```text
//! cargo run --example rust_migration
//! ```
//!
//! Like the demo, it needs no setup: with `DATABASE_URL` unset it starts a
//! throwaway PostgreSQL from the machine's binaries.

use pgskein::error::BoxError;
use pgskein::rust::{Conn, ReversibleMigration, RustMigration, RustRevision};
use pgskein::testing::TestServer;
use pgskein::{Config, Error, Hooks, MigrationSet, Migrator, Step, StepReport, Target};

/// Splits `people.name` into first and last names, in Rust.
struct SplitNames;

#[pgskein::async_trait]
impl RustMigration for SplitNames {
    async fn up(&self, db: &Conn<'_>) -> Result<(), BoxError> {
        db.batch_execute("ALTER TABLE people ADD COLUMN first_name text, ADD COLUMN last_name text").await?;
        let update = db.prepare("UPDATE people SET first_name = $1, last_name = $2 WHERE id = $3").await?;
        for row in db.query("SELECT id, name FROM people", &[]).await? {
            let (id, name): (i64, String) = (row.get(0), row.get(1));
            let (first, last) = name.split_once(' ').unwrap_or((name.as_str(), ""));
            db.execute(&update, &[&first, &last, &id]).await?;
        }
        Ok(())
    }
}

/// Its down: implementing `ReversibleMigration` is what makes it reversible.
#[pgskein::async_trait]
impl ReversibleMigration for SplitNames {
    async fn down(&self, db: &Conn<'_>) -> Result<(), BoxError> {
        db.batch_execute("ALTER TABLE people DROP COLUMN first_name, DROP COLUMN last_name").await?;
        Ok(())
    }
}

/// Prints each step as it finishes (a real service would send a metric).
struct Report;

#[pgskein::async_trait]
impl Hooks for Report {
    async fn after_step(&self, step: &Step, outcome: Result<&StepReport, &Error>) {
        match outcome {
            Ok(r) => println!("  {} {:<24} {:>8.2?}", step.direction, step.id, r.duration),
            Err(e) => println!("  {} {:<24} failed: {e}", step.direction, step.id),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let set = MigrationSet::builder()
        .file(
            "0001_people.sql",
            b"-- pgskein: up\n\
              CREATE TABLE people (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);\n\
              INSERT INTO people (name) VALUES ('Ada Lovelace'), ('Alan Turing'), ('Grace Hopper');\n\
              -- pgskein: down\n\
              DROP TABLE people;\n",
        )
        .rust(RustRevision::reversible("0002_split_names", "1", SplitNames).revises(["0001_people"]))
        // A closure is a migration too.
        .rust(
            RustRevision::from_fn("0003_name_index", "1", |db| {
                Box::pin(async move {
                    db.batch_execute("CREATE INDEX CONCURRENTLY people_last_name_idx ON people (last_name)")
                        .await?;
                    Ok(())
                })
            })
            .with_down(|db| {
                Box::pin(async move {
                    db.batch_execute("DROP INDEX CONCURRENTLY people_last_name_idx").await?;
                    Ok(())
                })
            })
            .revises(["0002_split_names"])
            .no_transaction(),
        )
        .build()?
        .with_config(Config::default().hooks(Report));

    let db = TestServer::shared()?.create_database("pgskein_rust_example").await?;
    let client = db.connect().await?;

    println!("upgrade:");
    set.run(&client).await?;
    for row in client.query("SELECT first_name, last_name FROM people ORDER BY id", &[]).await? {
        println!("  {} / {}", row.get::<_, String>(0), row.get::<_, String>(1));
    }
    println!("downgrade to base:");
    set.downgrade(&client, &Target::Base).await?;
    println!("upgrade again:");
    set.run(&client).await?;
    Ok(())
}
