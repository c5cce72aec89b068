//! The CLI as an operator meets it on a real set: every load error at once,
//! long lists kept readable, `resolve` by prefix and worded by direction,
//! hints with the real flags, and, embedded in a service, `--dir` keeping
//! the service's backfills and the `backfill` commands.

use std::path::Path;
use std::process::ExitCode;

use pgskein::backfill::{Backfill, BackfillState};
use pgskein::{MigrationSet, Migrator};

use crate::cli::{run, scratch_dir};
use crate::cli_embedded::migrate_args;
use crate::cli_ops::write;
use crate::common::fresh_db;

#[tokio::test]
async fn check_reports_every_file_that_does_not_load() {
    let db = fresh_db("cli_check_all").await;
    let dir = scratch_dir("check_all");
    write(
        &dir,
        &[
            ("0001_ok.sql", "-- pgskein: up\nCREATE TABLE t (id int);\n"),
            (
                "0002_typo.sql",
                "-- pgskein: revises 0001_ok\n-- pgskein: dependson 0001_ok\n-- pgskein: up\nSELECT 1;\n",
            ),
            ("0003_empty.sql", "\n"),
        ],
    );
    let out = run(&db, &dir, &["check"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("0002_typo.sql:2: unknown directive `dependson`"), "{out:?}");
    assert!(out.stderr.contains("0003_empty.sql: the file is empty"), "{out:?}");
    assert!(out.stderr.contains("2 errors loading the set"), "{out:?}");

    let out = run(&db, &dir, &["check", "--json"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json()["errors"].as_array().unwrap().len(), 2, "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn status_and_preflight_summarise_a_long_pending_list() {
    let db = fresh_db("cli_long").await;
    let dir = scratch_dir("long");
    for i in 1..=40 {
        let revises = if i == 1 { String::new() } else { format!("-- pgskein: revises {:04}_step\n", i - 1) };
        let text = format!("{revises}-- pgskein: up\nSELECT {i};\n");
        std::fs::write(dir.join(format!("{i:04}_step.sql")), text).unwrap();
    }
    let out = run(&db, &dir, &["status"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("pending   40: 0001_step, 0002_step,"), "{out:?}");
    assert!(out.stdout.contains("... 28 more ..., 0038_step, 0039_step, 0040_step"), "{out:?}");
    let pending: Vec<&str> = out.stdout.lines().skip_while(|l| !l.starts_with("pending")).take(3).collect();
    assert!(pending.iter().all(|l| l.len() <= 110), "{pending:#?}");

    let out = run(&db, &dir, &["preflight"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("plan      40 steps: up 0001_step, up 0002_step,"), "{out:?}");
    assert!(out.stdout.contains("... 28 more ..."), "{out:?}");
    let plan: Vec<&str> = out.stdout.lines().skip_while(|l| !l.starts_with("plan")).take(3).collect();
    assert!(plan.iter().all(|l| l.len() <= 110), "{plan:#?}");

    let out = run(&db, &dir, &["status", "--json"]).await;
    assert_eq!(out.json()["pending"].as_array().unwrap().len(), 40, "JSON lists them all");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `transaction none` revision whose down section fails at its second statement.
const FAILING_DOWN: &str = "-- pgskein: transaction none\n-- pgskein: up\n\
    CREATE TABLE gadgets (id int);\nCREATE INDEX CONCURRENTLY gadgets_id ON gadgets (id);\n\
    -- pgskein: down\nDROP INDEX CONCURRENTLY gadgets_id;\nDROP TABLE no_such_table;\n";

#[tokio::test]
async fn resolve_takes_a_prefix_and_words_a_failed_down_as_a_revert() {
    let db = fresh_db("cli_resolve_down").await;
    let dir = scratch_dir("resolve_down");
    write(&dir, &[("0001_gadgets.sql", FAILING_DOWN)]);
    assert_eq!(run(&db, &dir, &["upgrade"]).await.code, 0);
    let out = run(&db, &dir, &["downgrade", "base", "--yes"]).await;
    assert_eq!(out.code, 1, "{out:?}");

    let out = run(&db, &dir, &["status"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stdout.contains("pgskein resolve 0001_gadgets --retry | --mark-applied | --mark-reverted"),
        "{out:?}"
    );

    let out = run(&db, &dir, &["resolve", "0001", "--mark-reverted"]).await;
    assert_eq!(out.code, 3, "no terminal, no --yes: {out:?}");
    assert!(
        out.stderr.contains("0001_gadgets is recorded as failed at statement 2 (a failed revert)"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(
            "Record it as reverted (its down section's remaining statements were completed by hand)?"
        ),
        "{out:?}"
    );

    let out = run(&db, &dir, &["resolve", "0001_g", "--mark-reverted", "--yes", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!((doc["revision"].as_str(), doc["direction"].as_str()), (Some("0001_gadgets"), Some("down")));
    let out = run(&db, &dir, &["status"]).await;
    assert!(out.stdout.contains("current   base (nothing applied)"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_blocked_run_hints_at_the_resolve_command_and_its_flags() {
    let db = fresh_db("cli_blocked_hint").await;
    let dir = crate::common::fixture_dir("notx_fails");
    assert_eq!(run(&db, &dir, &["upgrade"]).await.code, 1);
    let out = run(&db, &dir, &["upgrade"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("error: revision 0002_indexes is recorded as failed at statement 2"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("hint: fix the cause, then `pgskein resolve 0002_indexes --retry`"),
        "{out:?}"
    );
    assert!(out.stderr.contains("`--mark-reverted`"), "{out:?}");
    assert!(!out.all().contains("MarkApplied") && !out.all().contains("`Retry`"), "{out:?}");

    let out = run(&db, &dir, &["resolve", "0001", "--retry"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("0001_items"),
        "a prefix of a revision that is not blocked names it: {out:?}"
    );
}

// ----- embedded in a service -----

fn migrate(argv: &[&str], url: String) -> pgskein::cli::Args {
    migrate_args(argv).with_database_url(url).with_command_name("myservice migrate")
}

/// Revision files whose second revision waits for a backfill of the first.
fn gadget_files(dir: &Path) {
    write(
        dir,
        &[
            (
                "0001_gadgets.sql",
                "-- pgskein: up\nCREATE TABLE gadgets (id int PRIMARY KEY, label text);\n\
                 INSERT INTO gadgets SELECT g, NULL FROM generate_series(1, 500) g;\n",
            ),
            (
                "0002_labels_required.sql",
                "-- pgskein: revises 0001_gadgets\n-- pgskein: depends-on gadgets_label_fill\n\
                 -- pgskein: up\nALTER TABLE gadgets ALTER COLUMN label SET NOT NULL;\n",
            ),
        ],
    );
}

fn gadget_backfill() -> Backfill {
    Backfill::sql("gadgets_label_fill", "0001_gadgets")
        .table("gadgets")
        .key("id")
        .statement("UPDATE gadgets SET label = 'gadget ' || id WHERE id >= $1 AND id < $2")
}

#[tokio::test]
async fn an_embedded_dir_keeps_the_services_backfills_for_check_and_new() {
    let db = fresh_db("cli_embedded_dir").await;
    let dir = scratch_dir("embedded_dir");
    gadget_files(&dir);
    let set = MigrationSet::builder().dir(&dir).backfill(gadget_backfill()).build().unwrap();
    let dir_arg = dir.to_str().unwrap();

    let args = migrate(&["--dir", dir_arg, "check"], db.url());
    assert_eq!(pgskein::cli::execute(&set, args).await, ExitCode::SUCCESS, "the backfill is known");
    let args = migrate(&["--dir", dir_arg, "new", "gadget_colour"], db.url());
    assert_eq!(pgskein::cli::execute(&set, args).await, ExitCode::SUCCESS);
    let written = std::fs::read_to_string(dir.join("0003_gadget_colour.sql")).unwrap();
    assert!(written.contains("-- pgskein: revises 0002_labels_required"), "{written}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn backfill_commands_pause_resume_and_run_a_services_backfill() {
    let db = fresh_db("cli_backfills").await;
    let client = db.connect().await.unwrap();
    let dir = scratch_dir("backfills");
    gadget_files(&dir);
    let set = MigrationSet::builder().dir(&dir).backfill(gadget_backfill()).build().unwrap();
    let state = async || set.backfills().unwrap().status(&client).await.unwrap()[0].clone();

    // The upgrade applies 0001 and stops before 0002, which waits for the backfill.
    let out = pgskein::cli::execute(&set, migrate(&["upgrade"], db.url())).await;
    assert_eq!(out, ExitCode::from(4));
    assert!(set.status(&client).await.unwrap().pending.iter().any(|p| p.as_str() == "0002_labels_required"));

    let out =
        pgskein::cli::execute(&set, migrate(&["backfill", "pause", "gadgets_label_fill"], db.url())).await;
    assert_eq!(out, ExitCode::SUCCESS);
    assert_eq!(state().await.state, BackfillState::Paused);
    let out = pgskein::cli::execute(&set, migrate(&["backfill", "run"], db.url())).await;
    assert_eq!(out, ExitCode::SUCCESS);
    assert_eq!(state().await.rows_done, 0, "a paused backfill does not run");

    let out =
        pgskein::cli::execute(&set, migrate(&["backfill", "resume", "gadgets_label_fill"], db.url())).await;
    assert_eq!(out, ExitCode::SUCCESS);
    let out = pgskein::cli::execute(&set, migrate(&["backfill", "run", "--json"], db.url())).await;
    assert_eq!(out, ExitCode::SUCCESS);
    let done = state().await;
    assert_eq!((done.state, done.rows_done), (BackfillState::Done, 500));

    let out = pgskein::cli::execute(&set, migrate(&["backfill", "status"], db.url())).await;
    assert_eq!(out, ExitCode::SUCCESS);
    let out = pgskein::cli::execute(&set, migrate(&["upgrade"], db.url())).await;
    assert_eq!(out, ExitCode::SUCCESS, "the revision that waited for the backfill applies");

    let out = pgskein::cli::execute(&set, migrate(&["backfill", "pause", "no_such_fill"], db.url())).await;
    assert_eq!(out, ExitCode::from(1), "an unknown backfill is an error");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn backfill_reset_asks_for_confirmation_and_takes_a_done_backfill_back_to_pending() {
    let db = fresh_db("cli_backfill_reset").await;
    let client = db.connect().await.unwrap();
    let dir = scratch_dir("backfill_reset");
    gadget_files(&dir);
    let set = MigrationSet::builder().dir(&dir).backfill(gadget_backfill()).build().unwrap();
    let state = async || set.backfills().unwrap().status(&client).await.unwrap()[0].clone();
    let reset = |extra: &[&str]| {
        let mut argv = vec!["backfill", "reset", "gadgets_label_fill"];
        argv.extend_from_slice(extra);
        migrate(&argv, db.url())
    };

    let out = pgskein::cli::execute(&set, reset(&["--yes"])).await;
    assert_eq!(out, ExitCode::SUCCESS, "nothing to reset is not an error");
    pgskein::cli::execute(&set, migrate(&["upgrade"], db.url())).await;
    let out = pgskein::cli::execute(&set, migrate(&["backfill", "run"], db.url())).await;
    assert_eq!(out, ExitCode::SUCCESS);
    assert_eq!(state().await.state, BackfillState::Done);

    let out = pgskein::cli::execute(&set, reset(&[])).await;
    assert_eq!(out, ExitCode::from(3), "destructive: refused without a terminal or --yes");
    assert_eq!(state().await.state, BackfillState::Done);
    let out = pgskein::cli::execute(&set, reset(&["--yes", "--json"])).await;
    assert_eq!(out, ExitCode::SUCCESS);
    let now = state().await;
    assert_eq!((now.state, now.rows_done), (BackfillState::Pending, 0));
    let resets: i64 = client
        .query_one("SELECT count(*) FROM pgskein.events WHERE kind = 'backfill_reset'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(resets, 1);

    let args = migrate(&["backfill", "reset", "no_such_fill", "--yes"], db.url());
    assert_eq!(pgskein::cli::execute(&set, args).await, ExitCode::from(1), "an unknown backfill");
    std::fs::remove_dir_all(&dir).unwrap();
}
