use pgskein::config::TransactionMode;
use pgskein::{Error, MigrationSet, Migrator, Target};

use crate::common::{catalog, example, fresh_db};

async fn ledger_rows(client: &tokio_postgres::Client) -> Vec<(String, String, Vec<String>, String)> {
    client
        .query("SELECT id, checksum, revises, state FROM pgskein.applied ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn psql(url: &str, script: &str, single: bool) {
    let dir = std::env::temp_dir().join(format!("pgskein-offline-{}-{}", std::process::id(), single));
    std::fs::write(&dir, script).unwrap();
    let mut cmd = std::process::Command::new("psql");
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"]).arg(&dir).arg(url);
    if single {
        cmd.arg("-1");
    }
    let out = cmd.output().expect("psql runs");
    std::fs::remove_file(&dir).unwrap();
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn transactional_only() -> MigrationSet {
    MigrationSet::builder()
        .file("0001_items.sql", b"-- pgskein: up\nCREATE TABLE items (id int PRIMARY KEY, name text);\n-- pgskein: down\nDROP TABLE items;\n")
        .file(
            "0002_names.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: up\nCREATE INDEX items_name_idx ON items (name);\n\
              INSERT INTO items VALUES (1, 'it''s; quoted $$ text');\n\
              -- pgskein: down\nDROP INDEX items_name_idx;\nDELETE FROM items;\n\
              -- pgskein: verify\nSELECT count(*) = 1 FROM items;\n",
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_offline_script_under_psql_1_gives_the_same_catalog_and_ledger_as_upgrade() {
    let set = transactional_only();
    let live = fresh_db("offlinelive").await;
    let live_client = live.connect().await.unwrap();
    set.run(&live_client).await.unwrap();

    let offline = fresh_db("offlinescript").await;
    let client = offline.connect().await.unwrap();
    let script = set.sql(&client, &Target::Head, TransactionMode::Single).await.unwrap();
    assert!(!script.contains("BEGIN;"), "psql -1 provides the transaction");
    psql(&offline.url(), &script, true);

    assert_eq!(catalog(&client).await, catalog(&live_client).await);
    assert_eq!(ledger_rows(&client).await, ledger_rows(&live_client).await);
    assert!(set.run(&client).await.unwrap().fast_path, "the script kept the fast-path digest current");

    let down = set.sql(&client, &Target::Base, TransactionMode::Single).await.unwrap();
    psql(&offline.url(), &down, true);
    assert!(ledger_rows(&client).await.is_empty());
}

#[tokio::test]
async fn the_example_schema_renders_per_revision_and_replays_like_a_run() {
    let set = example();
    let live = fresh_db("offlineexlive").await;
    let live_client = live.connect().await.unwrap();
    set.run(&live_client).await.unwrap();

    let offline = fresh_db("offlineex").await;
    let client = offline.connect().await.unwrap();
    let err = set.sql(&client, &Target::Head, TransactionMode::Single).await.unwrap_err();
    assert!(
        matches!(&err, Error::NoTransactionInSingleMode { id, .. } if id.as_str() == "0004_documents_source_index")
    );
    let script = set.sql(&client, &Target::Head, TransactionMode::PerRevision).await.unwrap();
    assert_eq!(script.matches("\n-- up ").count(), set.len());
    psql(&offline.url(), &script, false);
    assert_eq!(catalog(&client).await, catalog(&live_client).await);
    assert_eq!(ledger_rows(&client).await, ledger_rows(&live_client).await);
    assert!(set.run(&client).await.unwrap().fast_path);
}

#[test]
fn rust_steps_appear_as_marked_comments() {
    let set = MigrationSet::builder()
        .file("0001_a.sql", b"-- pgskein: up\nCREATE TABLE a (id int);\n")
        .rust(
            pgskein::rust::RustRevision::from_fn("0002_b", "1", |_| Box::pin(async { Ok(()) }))
                .revises(["0001_a"]),
        )
        .build()
        .unwrap();
    let script = set.render_sql([], &Target::Head, "pgskein", TransactionMode::PerRevision).unwrap();
    assert!(script.contains("-- WARNING: Rust-coded revision 0002_b cannot be rendered as SQL"), "{script}");
    assert_eq!(script.matches("INSERT INTO \"pgskein\".\"applied\"").count(), 1);
}
