//! The operator commands over the library's verify, repair, retry, offline
//! SQL, pre-flight and release features, as subprocesses.

use std::path::Path;

use serde_json::Value;

use crate::cli::{run, scratch_dir};
use crate::common::{fixture_dir, fresh_db, ledger};

/// Writes revision files into `dir`.
pub fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn copy_fixture(name: &str, to: &Path) {
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn verify_reruns_the_verify_sections_and_exits_4_when_one_fails() {
    let db = fresh_db("cli_verify").await;
    let dir = scratch_dir("verify");
    write(
        &dir,
        &[
            (
                "0001_items.sql",
                "-- pgskein: up\nCREATE TABLE items (id int);\n-- pgskein: down\nDROP TABLE items;\n\
                 -- pgskein: verify\nSELECT count(*) = 0 FROM items;\n",
            ),
            ("0002_noop.sql", "-- pgskein: revises 0001_items\n-- pgskein: up\nSELECT 1;\n"),
        ],
    );
    assert_eq!(run(&db, &dir, &["upgrade"]).await.code, 0);
    let out = run(&db, &dir, &["verify"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("ok      0001_items\n"), "{out:?}");
    assert!(out.stdout.contains("1 verify section run, 0 failed"), "{out:?}");

    db.connect().await.unwrap().batch_execute("INSERT INTO items VALUES (1)").await.unwrap();
    let out = run(&db, &dir, &["verify"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("FAILED  0001_items: "), "{out:?}");
    let doc = run(&db, &dir, &["verify", "--json"]).await.json();
    assert_eq!(doc["failed"], 1);
    assert_eq!(doc["revisions"][0]["id"], "0001_items");
    assert_eq!(doc["revisions"][0]["ok"], false);
    assert!(doc["revisions"][0]["error"].is_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn repair_records_edited_checksums_after_confirmation() {
    let db = fresh_db("cli_repair").await;
    let dir = scratch_dir("repair");
    copy_fixture("linear", &dir);
    assert_eq!(run(&db, &dir, &["upgrade"]).await.code, 0);
    let out = run(&db, &dir, &["repair"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nothing to repair"), "{out:?}");

    let file = dir.join("0001_items.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("-- Reviewed: the items table.\n{text}")).unwrap();
    let out = run(&db, &dir, &["status"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("changed   0001_items (edited since applied)"), "{out:?}");
    let out = run(&db, &dir, &["upgrade", "--json"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.json()["error"]["kind"], "checksum_mismatch");

    let out = run(&db, &dir, &["repair"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    let out = run(&db, &dir, &["repair", "--yes", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["repaired"], serde_json::json!(["0001_items"]));
    assert_eq!(run(&db, &dir, &["status"]).await.code, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn resolve_retry_resumes_a_failed_revision_once_the_cause_is_fixed() {
    let db = fresh_db("cli_retry").await;
    let dir = fixture_dir("notx_fails");
    assert_eq!(run(&db, &dir, &["upgrade"]).await.code, 1);
    let client = db.connect().await.unwrap();
    client.batch_execute("CREATE TABLE no_such_table (x int)").await.unwrap();
    let out = run(&db, &dir, &["resolve", "0002_indexes", "--retry"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("0002_indexes is recorded as failed at statement 2"), "{out:?}");
    let out = run(&db, &dir, &["resolve", "0002_indexes", "--retry", "--yes", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["resolution"], "retry");
    assert!(ledger(&client).await.iter().all(|(_, state)| state == "applied"));
    let out = run(&db, &dir, &["status", "--require-head"]).await;
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test]
async fn plan_and_upgrade_print_the_offline_script_without_running_it() {
    let db = fresh_db("cli_sql").await;
    let dir = fixture_dir("linear");
    let out = run(&db, &dir, &["plan", "--sql"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("-- pgskein offline script: 4 step(s)"), "{out:?}");
    assert!(out.stdout.contains("CREATE TABLE items"), "{out:?}");
    assert!(out.stdout.contains("CREATE INDEX CONCURRENTLY items_name_idx"), "{out:?}");
    let out = run(&db, &dir, &["upgrade", "0002", "--sql", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["style"], "per_revision");
    assert!(doc["sql"].as_str().unwrap().contains("ALTER TABLE items ADD COLUMN price_cents"));
    assert!(!doc["sql"].as_str().unwrap().contains("item_tags"));
    let out = run(&db, &dir, &["plan", "--sql", "--single-transaction"]).await;
    assert_eq!(out.code, 1, "a transaction none revision cannot go in one transaction: {out:?}");
    let out = run(&db, &dir, &["plan", "0002", "--sql", "--single-transaction"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Style: Single"), "{out:?}");
    assert!(ledger(&db.connect().await.unwrap()).await.is_empty(), "nothing ran");
}

#[tokio::test]
async fn preflight_reports_a_missing_extension_and_stops_the_upgrade_before_any_change() {
    let db = fresh_db("cli_preflight").await;
    let dir = scratch_dir("preflight");
    write(
        &dir,
        &[
            ("0001_items.sql", "-- pgskein: up\nCREATE TABLE items (id int);\n"),
            (
                "0002_ext.sql",
                "-- pgskein: revises 0001_items\n-- pgskein: up\nCREATE EXTENSION pgskein_no_such_ext;\n",
            ),
        ],
    );
    let out = run(&db, &dir, &["preflight"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("problem: extension \"pgskein_no_such_ext\""), "{out:?}");
    assert!(out.stdout.contains("[missing_extension]"), "{out:?}");
    let doc = run(&db, &dir, &["preflight", "--json"]).await.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["problems"][0]["kind"], "missing_extension");
    assert_eq!(doc["problems"][0]["blocking"], true);
    assert_eq!(doc["problems"][0]["revision"], "0002_ext");
    assert!(doc["server_version"].as_str().unwrap().chars().next().unwrap().is_ascii_digit());
    assert_eq!(doc["steps"].as_array().unwrap().len(), 2);
    let ok = run(&db, &dir, &["preflight", "0001", "--json"]).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(ok.json()["problems"], Value::Array(Vec::new()));

    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("error: pre-flight checks found 1 problem"), "{out:?}");
    assert!(out.stderr.contains("caused by: extension \"pgskein_no_such_ext\""), "{out:?}");
    assert!(ledger(&db.connect().await.unwrap()).await.is_empty(), "nothing was touched");
    let out = run(&db, &dir, &["upgrade", "--no-preflight"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("error: revision 0002_ext"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn preflight_reports_a_session_holding_a_lock_as_a_warning() {
    let db = fresh_db("cli_preflock").await;
    let dir = fixture_dir("linear");
    assert_eq!(run(&db, &dir, &["upgrade", "0001"]).await.code, 0);
    let mut holder = db.connect().await.unwrap();
    holder.batch_execute("SET application_name = 'report-job'").await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE items IN ACCESS SHARE MODE").await.unwrap();
    let out = run(&db, &dir, &["preflight", "0002"]).await;
    assert_eq!(out.code, 0, "a lock is reported, not a reason to refuse: {out:?}");
    assert!(out.stdout.contains("warning: pid "), "{out:?}");
    assert!(out.stdout.contains("report-job"), "{out:?}");
    assert!(out.stdout.contains("[lock_held]"), "{out:?}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn releases_show_in_status_and_name_upgrade_targets() {
    let db = fresh_db("cli_release").await;
    let dir = scratch_dir("release");
    write(
        &dir,
        &[
            (
                "0001_a.sql",
                "-- pgskein: release 1.0.0\n-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n",
            ),
            (
                "0002_b.sql",
                "-- pgskein: revises 0001_a\n-- pgskein: release 2.0.0\n-- pgskein: up\nCREATE TABLE b (id int);\n-- pgskein: down\nDROP TABLE b;\n",
            ),
            (
                "0003_c.sql",
                "-- pgskein: revises 0002_b\n-- pgskein: up\nCREATE TABLE c (id int);\n-- pgskein: down\nDROP TABLE c;\n",
            ),
        ],
    );
    let out = run(&db, &dir, &["status"]).await;
    assert!(out.stdout.contains("release   none fully applied"), "{out:?}");
    let out = run(&db, &dir, &["upgrade", "@1.0.0"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("applied 1 revision "), "{out:?}");
    let out = run(&db, &dir, &["status"]).await;
    assert!(out.stdout.contains("release   1.0.0"), "{out:?}");
    assert_eq!(run(&db, &dir, &["status", "--json"]).await.json()["release"], "1.0.0");
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(run(&db, &dir, &["status", "--json"]).await.json()["release"], "2.0.0");
    let out = run(&db, &dir, &["downgrade", "@1.0.0", "--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("reverted 2 revisions"), "{out:?}");
    let out = run(&db, &dir, &["upgrade", "@0.1.0"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let out = run(&db, &dir, &["history"]).await;
    assert!(out.stdout.contains("* 0002_b (release 2.0.0)"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn new_repeatable_writes_a_repeatable_revision_applied_after_the_versioned_ones() {
    let db = fresh_db("cli_repeatable").await;
    let dir = scratch_dir("repeatable");
    write(&dir, &[("0001_items.sql", "-- pgskein: up\nCREATE TABLE items (id int);\n")]);
    let out = run(&db, &dir, &["new", "items_view", "--repeatable", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["repeatable"], true);
    let file = dir.join("0002_items_view.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("-- pgskein: repeatable\n"), "{text}");
    std::fs::write(
        &file,
        text.replace(
            "-- pgskein: up\n",
            "-- pgskein: up\nCREATE OR REPLACE VIEW v AS SELECT id FROM items;\n",
        ),
    )
    .unwrap();
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("up   0002_items_view "), "{out:?}");
    let out = run(&db, &dir, &["history"]).await;
    assert!(out.stdout.contains("0002_items_view (repeatable)"), "{out:?}");
    let out = run(&db, &dir, &["new", "x", "--repeatable", "--revises", "0001_items"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
