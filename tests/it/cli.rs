//! The `pgskein` binary end to end, as a subprocess against a fresh database
//! per test: output, exit codes, the confirmation rule and `--json`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use pgskein::testing::TestDatabase;
use serde_json::Value;

use crate::common::{fixture_dir, fresh_db, ledger};

/// What a run of the binary printed and returned.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
    /// Everything printed, for assertions on both streams.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `pgskein <args>` with no terminal, no colour, and `DATABASE_URL` set to `url` (or unset).
pub async fn run_url(url: Option<&str>, dir: &Path, args: &[&str]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgskein"));
    cmd.arg("--dir").arg(dir).args(args);
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG").env("NO_COLOR", "1");
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.stdin(Stdio::null());
    let out = cmd.output().await.expect("run the pgskein binary");
    Out {
        code: out.status.code().expect("an exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

pub async fn run(db: &TestDatabase, dir: &Path, args: &[&str]) -> Out {
    run_url(Some(&db.url()), dir, args).await
}

pub fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A fresh directory for a test that writes revision files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgskein-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

#[tokio::test]
async fn status_upgrade_current_and_status_again_on_the_example_schema() {
    let db = fresh_db("cli_tour").await;
    let dir = example_dir();

    let out = run(&db, &dir, &["status"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("current   base (nothing applied)"), "{out:?}");
    assert!(out.stdout.contains("pending   10: 0001_extensions, "), "{out:?}");
    assert!(out.stdout.contains("heads     0010_audit_log"), "{out:?}");

    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("up   0001_extensions "), "{out:?}");
    assert!(out.stdout.contains("applied 10 revisions in "), "{out:?}");
    assert!(out.stdout.contains("current   0010_audit_log"), "{out:?}");
    assert_eq!(ledger(&db.connect().await.unwrap()).await.len(), 10);

    let out = run(&db, &dir, &["current"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "0010_audit_log\n"), "{out:?}");

    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nothing to do for heads"), "{out:?}");

    let out = run(&db, &dir, &["status", "--require-head"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("pending   none: at head"), "{out:?}");
}

#[tokio::test]
async fn upgrade_downgrade_and_stamp_take_targets_and_report_each_step() {
    let db = fresh_db("cli_targets").await;
    let dir = fixture_dir("linear");
    let out = run(&db, &dir, &["upgrade", "0002"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("up   0001_items "), "{out:?}");
    assert!(out.stdout.contains("up   0002_item_price "), "{out:?}");

    let out = run(&db, &dir, &["upgrade", "+1", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["command"], "upgrade");
    assert_eq!(doc["target"], "+1");
    assert_eq!(doc["steps"][0]["id"], "0003_item_name_index");
    assert_eq!(doc["steps"][0]["direction"], "up");
    assert!(doc["steps"][0]["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(doc["fast_path"], false);
    assert_eq!(strings(&doc["current"]), ["0003_item_name_index"]);

    let out = run(&db, &dir, &["downgrade", "-2", "--yes"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("down 0003_item_name_index "), "{out:?}");
    assert!(out.stdout.contains("down 0002_item_price "), "{out:?}");
    assert!(out.stdout.contains("reverted 2 revisions"), "{out:?}");
    assert!(out.stdout.contains("current   0001_items"), "{out:?}");

    let out = run(&db, &dir, &["stamp", "head", "--yes", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["command"], "stamp");
    assert_eq!(doc["steps"].as_array().unwrap().len(), 3);
    assert!(doc["steps"].as_array().unwrap().iter().all(|s| s["stamped"] == true));
    let client = db.connect().await.unwrap();
    assert_eq!(ledger(&client).await.len(), 4);
    let price: i64 = client
        .query_one("SELECT count(*) FROM information_schema.columns WHERE column_name = 'price_cents'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(price, 0, "stamp ran no SQL");

    let out = run(&db, &dir, &["downgrade", "base", "--yes"]).await;
    assert_eq!(out.code, 1, "the price column is not there to drop: {out:?}");
    assert!(out.stderr.contains("error: revision 0004_item_tags"), "{out:?}");
}

#[tokio::test]
async fn plan_prints_the_steps_either_way_and_changes_nothing() {
    let db = fresh_db("cli_plan").await;
    let dir = fixture_dir("linear");
    let out = run(&db, &dir, &["plan", "0002"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "up   0001_items\nup   0002_item_price\n");
    assert!(ledger(&db.connect().await.unwrap()).await.is_empty());

    run(&db, &dir, &["upgrade"]).await;
    let out = run(&db, &dir, &["plan", "-2", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["target"], "-2");
    let steps: Vec<(&str, &str)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["direction"].as_str().unwrap(), s["id"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("down", "0004_item_tags"), ("down", "0003_item_name_index")]);
    let out = run(&db, &dir, &["plan"]).await;
    assert_eq!(out.stdout, "nothing to do: the database is at heads\n", "{out:?}");
}

#[tokio::test]
async fn destructive_commands_refuse_without_a_terminal_unless_yes_is_given() {
    let db = fresh_db("cli_confirm").await;
    let dir = fixture_dir("linear");
    run(&db, &dir, &["upgrade"]).await;
    let client = db.connect().await.unwrap();
    let before = ledger(&client).await;

    for args in [&["downgrade", "base"][..], &["downgrade", "-1"], &["stamp", "base"], &["stamp", "0001"]] {
        let out = run(&db, &dir, args).await;
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stderr.contains("refused: "), "{out:?}");
        assert!(out.stderr.contains("pass --yes"), "{out:?}");
        assert_eq!(ledger(&client).await, before, "{args:?} changed the ledger");
    }
    let out = run(&db, &dir, &["downgrade", "base", "--json"]).await;
    assert_eq!(out.code, 3);
    assert_eq!(out.json()["error"]["kind"], "needs_confirmation");
    assert_eq!(out.json()["error"]["exit_code"], 3);

    // `--yes` goes before or after the command.
    let out = run(&db, &dir, &["--yes", "downgrade", "-1"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(ledger(&client).await.len(), 3);
    // Nothing to revert: nothing to confirm.
    let out = run(&db, &dir, &["downgrade", "0003"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nothing to do for 0003"), "{out:?}");
}

#[tokio::test]
async fn a_failed_non_transactional_revision_shows_in_status_and_is_resolved_with_confirmation() {
    let db = fresh_db("cli_resolve").await;
    let dir = fixture_dir("notx_fails");
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("error: revision 0002_indexes"), "{out:?}");
    assert!(out.stderr.contains("at statement 2, line 5"), "{out:?}");
    assert!(out.stderr.contains("caused by: "), "{out:?}");
    assert!(out.stderr.contains("no_such_table"), "{out:?}");
    assert!(out.stderr.contains("done before the failure:\n  up   0001_items"), "{out:?}");

    let out = run(&db, &dir, &["status"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("blocked   0002_indexes is failed at statement 2"), "{out:?}");
    let doc = run(&db, &dir, &["status", "--json"]).await.json();
    assert_eq!(doc["blocked"][0]["id"], "0002_indexes");
    assert_eq!(doc["blocked"][0]["state"], "failed");
    assert_eq!(doc["blocked"][0]["statement"], 2);
    assert_eq!(doc["needs_attention"], true);

    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 4, "a blocked ledger needs attention: {out:?}");
    assert_eq!(run(&db, &dir, &["upgrade", "--json"]).await.json()["error"]["kind"], "blocked");

    let out = run(&db, &dir, &["resolve", "0002_indexes", "--mark-reverted"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    let out = run(&db, &dir, &["resolve", "0002_indexes"]).await;
    assert_eq!(out.code, 2, "one of --retry, --mark-applied, --mark-reverted is required: {out:?}");
    let out = run(&db, &dir, &["resolve", "0001_items", "--mark-applied", "--yes"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not recorded as failed or running"), "{out:?}");

    let out = run(&db, &dir, &["resolve", "0002_indexes", "--mark-reverted", "--yes", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["resolution"], "mark_reverted");
    let out = run(&db, &dir, &["status", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(strings(&out.json()["pending"]), ["0002_indexes"]);
}

#[tokio::test]
async fn json_output_of_the_read_only_commands_parses_back() {
    let db = fresh_db("cli_json").await;
    let dir = example_dir();
    run(&db, &dir, &["upgrade", "0008"]).await;

    let status = run(&db, &dir, &["status", "--json"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    let doc = status.json();
    assert_eq!(strings(&doc["current"]), ["0008_billing_subscriptions"]);
    assert_eq!(strings(&doc["pending"]), ["0006_auth_sessions", "0009_merge_auth_billing", "0010_audit_log"]);
    assert_eq!(doc["schema"], "pgskein");
    assert_eq!(doc["at_head"], false);
    assert_eq!(doc["release"], Value::Null);
    assert!(doc["database"].as_str().unwrap().contains(db.name()));

    let doc = run(&db, &dir, &["current", "--json"]).await.json();
    assert_eq!(strings(&doc["current"]), ["0008_billing_subscriptions"]);

    let doc = run(&db, &dir, &["heads", "--json"]).await.json();
    assert_eq!(doc["heads"][0]["id"], "0010_audit_log");
    assert!(doc["heads"][0]["path"].as_str().unwrap().ends_with("0010_audit_log.sql"));

    let doc = run(&db, &dir, &["history", "--json"]).await.json();
    let revisions = doc["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 10);
    assert_eq!(revisions[0]["id"], "0010_audit_log", "newest first");
    assert_eq!(revisions[0]["head"], true);
    let subs = revisions.iter().find(|r| r["id"] == "0008_billing_subscriptions").unwrap();
    assert_eq!(strings(&subs["depends_on"]), ["0005_auth_users"]);
    let merge = revisions.iter().find(|r| r["id"] == "0009_merge_auth_billing").unwrap();
    assert_eq!(strings(&merge["revises"]), ["0006_auth_sessions", "0008_billing_subscriptions"]);
    let index = revisions.iter().find(|r| r["id"] == "0004_documents_source_index").unwrap();
    assert_eq!(index["transaction"], "none");

    let doc = run(&db, &dir, &["graph", "--json"]).await.json();
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 10);
    let edges = doc["edges"].as_array().unwrap();
    assert!(edges.iter().any(|e| e["from"] == "0005_auth_users"
        && e["to"] == "0008_billing_subscriptions"
        && e["kind"] == "depends_on"));

    let doc = run(&db, &dir, &["check", "--json"]).await.json();
    assert_eq!(doc["revisions"], 10);
    assert!(doc["errors"].as_array().unwrap().is_empty());
    assert!(doc["warnings"].as_array().unwrap().iter().all(|w| w["rule"].is_string() && w["line"].is_u64()));
}

#[tokio::test]
async fn history_and_graph_draw_the_branches_and_the_merge() {
    let dir = example_dir();
    let out = run_url(None, &dir, &["history"]).await;
    assert_eq!(out.code, 0, "history needs no database: {out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("* 0010_audit_log (head)"), "{out:?}");
    assert!(lines[1].starts_with("* 0009_merge_auth_billing (mergepoint)"), "{out:?}");
    assert_eq!(lines[2], "|\\");
    assert!(lines[3].starts_with("| * 0008_billing_subscriptions (depends on 0005_auth_users)"), "{out:?}");
    assert!(lines.contains(&"|/"), "{out:?}");
    assert!(out.stdout.contains("* | 0005_auth_users (branch auth)"), "{out:?}");

    let dot = run_url(None, &dir, &["graph"]).await;
    assert_eq!(dot.code, 0);
    assert!(dot.stdout.starts_with("digraph pgskein {"), "{dot:?}");
    assert!(dot.stdout.contains("\"0005_auth_users\" -> \"0008_billing_subscriptions\" [style=dashed"));
    let mermaid = run_url(None, &dir, &["graph", "--format", "mermaid"]).await;
    assert!(mermaid.stdout.starts_with("flowchart TD\n"), "{mermaid:?}");

    let heads = run_url(None, &dir, &["heads"]).await;
    assert_eq!(heads.stdout, "0010_audit_log\n");
}

#[tokio::test]
async fn check_lints_the_fixture_and_validates_the_graph() {
    let lint = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint");
    let out = run_url(None, &lint, &["check"]).await;
    assert_eq!(out.code, 0, "warnings alone do not fail: {out:?}");
    let expected =
        std::fs::read_to_string(lint.join("0002_unsafe.sql")).unwrap().matches("-- expect: ").count();
    assert_eq!(out.stdout.matches(": warning: ").count(), expected, "{out:?}");
    assert!(
        out.stdout.contains("0002_unsafe.sql:4: warning: CREATE INDEX on existing table orders"),
        "{out:?}"
    );
    assert!(out.stdout.contains("    instead, use CREATE INDEX CONCURRENTLY"), "{out:?}");
    assert!(out.stdout.contains("the graph is valid"), "{out:?}");

    let out = run_url(None, &lint, &["check", "--strict"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    let doc = run_url(None, &lint, &["check", "--json"]).await.json();
    let warnings = doc["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), expected);
    assert_eq!(warnings[0]["rule"], "create-index");
    assert_eq!(warnings[0]["line"], 4);
    assert_eq!(warnings[0]["table"], "orders");
    assert_eq!(warnings[0]["revision"], "0002_unsafe");

    let dir = scratch_dir("check_heads");
    for (name, text) in [
        ("0001_a.sql", "-- pgskein: up\nSELECT 1;\n"),
        ("0002_b.sql", "-- pgskein: revises 0001_a\n-- pgskein: up\nSELECT 1;\n"),
        ("0003_c.sql", "-- pgskein: revises 0001_a\n-- pgskein: up\nSELECT 1;\n"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out = run_url(None, &dir, &["check"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("error: the migration set has 2 heads"), "{out:?}");
    let out = run_url(None, &dir, &["check", "--allow-multiple-heads", "--strict"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.ends_with("3 revisions, 2 heads (0002_b, 0003_c): the graph is valid; 0 warnings\n"),
        "{out:?}"
    );

    std::fs::write(dir.join("0004_bad.sql"), "-- pgskein: revises 0009_nope\n-- pgskein: up\n").unwrap();
    let out = run_url(None, &dir, &["check", "--json"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let errors = out.json()["errors"].as_array().unwrap().clone();
    assert!(errors[0].as_str().unwrap().contains("0009_nope"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn new_and_merge_write_revision_files_that_load_and_apply() {
    let db = fresh_db("cli_new").await;
    let dir = scratch_dir("new").join("migrations");

    let out = run(&db, &dir, &["new", "create items"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("created "), "{out:?}");
    assert!(out.stdout.contains("0001_create_items.sql (a new root)"), "{out:?}");
    let text = std::fs::read_to_string(dir.join("0001_create_items.sql")).unwrap();
    assert!(text.contains("-- pgskein: message Create items\n-- pgskein: up\n"), "{text}");
    std::fs::write(
        dir.join("0001_create_items.sql"),
        text.replace("-- pgskein: up\n", "-- pgskein: up\nCREATE TABLE items (id int);\n")
            .replace("-- pgskein: down\n", "-- pgskein: down\nDROP TABLE items;\n"),
    )
    .unwrap();

    let out = run(&db, &dir, &["new", "add_price", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["id"], "0002_add_price");
    assert_eq!(strings(&doc["revises"]), ["0001_create_items"]);
    assert_eq!(doc["transaction"], "transactional");

    let out = run(
        &db,
        &dir,
        &[
            "new",
            "name_index",
            "--revises",
            "0001",
            "--no-transaction",
            "--branch",
            "search",
            "-m",
            "Index names",
        ],
    )
    .await;
    assert_eq!(out.code, 2, "a prefix is not enough for --revises: {out:?}");
    let out = run(
        &db,
        &dir,
        &[
            "new",
            "name_index",
            "--revises",
            "0001_create_items",
            "--no-transaction",
            "--branch",
            "search",
            "-m",
            "Index names",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(dir.join("0003_name_index.sql")).unwrap();
    for line in [
        "-- pgskein: revises 0001_create_items\n",
        "-- pgskein: branch search\n",
        "-- pgskein: transaction none\n",
        "-- pgskein: message Index names\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }

    let out = run(&db, &dir, &["new", "more"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("several heads (0002_add_price, 0003_name_index)"), "{out:?}");
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("2 heads"), "{out:?}");
    assert!(out.stderr.contains("hint: merge them with `pgskein merge`"), "{out:?}");
    let heads = run(&db, &dir, &["heads"]).await;
    assert_eq!(heads.stdout, "0002_add_price\n0003_name_index (branch search)\n");

    let out = run(&db, &dir, &["merge", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["id"], "0004_merge");
    assert_eq!(strings(&doc["revises"]), ["0002_add_price", "0003_name_index"]);
    assert_eq!(doc["message"], "Merge 0002_add_price and 0003_name_index");
    let out = run(&db, &dir, &["merge"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nothing to merge: 0004_merge is the only head"), "{out:?}");

    let out = run(&db, &dir, &["new", "after_merge", "--depends-on", "0003_name_index"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("0005_after_merge.sql (revises 0004_merge)"), "{out:?}");

    let out = run(&db, &dir, &["check", "--strict"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("applied 5 revisions"), "{out:?}");
    let out = run(&db, &dir, &["history"]).await;
    assert!(
        out.stdout.starts_with("* 0005_after_merge (head, depends on 0003_name_index): After merge\n"),
        "{out:?}"
    );
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn exit_codes_for_usage_errors_bad_directories_and_missing_databases() {
    let db = fresh_db("cli_codes").await;
    let dir = fixture_dir("linear");
    let out = run(&db, &dir, &["upgrade", "--no-such-flag"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let out = run(&db, &dir, &["frobnicate"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    let out = run(&db, &dir, &["upgrade", "0009_nope"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("unknown target \"0009_nope\""), "{out:?}");
    run(&db, &dir, &["upgrade"]).await;
    let out = run(&db, &dir, &["upgrade", "0009_nope"]).await;
    assert_eq!(out.code, 2, "an unknown target is refused even at head: {out:?}");
    let out = run(&db, &dir, &["downgrade", "nope@head", "--yes"]).await;
    assert_eq!(out.code, 2, "{out:?}");

    let out = run_url(None, &dir, &["status"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no database given: set DATABASE_URL or pass --database-url"), "{out:?}");
    let missing = dir.join("does-not-exist");
    let out = run(&db, &missing, &["status"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("hint: run pgskein in the project directory, or pass --dir"), "{out:?}");
    let out = run(&db, &missing, &["status", "--json"]).await;
    assert_eq!(out.json()["error"]["kind"], "io");

    let out = run(&db, &dir, &["--help"]).await;
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Exit codes: 0 ok, 1 error, 2 usage, 3 refused"), "{out:?}");
}

#[tokio::test]
async fn waiting_too_long_for_the_migration_lock_exits_5_naming_the_holder() {
    let db = fresh_db("cli_lock").await;
    let dir = fixture_dir("linear");
    let holder = db.connect().await.unwrap();
    holder.batch_execute("SET application_name = 'stuck-migrator'").await.unwrap();
    let key = pgskein::Config::default().lock_key();
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
    let out = run(&db, &dir, &["upgrade", "--lock-wait", "1"]).await;
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains("waiting for the migration lock"), "{out:?}");
    assert!(out.stderr.contains("error: timed out after"), "{out:?}");
    assert!(out.stderr.contains("stuck-migrator"), "{out:?}");
    assert_eq!(
        run(&db, &dir, &["upgrade", "--lock-wait", "0", "--json"]).await.json()["error"]["kind"],
        "lock_timeout"
    );
    holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.unwrap();
    assert_eq!(run(&db, &dir, &["upgrade"]).await.code, 0);
}

#[tokio::test]
async fn passwords_are_masked_in_output_and_errors() {
    const SECRET: &str = "Sup3r-Secret-pw";
    let dir = fixture_dir("linear");
    for url in [
        format!("postgresql://app:{SECRET}@127.0.0.1:1/app"),
        format!("postgres://app@127.0.0.1:1/app?password={SECRET}"),
        format!("host=127.0.0.1 port=1 user=app password={SECRET} dbname=app"),
        format!("host=127.0.0.1 port=1 user=app password='{SECRET}' dbname=app"),
    ] {
        for json in [false, true] {
            let args: &[&str] = if json { &["status", "--json"] } else { &["status"] };
            let out = run_url(Some(&url), &dir, args).await;
            assert_eq!(out.code, 1, "{out:?}");
            assert!(!out.all().contains(SECRET), "{url}: {out:?}");
            assert!(out.all().contains("cannot connect to "), "{out:?}");
            assert!(out.all().contains("***"), "{out:?}");
        }
    }
    let out = run_url(Some(&format!("postgresql://app:{SECRET}@127.0.0.1:1/app")), &dir, &["status"]).await;
    assert!(out.stderr.contains("cannot connect to postgresql://app:***@127.0.0.1:1/app"), "{out:?}");

    // A connection that works, with a password the server does not ask for.
    let db = fresh_db("cli_secret").await;
    let url = db.url();
    if let Some(rest) = url.strip_prefix("postgresql://postgres@") {
        let with_password = format!("postgresql://postgres:{SECRET}@{rest}");
        let out = run_url(Some(&with_password), &dir, &["status"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("database  postgresql://postgres:***@"), "{out:?}");
        assert!(!out.all().contains(SECRET), "{out:?}");
        let out = run_url(Some(&with_password), &dir, &["--help"]).await;
        assert!(!out.all().contains(SECRET), "help must not show DATABASE_URL's value: {out:?}");
    }
}

#[tokio::test]
async fn backup_runs_pg_dump_before_a_run_that_has_work_and_stops_the_run_when_it_fails() {
    let db = fresh_db("cli_backup").await;
    let dir = fixture_dir("linear");
    let scratch = scratch_dir("backup");
    let file = scratch.join("before.dump");
    let file_arg = file.to_str().unwrap();

    let out =
        run_with_env(&db, &dir, &["upgrade", "--backup", "/dev/null"], "PGSKEIN_PG_DUMP", "false").await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("the before_run hook failed; the run stopped before doing anything"),
        "{out:?}"
    );
    assert!(out.stderr.contains("caused by: pg_dump failed"), "{out:?}");
    assert!(ledger(&db.connect().await.unwrap()).await.is_empty());

    let out =
        run_with_env(&db, &dir, &["upgrade", "0002", "--backup", file_arg], "PGSKEIN_PG_DUMP", &pg_dump())
            .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("backup written to {file_arg}")), "{out:?}");
    let dump = std::fs::read(&file).unwrap();
    assert!(dump.starts_with(b"PGDMP"), "a pg_dump custom-format archive");

    std::fs::remove_file(&file).unwrap();
    let out = run_with_env(
        &db,
        &dir,
        &["upgrade", "0002", "--backup", file_arg, "--json"],
        "PGSKEIN_PG_DUMP",
        &pg_dump(),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["backup"], Value::Null, "nothing to do, no backup");
    assert!(!file.exists());

    let out = run_with_env(
        &db,
        &dir,
        &["downgrade", "base", "--yes", "--backup", file_arg, "--json"],
        "PGSKEIN_PG_DUMP",
        &pg_dump(),
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["backup"], file_arg);
    assert!(file.exists());
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// The pg_dump that matches the test server: next to its binaries when
/// PGSKEIN_PG_BIN names them, else the one on PATH.
fn pg_dump() -> String {
    match std::env::var_os("PGSKEIN_PG_BIN") {
        Some(bin) => Path::new(&bin).join("pg_dump").display().to_string(),
        None => "pg_dump".to_owned(),
    }
}

async fn run_with_env(db: &TestDatabase, dir: &Path, args: &[&str], key: &str, value: &str) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgskein"));
    cmd.arg("--dir").arg(dir).args(args).env("DATABASE_URL", db.url()).env(key, value);
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1").stdin(Stdio::null());
    let out = cmd.output().await.unwrap();
    Out {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[tokio::test]
async fn colour_only_when_asked_for_off_a_terminal() {
    let dir = example_dir();
    let plain = run_url(None, &dir, &["check"]).await;
    assert!(!plain.all().contains('\x1b'), "{plain:?}");
    let coloured = run_url(None, &dir, &["check", "--color", "always"]).await;
    assert!(coloured.stdout.contains("\x1b[33mwarning\x1b[0m"), "{coloured:?}");
    let json = run_url(None, &dir, &["check", "--color", "always", "--json"]).await;
    assert!(!json.stdout.contains('\x1b'), "JSON is never coloured: {json:?}");
    json.json();
}
