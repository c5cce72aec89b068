//! A start at head parses nothing: an embedded set and a set read from disk
//! are compared with the ledger by their fingerprint alone, and parsed (and
//! checked) only when a run has work to do, or by `check`.
//!
//! To show that nothing was parsed, the ledger is made to hold a file that
//! today's parser refuses, as if an older, laxer pgskein had applied it: a
//! run at head returns, and everything that needs the revisions reports it.

use pgskein::{Checksum, Config, Embedded, EmbeddedFile, EmbeddedState, Error, MigrationSet, Migrator};

use crate::cli::{run, scratch_dir};
use crate::cli_ops::write;
use crate::common::{fresh_db, ledger};

static EXAMPLE: Embedded = pgskein::embed_migrations!("migrations");

const GOOD: &str = "-- pgskein: up\nCREATE TABLE t (id int);\n";
/// Refused at load: transaction control in a transactional revision (line 2).
const REFUSED: &str = "-- pgskein: up\nBEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n";

/// Changes the ledger's checksum of `0001_t` to [`REFUSED`]'s, as if that
/// file had been applied.
async fn record_as_refused(client: &tokio_postgres::Client) {
    client
        .execute(
            "UPDATE pgskein.applied SET checksum = $1 WHERE id = '0001_t'",
            &[&Checksum::of_sql(REFUSED).to_hex()],
        )
        .await
        .unwrap();
}

/// Applies `0001_t` from [`GOOD`], then records it as applied from
/// [`REFUSED`]; returns the ledger's digest, which the triggers keep.
async fn applied_as_refused(client: &tokio_postgres::Client) -> String {
    let good = MigrationSet::builder().file("0001_t.sql", GOOD.as_bytes()).build().unwrap();
    assert_eq!(good.run(client).await.unwrap().steps.len(), 1);
    record_as_refused(client).await;
    client.query_one("SELECT value FROM pgskein.meta WHERE key = 'digest'", &[]).await.unwrap().get(0)
}

fn refused(e: &Error, path: &str) -> bool {
    matches!(e, Error::NeedsNoTransaction { path: p, line: 2, .. } if p.ends_with(path))
}

#[tokio::test]
async fn a_start_at_head_from_disk_parses_no_file_and_the_set_still_reports_it() {
    let db = fresh_db("fast_disk").await;
    let client = db.connect().await.unwrap();
    applied_as_refused(&client).await;
    let dir = scratch_dir("fast_disk");
    write(&dir, &[("0001_t.sql", REFUSED)]);

    let lazy = MigrationSet::builder().dir(&dir).lazy().unwrap();
    let report = lazy.run(&client).await.expect("at head: nothing parsed, nothing refused");
    assert!(report.fast_path && report.steps.is_empty(), "{report:?}");

    let e = lazy.status(&client).await.unwrap_err();
    assert!(refused(&e, "0001_t.sql"), "status needs the revisions: {e}");
    let e = lazy.set().unwrap_err();
    assert!(refused(&e, "0001_t.sql"), "{e}");
    let e = MigrationSet::from_dir(&dir).unwrap_err();
    assert!(refused(&e, "0001_t.sql"), "from_dir validates at once: {e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_run_with_work_checks_every_file_before_touching_the_database() {
    let db = fresh_db("fast_work").await;
    let client = db.connect().await.unwrap();
    let lazy = MigrationSet::builder()
        .file("0001_a.sql", GOOD.as_bytes())
        .file("0002_b.sql", format!("-- pgskein: revises 0001_a\n{REFUSED}").as_bytes())
        .lazy()
        .unwrap();
    let e = lazy.run(&client).await.unwrap_err();
    assert!(matches!(&e, Error::NeedsNoTransaction { path, line: 3, .. } if path == "0002_b.sql"), "{e}");
    assert!(ledger(&client).await.is_empty(), "nothing recorded");
    let tables: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'pgskein')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing created");

    let good = MigrationSet::builder().dir(crate::cli::example_dir()).lazy().unwrap();
    let report = good.run(&client).await.unwrap();
    assert_eq!((report.fast_path, report.steps.len()), (false, 10));
    assert!(good.run(&client).await.unwrap().fast_path);
}

