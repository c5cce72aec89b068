//! The README demo: migrates a throwaway database with the example schema in
//! `migrations/`, prints status and history, downgrades to base and upgrades again.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! With `DATABASE_URL` unset it starts a private PostgreSQL from the machine's
//! binaries; with it set, it creates (and afterwards drops) a fresh database on
//! that server. Set `RUST_LOG=pgskein=debug` to see the library's tracing events.

use pgskein::testing::TestServer;
use pgskein::{Migrator, Status, Target};

static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();

    let set = MIGRATIONS.set()?;
    println!("{} revisions, head {}", set.len(), set.heads()[0]);

    let server = TestServer::shared()?;
    let db = server.create_database("pgskein_demo").await?;
    println!("database {}", db.name());
    let pool = db.pool(4);

    let report = set.run(&pool).await?;
    println!("\nupgrade to head: {} steps in {:?}", report.steps.len(), report.duration);
    for step in &report.steps {
        println!("  {:<4} {:<32} {:>8.2?}", step.direction, step.id, step.duration);
    }
    print_status(&set.status(&pool).await?);

    let again = set.run(&pool).await?;
    println!("\nrun again: fast path = {}, {:?}", again.fast_path, again.duration);

    let client = pool.get().await?;
    println!("\nhistory (newest first):");
    let rows = client
        .query(
            "SELECT to_char(at, 'HH24:MI:SS.MS'), kind, coalesce(revision, ''), \
                    coalesce(round(duration_ms::numeric, 2)::text, '') \
             FROM pgskein.events ORDER BY seq DESC LIMIT 12",
            &[],
        )
        .await?;
    for r in rows {
        let (at, kind, rev, ms): (String, String, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        println!("  {at}  {kind:<7} {rev:<32} {ms:>8} ms");
    }
    drop(client);

    let down = set.downgrade(&pool, &Target::Base).await?;
    println!("\ndowngrade to base: {} steps in {:?}", down.steps.len(), down.duration);
    print_status(&set.status(&pool).await?);

    let up = set.run(&pool).await?;
    println!("\nupgrade again: {} steps in {:?}", up.steps.len(), up.duration);
    print_status(&set.status(&pool).await?);
    Ok(())
}

fn print_status(status: &Status) {
    let list = |ids: &[pgskein::RevisionId]| {
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    println!("status:");
    println!("  current  {}", list(&status.current));
    println!("  heads    {}", list(&status.heads));
    println!("  applied  {} revisions", status.applied.len());
    println!("  pending  {}", list(&status.pending));
}
