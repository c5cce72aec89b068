//! SPEC P6: how long a test waits for a fresh database at head of a
//! 100-revision set. `cargo bench --bench testdb`
//!
//! Against the server of `DATABASE_URL`, or a throwaway one. Measured, each
//! over the same number of requests (100; `PGSKEIN_BENCH_REQUESTS` to change):
//!
//! - a clone of the warm template (`Template::database`, what
//!   `MigratedDatabase::new` does after the first call);
//! - for reference, the same clone with PostgreSQL 15's default `WAL_LOG`
//!   strategy instead of `FILE_COPY`;
//! - running the migrations into an empty database (`create_database` +
//!   `run`), what a suite without templates does;
//! - a database prepared ahead (`Template::prepare_ahead(4)`), with a 20 ms
//!   test body between requests.
//!
//! The first three take turns in blocks of 10 requests, so that a busy
//! machine slows them alike. Each request is timed until the database is handed
//! over; dropping it afterwards (as a test's end does) is not timed.

use std::time::{Duration, Instant};

use pgskein::testing::{Template, TestServer};
use pgskein::{MigrationSet, Migrator};

const REVISIONS: usize = 100;
const PREPARED: usize = 4;
const TEST_BODY: Duration = Duration::from_millis(20);
/// Requests per method before switching to the next.
const BLOCK: usize = 10;

/// Revision i creates a table referencing the previous one, with an index,
/// a check and a comment; every tenth also alters an earlier table.
fn generated_set() -> MigrationSet {
    let mut builder = MigrationSet::builder();
    let mut files = Vec::new();
    for i in 1..=REVISIONS {
        let mut text = String::new();
        if i > 1 {
            text.push_str(&format!("-- pgskein: revises {:04}_t{}\n", i - 1, i - 1));
        }
        text.push_str("-- pgskein: up\n");
        text.push_str(&format!(
            "CREATE TABLE t{i} (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    \
             name text NOT NULL DEFAULT '' CHECK (length(name) < 200),\n    \
             created_at timestamptz NOT NULL DEFAULT now(),\n    parent bigint{}\n);\n\
             CREATE INDEX t{i}_name_idx ON t{i} (name);\nCOMMENT ON TABLE t{i} IS 'table {i}';\n",
            if i > 1 { format!(" REFERENCES t{} (id)", i - 1) } else { String::new() }
        ));
        if i % 10 == 0 {
            text.push_str(&format!("ALTER TABLE t{} ADD COLUMN note_{i} text;\n", i / 2));
        }
        text.push_str("-- pgskein: down\n");
        if i % 10 == 0 {
            text.push_str(&format!("ALTER TABLE t{} DROP COLUMN note_{i};\n", i / 2));
        }
        text.push_str(&format!("DROP TABLE t{i};\n"));
        files.push((format!("{i:04}_t{i}.sql"), text));
    }
    for (name, text) in &files {
        builder = builder.file(name, text.as_bytes());
    }
    builder.build().expect("the generated set is valid")
}

struct Stats {
    median: Duration,
    p95: Duration,
    min: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Stats { median: at(0.5), p95: at(0.95), min: samples[0], max: samples[samples.len() - 1] }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn row(label: &str, s: &Stats) {
    println!("{label:<46} {:>10} {:>10} {:>10} {:>10}", ms(s.median), ms(s.p95), ms(s.min), ms(s.max));
}

/// The 1-minute load average, where the system says.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize =
        std::env::var("PGSKEIN_BENCH_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(100);
    let load_before = load_average();
    let server = TestServer::shared()?;
    let set = generated_set();

    let admin = server.create_database("pgskein_bench_admin").await?;
    let client = admin.connect().await?;
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let version_num: i32 =
        client.query_one("SHOW server_version_num", &[]).await?.get::<_, String>(0).parse()?;

    let started = Instant::now();
    let template = Template::on(server, &set).await?;
    let build = started.elapsed();

    // Alternating blocks, so that a busy machine slows every method alike
    // while no method pays for flushing the pages another just wrote.
    let (mut clone, mut wal_log, mut migrate) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    while clone.len() < requests {
        let block = BLOCK.min(requests - clone.len());
        for _ in 0..block {
            let t = Instant::now();
            let db = template.database().await?;
            clone.push(t.elapsed());
            drop(db);
        }
        // The same clone with WAL_LOG, PostgreSQL 15's default strategy.
        for _ in 0..block {
            if version_num < 150000 {
                break;
            }
            i += 1;
            let name = format!("pgskein_bench_wal_{}_{i}", std::process::id());
            let create =
                format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\" STRATEGY WAL_LOG", template.name());
            let t = Instant::now();
            client.batch_execute(&create).await?;
            wal_log.push(t.elapsed());
            client.batch_execute(&format!("DROP DATABASE \"{name}\"")).await?;
        }
        // Migrations into an empty database.
        for _ in 0..block {
            let t = Instant::now();
            let db = server.create_database("pgskein_bench_migrate").await?;
            let c = db.connect().await?;
            set.run(&c).await?;
            migrate.push(t.elapsed());
            drop(c);
            drop(db);
        }
    }

    // Prepared ahead, with a test body between requests.
    template.prepare_ahead(PREPARED);
    let deadline = Instant::now() + Duration::from_secs(30);
    while template.ready() < PREPARED && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut prepared = Vec::new();
    let mut missed = 0;
    for _ in 0..requests {
        let waiting = template.ready();
        let t = Instant::now();
        let db = template.database().await?;
        prepared.push(t.elapsed());
        if waiting == 0 {
            missed += 1;
        }
        tokio::time::sleep(TEST_BODY).await;
        drop(db);
    }
    template.prepare_ahead(0);

    let (clone, migrate, prepared) = (stats(clone), stats(migrate), stats(prepared));
    println!(
        "fresh database at head of a {REVISIONS}-revision set, {requests} requests each, PostgreSQL {version} ({})",
        if std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
            "DATABASE_URL"
        } else {
            "throwaway server"
        }
    );
    println!(
        "{} CPUs, load average {} before and {} after",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        load_average()
    );
    println!("template built once in {}", ms(build));
    println!("{:<46} {:>10} {:>10} {:>10} {:>10}", "", "median", "p95", "min", "max");
    row("clone of the warm template (FILE_COPY)", &clone);
    if !wal_log.is_empty() {
        row("  same clone with STRATEGY WAL_LOG", &stats(wal_log));
    }
    row("migrations into an empty database", &migrate);
    row(&format!("prepared ahead ({PREPARED} ready, {} ms test body)", TEST_BODY.as_millis()), &prepared);
    println!("  prepared requests that found none ready: {missed} of {requests}");
    println!(
        "re-migrating / cloning, median: {:.1}x",
        migrate.median.as_secs_f64() / clone.median.as_secs_f64()
    );
    Ok(())
}
