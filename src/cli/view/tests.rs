use serde_json::json;

use super::*;
use crate::{MigrationSet, Report, Target};

#[test]
fn a_run_that_took_the_fast_path_has_no_backup_and_no_current_revisions() {
    let report = Report { fast_path: true, ..Report::default() };
    let ran = Ran {
        command: "upgrade",
        target: &Target::Heads,
        report: &report,
        backup_asked: true,
        backup: None,
        current: None,
    };
    let doc = ran.json();
    assert_eq!(doc["command"], "upgrade");
    assert_eq!(doc["target"], "heads");
    assert_eq!(doc["fast_path"], true);
    assert_eq!(doc["steps"], json!([]));
    assert!(doc["backup"].is_null() && doc["current"].is_null(), "{doc}");

    let at_base = Ran { current: Some(Vec::new()), ..ran };
    assert_eq!(at_base.json()["current"], json!([]), "a run that loaded the set names where it is");
}

#[test]
fn check_lists_every_lint_warning_with_its_rule_name() {
    let set = MigrationSet::builder()
        .file("0001_t.sql", b"-- pgskein: up\nCREATE TABLE t (id int);\n")
        .file("0002_i.sql", b"-- pgskein: revises 0001_t\n-- pgskein: up\nCREATE INDEX t_id ON t (id);\n")
        .build()
        .unwrap();
    let check =
        Check { revisions: set.len(), heads: vec!["0002_i"], errors: Vec::new(), warnings: set.lint() };
    let doc = check.json();
    assert_eq!(doc["revisions"], 2);
    assert_eq!(doc["heads"], json!(["0002_i"]));
    let warnings = doc["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{doc}");
    assert_eq!(warnings[0]["revision"], "0002_i");
    assert_eq!(warnings[0]["table"], "t");
    assert_eq!(warnings[0]["rule"], "create-index");
}

#[test]
fn a_set_that_did_not_load_is_a_check_document_with_its_errors() {
    let failure = crate::cli::ui::Failure::new(1, "parse", "0001_a.sql: no up section").hint("not in JSON");
    let doc = LoadErrors { failures: vec![failure] }.json();
    assert_eq!(
        doc,
        json!({ "revisions": 0, "heads": [], "errors": ["0001_a.sql: no up section"], "warnings": [] })
    );
}

#[test]
fn repaired_lists_the_revisions_as_ids() {
    let repaired = Repaired { repaired: vec![crate::RevisionId::new("0002_b").unwrap()] };
    assert_eq!(repaired.json(), json!({ "repaired": ["0002_b"] }));
}