#[tokio::test]
async fn an_embedded_set_at_head_parses_nothing() {
    let db = fresh_db("fast_embedded").await;
    let client = db.connect().await.unwrap();
    let digest = applied_as_refused(&client).await;
    // What embed_migrations! would have produced when the file was accepted.
    let files: &'static [EmbeddedFile] = Box::leak(Box::new([EmbeddedFile::__new(
        "migrations/0001_t.sql",
        "0001_t",
        *Checksum::of_sql(REFUSED).as_bytes(),
        REFUSED.as_bytes(),
    )]));
    let state: &'static EmbeddedState = Box::leak(Box::new(EmbeddedState::new()));
    let embedded = Embedded::__new(files, digest.leak(), None, state);

    let report = embedded.run(&client).await.expect("at head: nothing parsed");
    assert!(report.fast_path, "{report:?}");
    let report = embedded.with_config(Config::default()).run(&client).await.unwrap();
    assert!(report.fast_path, "the same through with_config");
    let e = embedded.plan(&client, &pgskein::Target::Heads).await.unwrap_err();
    assert!(refused(&e, "0001_t.sql"), "{e}");
}

#[tokio::test]
async fn the_embedded_example_is_a_migrator_with_a_config_of_its_own() {
    let db = fresh_db("fast_config").await;
    let client = db.connect().await.unwrap();
    let migrator = EXAMPLE.with_config(Config::default().schema("fast_start_ledger"));
    let report = migrator.run(&client).await.unwrap();
    assert_eq!((report.fast_path, report.steps.len()), (false, 10));
    assert!(migrator.run(&client).await.unwrap().fast_path);
    let status = migrator.status(&client).await.unwrap();
    assert_eq!(status.applied.len(), 10);
    let rows: i64 =
        client.query_one("SELECT count(*) FROM fast_start_ledger.applied", &[]).await.unwrap().get(0);
    assert_eq!(rows, 10);
    assert!(ledger(&client).await.is_empty(), "nothing in the default schema");
}

#[tokio::test]
async fn the_cli_upgrade_at_head_parses_no_file_and_check_and_status_still_refuse_it() {
    let db = fresh_db("fast_cli").await;
    let client = db.connect().await.unwrap();
    let dir = scratch_dir("fast_cli");
    write(&dir, &[("0001_t.sql", GOOD)]);
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    record_as_refused(&client).await;
    write(&dir, &[("0001_t.sql", REFUSED)]);

    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "nothing to do for heads: the database is at head\n", "{out:?}");
    let out = run(&db, &dir, &["upgrade", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!((doc["fast_path"].as_bool(), doc["current"].is_null()), (Some(true), true), "{doc}");
    assert_eq!(doc["steps"].as_array().map(Vec::len), Some(0));

    for command in [&["check"][..], &["status"], &["upgrade", "head"], &["upgrade", "--sql"]] {
        let out = run(&db, &dir, command).await;
        assert_eq!(out.code, 1, "{command:?}: {out:?}");
        assert!(out.stderr.contains("0001_t.sql"), "{command:?} names the file: {out:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `pgskein upgrade` reads the ledger's digest while it reads the files; when
/// there is work, the run does not ask the same question again.
#[tokio::test]
async fn the_cli_asks_the_fast_path_once_in_an_upgrade_with_work() {
    use pgskein::testing::{ServerOptions, TestServer};
    let server = TestServer::start_private_with(ServerOptions::new().setting("log_statement", "all"))
        .unwrap_or_else(|e| panic!("a private server with log_statement=all: {e}"));
    let db = server.create_database("fast_cli_once").await.unwrap();
    let dir = scratch_dir("fast_cli_once");
    write(&dir, &[("0001_t.sql", GOOD)]);
    assert_eq!(run(&db, &dir, &["upgrade"]).await.code, 0);
    write(&dir, &[("0002_u.sql", "-- pgskein: revises 0001_t\n-- pgskein: up\nCREATE TABLE u (id int);\n")]);
    let before = server.server_log().unwrap_or_default();
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let log = server.server_log().unwrap_or_default();
    let reads = log[before.len()..].lines().filter(|l| l.contains("table_to_xml")).count();
    // The digest's one query is sent by: the CLI's fast path, the pre-flight's
    // read, the locked run's read, and the status printed after the run.
    assert_eq!(reads, 4, "{}", &log[before.len()..]);
    std::fs::remove_dir_all(&dir).unwrap();
}
