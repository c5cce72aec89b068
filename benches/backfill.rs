//! SPEC P7: a backfill of N rows (default 10,000,000) against one `UPDATE` of
//! the same rows, in the same run, on the same server.
//!
//! ```text
//! cargo bench --bench backfill
//! PGSKEIN_BACKFILL_ROWS=1000000 cargo bench --bench backfill
//! ```
//!
//! Two identical tables (a few columns, a primary key and a secondary index)
//! are loaded; one gets `UPDATE ... SET sha256 = ...` as a single statement,
//! the other the same change as a SQL backfill with default options. Reported:
//! rows/s of each and their ratio (target ≥ 60 %), p50/p99 batch durations
//! (target p99 ≤ 250 ms), and the process's peak memory (VmHWM) before and
//! after the backfill (target: flat). Uses `DATABASE_URL`, or a throwaway server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgskein::backfill::Backfill;
use pgskein::testing::TestServer;
use pgskein::{MigrationSet, Migrator};

const TABLE: &str = "
    CREATE TABLE {t} (
        id bigint PRIMARY KEY,
        source text NOT NULL,
        body text NOT NULL,
        created_at timestamptz NOT NULL,
        sha256 text
    ) WITH (autovacuum_enabled = false);
    CREATE INDEX {t}_created_at ON {t} (created_at);";

const SET_SHA: &str = "sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex')";

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: i64 =
        std::env::var("PGSKEIN_BACKFILL_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(bench(rows))
}

async fn bench(rows: i64) -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::shared()?;
    let db = server.create_database("bench_backfill").await?;
    let client = db.connect().await?;
    let pool = db.pool(2);

    let revision = format!(
        "-- pgskein: up\n{}\n{}\n",
        TABLE.replace("{t}", "docs_update"),
        TABLE.replace("{t}", "docs_backfill")
    );
    let batches: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let peak_rss = Arc::new(Mutex::new(0u64));
    let (sink, rss) = (batches.clone(), peak_rss.clone());
    let set = MigrationSet::builder()
        .file("0001_docs.sql", revision.as_bytes())
        .backfill(
            Backfill::sql("docs_sha256", "0001_docs")
                .table("docs_backfill")
                .key("id")
                .statement(format!("UPDATE docs_backfill SET {SET_SHA} WHERE id >= $1 AND id < $2"))
                .on_progress(move |p| {
                    sink.lock().unwrap().push(p.batch_duration);
                    let mut peak = rss.lock().unwrap();
                    *peak = (*peak).max(status_kb("VmRSS:"));
                }),
        )
        .build()?;
    set.run(&pool).await?;

    println!("backfill benchmark: {rows} rows per table (PGSKEIN_BACKFILL_ROWS)");
    let load = Instant::now();
    for t in ["docs_update", "docs_backfill"] {
        client
            .batch_execute(&format!(
                "INSERT INTO {t} (id, source, body, created_at)
                 SELECT g, 'source-' || (g % 1000), repeat(md5(g::text), 3), timestamptz '2024-01-01' + g * interval '1 second'
                 FROM generate_series(1, {rows}) g"
            ))
            .await?;
        client.batch_execute(&format!("VACUUM ANALYZE {t}")).await?;
    }
    let size: String =
        client.query_one("SELECT pg_size_pretty(pg_total_relation_size('docs_update'))", &[]).await?.get(0);
    println!("loaded 2 x {rows} rows ({size} each) in {:.1?}", load.elapsed());

    client.batch_execute("CHECKPOINT").await?;
    let started = Instant::now();
    let updated = client.execute(&format!("UPDATE docs_update SET {SET_SHA}"), &[]).await?;
    let single = started.elapsed();
    assert_eq!(updated, rows as u64);
    let single_rate = rows as f64 / single.as_secs_f64();
    println!("single UPDATE:  {single:>10.2?}  {single_rate:>12.0} rows/s");

    client.batch_execute("CHECKPOINT").await?;
    let hwm_before = status_kb("VmHWM:");
    let started = Instant::now();
    let report = set.backfills()?.run(&pool).await?;
    let backfill = started.elapsed();
    let hwm_after = status_kb("VmHWM:");
    let run = report.get("docs_sha256").expect("the backfill ran");
    assert_eq!(run.rows, rows as u64);
    let missing: i64 =
        client.query_one("SELECT count(*) FROM docs_backfill WHERE sha256 IS NULL", &[]).await?.get(0);
    assert_eq!(missing, 0);
    let backfill_rate = rows as f64 / backfill.as_secs_f64();
    println!(
        "backfill:       {backfill:>10.2?}  {backfill_rate:>12.0} rows/s  ({} batches)  = {:.0} % of the single UPDATE (target >= 60 %)",
        run.batches,
        100.0 * backfill_rate / single_rate
    );
    let mut durations = batches.lock().unwrap().clone();
    durations.sort();
    println!(
        "batch duration: p50 {:.1?}  p99 {:.1?}  max {:.1?}  (target p99 <= 250 ms)",
        percentile(&durations, 0.50),
        percentile(&durations, 0.99),
        durations.last().copied().unwrap_or_default()
    );
    println!(
        "memory:         VmHWM {hwm_before} kB before, {hwm_after} kB after ({:+} kB); peak VmRSS during batches {} kB",
        hwm_after as i64 - hwm_before as i64,
        *peak_rss.lock().unwrap()
    );
    Ok(())
}
