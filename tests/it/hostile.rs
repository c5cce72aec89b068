//! R6: revisions and operators that attack the ledger's promise, one test per
//! case of the trust catalogue in `docs/reliability.md`. Each test asserts
//! what the ledger, the catalog and the error say afterwards: a run either
//! does exactly what the ledger then says, or fails saying so.

use std::time::Duration;

use pgskein::status::{BlockedState, Resolution};
use pgskein::{Config, Error, MigrationSet, Migrator, Target};
use tokio_postgres::Client;

use crate::common::{chain, eventually, fresh_db};

/// A set from (file name, content) pairs, loaded from memory.
fn set(files: &[(&str, &str)]) -> MigrationSet {
    let mut b = MigrationSet::builder();
    for (name, text) in files {
        b = b.file(name, text.as_bytes());
    }
    b.build().unwrap_or_else(|e| panic!("the set loads: {}", chain(&e)))
}

/// A revision file: `revises` (if any), `transaction none` when asked, the up
/// body, and a down body when given.
fn rev(revises: Option<&str>, none: bool, up: &str, down: Option<&str>) -> String {
    let mut text = String::new();
    if let Some(parent) = revises {
        text.push_str(&format!("-- pgskein: revises {parent}\n"));
    }
    if none {
        text.push_str("-- pgskein: transaction none\n");
    }
    text.push_str(&format!("-- pgskein: up\n{up}\n"));
    if let Some(down) = down {
        text.push_str(&format!("-- pgskein: down\n{down}\n"));
    }
    text
}

/// The applied revisions, by id.
async fn applied(client: &Client) -> Vec<String> {
    match client.query("SELECT id FROM pgskein.applied WHERE state = 'applied' ORDER BY id", &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) if matches!(e.code().map(|c| c.code()), Some("42P01" | "3F000")) => Vec::new(),
        Err(e) => panic!("reading the ledger: {e}"),
    }
}

/// (state, statement) of one revision's row, if it has one.
async fn row(client: &Client, id: &str) -> Option<(String, Option<i32>)> {
    match client.query_opt("SELECT state, failed_statement FROM pgskein.applied WHERE id = $1", &[&id]).await
    {
        Ok(row) => row.map(|r| (r.get(0), r.get(1))),
        // Not bootstrapped yet.
        Err(e) if matches!(e.code().map(|c| c.code()), Some("42P01" | "3F000")) => None,
        Err(e) => panic!("reading the ledger: {e}"),
    }
}

async fn counter(client: &Client) -> i32 {
    client.query_one("SELECT n FROM counter", &[]).await.unwrap().get(0)
}

async fn lock_free(client: &Client) -> bool {
    eventually(Duration::from_secs(20), || async { !crate::common::lock_held(client).await }).await
}

/// The digest `meta` holds equals the digest of the rows, computed afresh.
async fn digest_follows_rows(client: &Client) -> bool {
    let row = client
        .query_one(
            "SELECT (SELECT value FROM pgskein.meta WHERE key = 'digest'), \
                    (SELECT count(*) FROM pgskein.applied WHERE state = 'applied')",
            &[],
        )
        .await
        .unwrap();
    let (digest, count): (String, i64) = (row.get(0), row.get(1));
    digest.starts_with(&format!("{count}:"))
}

/// A counter table, then revisions 0002..0011 that each add one to it; the
/// revision `special` (2..=11) runs `body` instead (and adds `add`).
fn counter_chain(special: usize, none: bool, body: &str) -> MigrationSet {
    let mut files = vec![(
        "0001_counter.sql".to_owned(),
        rev(None, false, "CREATE TABLE counter (n int NOT NULL); INSERT INTO counter VALUES (0);", None),
    )];
    for i in 2..=11 {
        let up = if i == special { body.to_owned() } else { "UPDATE counter SET n = n + 1;".to_owned() };
        let parent = files.last().unwrap().0.trim_end_matches(".sql").to_owned();
        files.push((format!("{i:04}_step.sql"), rev(Some(&parent), none && i == special, &up, None)));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    set(&refs)
}

// ----- 1. applied twice -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_releases_the_lock_is_rolled_back_and_a_second_starter_applies_nothing_twice() {
    let db = fresh_db("hostile_unlock").await;
    let set = counter_chain(
        6,
        false,
        "UPDATE counter SET n = n + 1;\nSELECT pg_advisory_unlock_all();\nSELECT pg_sleep(1);",
    );
    let (a, b) = (db.connect().await.unwrap(), db.connect().await.unwrap());
    // The second starter waits for the lock from the start; the first
    // releases it inside 0006 and sleeps, which lets the second in.
    let (first, second) = tokio::join!(set.run(&a), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        set.run(&b).await
    });
    for (who, result) in [("first", first), ("second", second)] {
        match result {
            Err(Error::LockReleased { id, rolled_back: true, .. }) => assert_eq!(id.as_str(), "0006_step"),
            other => panic!("{who} starter: expected LockReleased for 0006_step, got {other:?}"),
        }
    }
    let check = db.connect().await.unwrap();
    assert_eq!(applied(&check).await, ["0001_counter", "0002_step", "0003_step", "0004_step", "0005_step"]);
    assert_eq!(counter(&check).await, 4, "each applied revision ran exactly once, 0006 never committed");
    assert!(digest_follows_rows(&check).await);
    assert!(lock_free(&check).await);
    let err = set.run(&check).await.unwrap_err();
    assert!(err.to_string().contains("released pgskein's migration lock"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_none_revision_that_releases_the_lock_stays_running_and_blocks_the_next_starter() {
    let db = fresh_db("hostile_unlock_none").await;
    let set = counter_chain(6, true, "SELECT pg_advisory_unlock_all();\nUPDATE counter SET n = n + 100;");
    let (a, b) = (db.connect().await.unwrap(), db.connect().await.unwrap());
    let (first, second) = tokio::join!(set.run(&a), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        set.run(&b).await
    });
    match first {
        Err(Error::LockReleased { id, rolled_back: false, .. }) => assert_eq!(id.as_str(), "0006_step"),
        other => panic!("first starter: expected LockReleased, got {other:?}"),
    }
    match second {
        Err(Error::Blocked { id, state: BlockedState::Running, .. }) => assert_eq!(id.as_str(), "0006_step"),
        other => panic!("second starter: expected Blocked on 0006_step, got {other:?}"),
    }
    let check = db.connect().await.unwrap();
    assert_eq!(counter(&check).await, 4, "no statement after the unlock ran, none ran twice");
    // The row says where it stopped: the statement after the unlock never started.
    assert_eq!(row(&check, "0006_step").await, Some(("running".to_owned(), Some(1))));
}

#[tokio::test]
async fn discard_all_in_a_transaction_none_revision_is_caught_as_a_released_lock() {
    let db = fresh_db("hostile_discard").await;
    let client = db.connect().await.unwrap();
    let set = counter_chain(4, true, "DISCARD ALL;\nUPDATE counter SET n = n + 100;");
    let err = set.run(&client).await.unwrap_err();
    assert!(
        matches!(&err, Error::LockReleased { id, rolled_back: false, .. } if id.as_str() == "0004_step"),
        "{err:?}"
    );
    let text = chain(&err);
    assert!(!text.contains("prepared statement"), "{text}");
    assert_eq!(counter(&client).await, 2);
    assert_eq!(row(&client, "0004_step").await, Some(("running".to_owned(), Some(1))));
    // The connection still works and holds no lock.
    assert!(lock_free(&client).await);
    assert_eq!(set.status(&client).await.unwrap().blocked.len(), 1);
}

#[tokio::test]
async fn a_revision_that_records_itself_is_a_duplicate_never_an_overwrite() {
    let db = fresh_db("hostile_self_record").await;
    let client = db.connect().await.unwrap();
    let set = set(&[
        ("0001_a.sql", &rev(None, false, "CREATE TABLE a (id int);", None)),
        (
            "0002_b.sql",
            &rev(
                Some("0001_a"),
                false,
                "CREATE TABLE b (id int);\nINSERT INTO pgskein.applied (id, checksum, checksum_version, kind, state) \
                 VALUES ('0002_b', 'forged', 1, 'sql', 'applied');",
                None,
            ),
        ),
    ]);
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::LedgerChanged { id, .. } if id.as_str() == "0002_b"), "{err:?}");
    assert_eq!(applied(&client).await, ["0001_a"]);
    let b: Option<String> = client.query_one("SELECT to_regclass('b')::text", &[]).await.unwrap().get(0);
    assert_eq!(b, None, "0002_b was rolled back with its forged row");
}

// ----- 2. recorded, never ran -----

#[tokio::test]
async fn a_nul_byte_is_a_load_error_naming_the_file_and_line_and_nothing_is_touched() {
    for (section, text) in [
        ("up", "-- pgskein: up\nCREATE TABLE a (x text DEFAULT 'a\0b');\n"),
        ("down", "-- pgskein: up\nCREATE TABLE a (x text);\n-- pgskein: down\nDROP TABLE a; -- \0\n"),
    ] {
        let err = MigrationSet::builder().file("0001_a.sql", text.as_bytes()).build().unwrap_err();
        let line = if section == "up" { 2 } else { 4 };
        assert!(
            matches!(&err, Error::Parse { path, line: Some(l), kind: pgskein::error::ParseErrorKind::NulByte } if path == "0001_a.sql" && *l == line),
            "{section}: {err:?}"
        );
        assert!(err.to_string().starts_with(&format!("0001_a.sql:{line}: ")), "{err}");
    }
    // The CLI's `check` refuses the file too.
    let dir = crate::cli::scratch_dir("hostile_nul");
    std::fs::write(dir.join("0001_a.sql"), "-- pgskein: up\nSELECT '\0';\n").unwrap();
    let out = crate::cli::run_url(None, &dir, &["check"]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.all().contains("0001_a.sql:2"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ----- 3. the fast path cannot be fooled -----

#[tokio::test]
async fn hand_edits_of_the_ledger_invalidate_the_fast_path() {
    let db = fresh_db("hostile_edits").await;
    let client = db.connect().await.unwrap();
    let set = set(&[
        ("0001_a.sql", &rev(None, false, "CREATE TABLE a (id int);", Some("DROP TABLE a;"))),
        ("0002_b.sql", &rev(Some("0001_a"), false, "CREATE TABLE b (id int);", Some("DROP TABLE b;"))),
        ("0003_c.sql", &rev(Some("0002_b"), false, "CREATE TABLE c (id int);", Some("DROP TABLE c;"))),
    ]);
    set.run(&client).await.unwrap();
    assert!(set.run(&client).await.unwrap().fast_path);
    let saved: String = client
        .query_one("SELECT checksum FROM pgskein.applied WHERE id = '0002_b'", &[])
        .await
        .unwrap()
        .get(0);

    // A row deleted by hand: the run sees 0002_b pending (and fails on its table), even when asked for it alone.
    client.batch_execute("DELETE FROM pgskein.applied WHERE id = '0002_b'").await.unwrap();
    assert!(digest_follows_rows(&client).await);
    for result in [set.run(&client).await, set.upgrade(&client, &Target::Revision("0002_b".into())).await] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::RevisionFailed { id, .. } if id.as_str() == "0002_b")
                && err.db_code() == Some("42P07"),
            "{err:?}"
        );
    }
    assert_eq!(set.status(&client).await.unwrap().pending.len(), 1);

    // Put back as it was: the fast path holds again.
    client
        .execute(
            "INSERT INTO pgskein.applied (id, revises, checksum, checksum_version, kind, state) \
             VALUES ('0002_b', '{0001_a}', $1, 1, 'sql', 'applied')",
            &[&saved],
        )
        .await
        .unwrap();
    assert!(set.run(&client).await.unwrap().fast_path);

    // A row inserted by hand.
    client
        .batch_execute(
            "INSERT INTO pgskein.applied (id, checksum, checksum_version, kind, state) \
             VALUES ('9999_forged', 'x', 1, 'sql', 'applied')",
        )
        .await
        .unwrap();
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::Diverged { unknown } if unknown == &["9999_forged"]), "{err:?}");
    client.batch_execute("DELETE FROM pgskein.applied WHERE id = '9999_forged'").await.unwrap();
    assert!(set.run(&client).await.unwrap().fast_path);

    // A checksum edited by hand.
    client.batch_execute("UPDATE pgskein.applied SET checksum = 'edited' WHERE id = '0001_a'").await.unwrap();
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::ChecksumMismatch { .. }), "{err:?}");
    set.repair(&client).await.unwrap();
    assert!(set.run(&client).await.unwrap().fast_path);

    // A disabled trigger: the fast path no longer trusts the digest, and the
    // next run that takes the lock puts the trigger back.
    client.batch_execute("ALTER TABLE pgskein.applied DISABLE TRIGGER pgskein_digest").await.unwrap();
    client.batch_execute("DELETE FROM pgskein.applied WHERE id = '0003_c'").await.unwrap();
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::RevisionFailed { id, .. } if id.as_str() == "0003_c"), "{err:?}");
    let enabled: String = client
        .query_one(
            "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'pgskein.applied'::regclass AND tgname = 'pgskein_digest'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(enabled, "A");
    assert!(digest_follows_rows(&client).await);

    // TRUNCATE.
    client.batch_execute("TRUNCATE pgskein.applied").await.unwrap();
    assert!(!set.run(&client).await.is_ok_and(|r| r.fast_path));
    assert!(digest_follows_rows(&client).await);
}

// ----- 4. session state does not leak -----

/// A role the revisions switch to, that may not create anything.
async fn low_role(client: &Client, db: &str) -> String {
    let role = format!("low_{db}");
    client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" NOLOGIN; GRANT \"{role}\" TO CURRENT_USER;"
        ))
        .await
        .unwrap();
    role
}

fn leaky(role: &str) -> MigrationSet {
    let leak = format!(
        "SET search_path = elsewhere;\nSET statement_timeout = '50ms';\nSET ROLE \"{role}\";\n\
         SET default_transaction_read_only = on;\nPREPARE leaked AS SELECT 1;"
    );
    set(&[
        ("0001_schemas.sql", &rev(None, false, "CREATE SCHEMA elsewhere;", None)),
        ("0002_leak.sql", &rev(Some("0001_schemas"), false, &leak, None)),
        (
            "0003_uses.sql",
            &rev(
                Some("0002_leak"),
                false,
                "CREATE TABLE t3 (id int);\nSELECT pg_sleep(0.1);\nPREPARE leaked AS SELECT 2;",
                None,
            ),
        ),
        ("0004_leak_none.sql", &rev(Some("0003_uses"), true, &leak, None)),
        ("0005_uses.sql", &rev(Some("0004_leak_none"), false, "CREATE TABLE t5 (id int);", None)),
    ])
}

#[tokio::test]
async fn session_changes_of_a_revision_leak_neither_into_the_next_revision_nor_into_the_callers_connection() {
    let db = fresh_db("hostile_leaks").await;
    let client = db.connect().await.unwrap();
    let role = low_role(&client, db.name()).await;
    let set = leaky(&role);
    let before: (String, String) = {
        let r =
            client.query_one("SELECT current_setting('search_path'), current_user::text", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    set.run(&client).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    let owner_of = |t: &'static str| {
        let client = &client;
        async move {
            let r = client
                .query_one(
                    "SELECT n.nspname::text, pg_get_userbyid(c.relowner)::text FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1",
                    &[&t],
                )
                .await
                .unwrap();
            (r.get::<_, String>(0), r.get::<_, String>(1))
        }
    };
    assert_eq!(owner_of("t3").await, ("public".to_owned(), before.1.clone()));
    assert_eq!(owner_of("t5").await, ("public".to_owned(), before.1.clone()));
    // The caller's connection is as it was.
    let after = client
        .query_one(
            "SELECT current_setting('search_path'), current_user::text, current_setting('statement_timeout'), \
                    current_setting('default_transaction_read_only'), \
                    (SELECT count(*) FROM pg_prepared_statements WHERE from_sql)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((after.get::<_, String>(0), after.get::<_, String>(1)), before);
    assert_eq!(after.get::<_, String>(2), "0");
    assert_eq!(after.get::<_, String>(3), "off");
    assert_eq!(after.get::<_, i64>(4), 0);

    // One revision per run gives the same schema as one run.
    let db2 = fresh_db("hostile_leaks_steps").await;
    let client2 = db2.connect().await.unwrap();
    for n in 1..=set.len() as i64 {
        set.upgrade(&client2, &Target::Relative(1))
            .await
            .unwrap_or_else(|e| panic!("step {n}: {}", chain(&e)));
    }
    assert_eq!(crate::common::catalog(&client).await, crate::common::catalog(&client2).await);
    client.batch_execute(&format!("DROP ROLE \"{role}\"")).await.unwrap();
}

// ----- 5. failures inside a transaction of the body's own -----

#[tokio::test]
async fn a_body_failing_inside_its_own_transaction_is_recorded_failed_and_retried_from_its_begin() {
    let db = fresh_db("hostile_own_tx").await;
    let client = db.connect().await.unwrap();
    let body = "CREATE TABLE t (x int);\nBEGIN;\nINSERT INTO t VALUES (1);\nINSERT INTO missing VALUES (1);\nCOMMIT;\nINSERT INTO t VALUES (2);";
    let set = set(&[("0001_a.sql", &rev(None, true, body, None))]);
    let err = set.run(&client).await.unwrap_err();
    assert!(
        matches!(&err, Error::RevisionFailed { id, statement: Some(4), line: Some(6), .. } if id.as_str() == "0001_a"),
        "{err:?}"
    );
    assert_eq!(row(&client, "0001_a").await, Some(("failed".to_owned(), Some(4))));
    let error: String = client.query_one("SELECT last_error FROM pgskein.applied", &[]).await.unwrap().get(0);
    assert!(error.contains("missing"), "{error}");
    let rows: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "the body's transaction was rolled back");

    client.batch_execute("CREATE TABLE missing (x int)").await.unwrap();
    set.resolve(&client, "0001_a", Resolution::Retry).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    let values: Vec<i32> =
        client.query("SELECT x FROM t ORDER BY x", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(values, [1, 2], "resumed at BEGIN: statement 1 not again, the rolled-back insert once");
    assert_eq!(applied(&client).await, ["0001_a"]);
}

// ----- 6. CREATE INDEX CONCURRENTLY after a lock timeout -----

/// Holds a transaction on `t` open (so a concurrent index build waits for
/// it) until the migrator, named `app`, has failed an attempt and waits to
/// retry; then ends it.
async fn hold_until_a_failed_attempt(db: &pgskein::testing::TestDatabase, app: &str) {
    let blocker = db.connect().await.unwrap();
    blocker.batch_execute("BEGIN; INSERT INTO t VALUES (0, 'blocker');").await.unwrap();
    let watcher = db.connect().await.unwrap();
    // First the build waits for the blocker, then its lock timeout ends that attempt.
    // The migrator's session, found by its name, in the state `condition` says.
    let seen = |condition: &'static str| {
        let sql =
            format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND {condition}");
        let watcher = &watcher;
        eventually(Duration::from_secs(30), move || {
            let sql = sql.clone();
            async move { watcher.query_one(&sql, &[&app]).await.unwrap().get::<_, i64>(0) == 1 }
        })
    };
    assert!(seen("wait_event_type = 'Lock'").await, "the index build never waited for the blocker");
    assert!(seen("state = 'idle'").await, "the attempt never gave up");
    blocker.batch_execute("COMMIT").await.unwrap();
}

fn cic_config(app: &str) -> Config {
    Config::default().application_name(app).lock_retries(5, Duration::from_millis(1500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_index_builds_that_hit_their_lock_timeout_are_retried_from_a_clean_catalog() {
    let db = fresh_db("hostile_cic").await;
    let client = db.connect().await.unwrap();
    let table = "CREATE TABLE t (id int, v text);\nINSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;";
    let migrations = set(&[
        ("0001_t.sql", &rev(None, false, table, None)),
        (
            "0002_named.sql",
            &format!(
                "-- pgskein: lock-timeout 300ms\n{}",
                rev(
                    Some("0001_t"),
                    true,
                    "CREATE /* an index */ INDEX\n  CONCURRENTLY \"my index\" ON t (v);",
                    None
                )
            ),
        ),
        (
            "0003_unnamed.sql",
            &format!(
                "-- pgskein: lock-timeout 300ms\n{}",
                rev(Some("0002_named"), true, "CREATE INDEX CONCURRENTLY ON t (id);", None)
            ),
        ),
    ]);
    migrations.upgrade(&client, &Target::Revision("0001_t".into())).await.unwrap();
    for (target, app) in [("0002_named", "hostile-cic-named"), ("0003_unnamed", "hostile-cic-unnamed")] {
        let m = migrations.clone().with_config(cic_config(app));
        let migrating = db.connect().await.unwrap();
        let to = Target::Revision(target.into());
        let (result, ()) = tokio::join!(m.upgrade(&migrating, &to), hold_until_a_failed_attempt(&db, app));
        result.unwrap_or_else(|e| panic!("{target}: {}", chain(&e)));
    }
    let indexes: Vec<(String, bool)> = client
        .query(
            "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = 't'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(indexes, [("my index".to_owned(), true), ("t_id_idx".to_owned(), true)]);
    assert_eq!(applied(&client).await, ["0001_t", "0002_named", "0003_unnamed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_retries_the_error_is_the_last_real_one_not_a_lock_timeout() {
    let db = fresh_db("hostile_cic_last").await;
    let client = db.connect().await.unwrap();
    let table = "CREATE TABLE t (id int, v text);\nINSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g;";
    let migrations = set(&[
        ("0001_t.sql", &rev(None, false, table, None)),
        (
            "0002_ix.sql",
            &format!(
                "-- pgskein: lock-timeout 300ms\n{}",
                rev(Some("0001_t"), true, "CREATE INDEX CONCURRENTLY ix ON t (v);", None)
            ),
        ),
    ]);
    migrations.upgrade(&client, &Target::Revision("0001_t".into())).await.unwrap();
    let app = "hostile-cic-last";
    let m = migrations.clone().with_config(cic_config(app));
    let migrating = db.connect().await.unwrap();
    let (result, ()) = tokio::join!(m.run(&migrating), async {
        hold_until_a_failed_attempt(&db, app).await;
        // Before the retry, the column goes: the next attempt fails for another reason.
        client.batch_execute("ALTER TABLE t DROP COLUMN v").await.unwrap();
    });
    let err = result.unwrap_err();
    assert!(matches!(&err, Error::RevisionFailed { id, .. } if id.as_str() == "0002_ix"), "{err:?}");
    assert_eq!(err.db_code(), Some("42703"), "{}", chain(&err));
    assert!(!chain(&err).contains("lock_timeout"), "{}", chain(&err));
    assert_eq!(row(&client, "0002_ix").await, Some(("failed".to_owned(), Some(1))));
}

#[tokio::test]
async fn a_revision_is_never_recorded_applied_while_an_index_it_built_is_invalid() {
    let db = fresh_db("hostile_invalid").await;
    let client = db.connect().await.unwrap();
    let superuser: bool = client
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap()
        .get(0);
    if !superuser {
        println!(
            "skipped: marking an index invalid by hand needs a superuser, and DATABASE_URL's user is not one"
        );
        return;
    }
    let migrations = set(&[
        ("0001_t.sql", &rev(None, false, "CREATE TABLE t (id int, v text);", None)),
        (
            "0002_ix.sql",
            &rev(
                Some("0001_t"),
                true,
                "CREATE INDEX CONCURRENTLY ix ON t (v);\n\
                 UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix'::regclass;",
                None,
            ),
        ),
    ]);
    let err = migrations.run(&client).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidIndexLeft { id, indexes, .. } if id.as_str() == "0002_ix" && indexes == &["public.ix"]),
        "{err:?}"
    );
    assert_eq!(row(&client, "0002_ix").await.map(|r| r.0), Some("failed".to_owned()));
    assert_eq!(applied(&client).await, ["0001_t"]);
}

// ----- 7. a revision that drops the bookkeeping schema -----

#[tokio::test]
async fn a_revision_that_drops_the_bookkeeping_schema_is_named_in_the_error() {
    let db = fresh_db("hostile_drop_ledger").await;
    let client = db.connect().await.unwrap();
    let migrations = set(&[
        ("0001_t.sql", &rev(None, false, "CREATE TABLE t (id int);", Some("DROP TABLE t;"))),
        (
            "0002_tx.sql",
            &rev(
                Some("0001_t"),
                false,
                "CREATE TABLE u (id int);",
                Some("DROP TABLE u;\nDROP SCHEMA pgskein CASCADE;"),
            ),
        ),
        (
            "0003_none.sql",
            &rev(
                Some("0002_tx"),
                true,
                "CREATE INDEX CONCURRENTLY ix ON t (id);",
                Some("DROP INDEX CONCURRENTLY ix;\nDROP SCHEMA pgskein CASCADE;"),
            ),
        ),
    ]);
    migrations.run(&client).await.unwrap();

    // `transaction none`: its statements ran; the error names it and says what to do.
    let err = migrations.downgrade(&client, &Target::Revision("0002_tx".into())).await.unwrap_err();
    assert!(
        matches!(&err, Error::LedgerDropped { id, rolled_back: false, schema, .. } if id.as_str() == "0003_none" && schema == "pgskein"),
        "{err:?}"
    );
    assert!(err.to_string().contains("0003_none") && err.to_string().contains("\"pgskein\""), "{err}");

    // Transactional: rolled back, the ledger intact.
    let db = fresh_db("hostile_drop_ledger_tx").await;
    let client = db.connect().await.unwrap();
    migrations.upgrade(&client, &Target::Revision("0002_tx".into())).await.unwrap();
    let err = migrations.downgrade(&client, &Target::Base).await.unwrap_err();
    assert!(
        matches!(&err, Error::LedgerDropped { id, rolled_back: true, .. } if id.as_str() == "0002_tx"),
        "{err:?}"
    );
    assert_eq!(applied(&client).await, ["0001_t", "0002_tx"]);
    let u: Option<String> = client.query_one("SELECT to_regclass('u')::text", &[]).await.unwrap().get(0);
    assert_eq!(u.as_deref(), Some("u"));
}

// ----- 8. files skipped in silence -----

#[test]
fn everything_named_like_a_revision_is_loaded_or_reported() {
    use std::os::unix::ffi::OsStrExt;
    let good = "-- pgskein: up\nCREATE TABLE a (id int);\n";
    type Make = Box<dyn Fn(&std::path::Path) -> std::path::PathBuf>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "UTF-8",
            Box::new(|d| {
                let p = d.join(std::ffi::OsStr::from_bytes(b"0002_\xff.sql"));
                std::fs::write(&p, "-- pgskein: up\nSELECT 1;\n").unwrap();
                p
            }),
        ),
        (
            "cannot read",
            Box::new(|d| {
                let p = d.join("0002_dangling.sql");
                std::os::unix::fs::symlink(d.join("nowhere.sql.txt"), &p).unwrap();
                p
            }),
        ),
        (
            "cannot read",
            Box::new(|d| {
                let (a, b) = (d.join("0002_loop.sql"), d.join("0003_loop.sql"));
                std::os::unix::fs::symlink(&b, &a).unwrap();
                std::os::unix::fs::symlink(&a, &b).unwrap();
                a
            }),
        ),
        (
            "a directory",
            Box::new(|d| {
                let p = d.join("0002_dir.sql");
                std::fs::create_dir(&p).unwrap();
                p
            }),
        ),
        (
            "lower-case `.sql`",
            Box::new(|d| {
                let p = d.join("0002_upper.SQL");
                std::fs::write(&p, "-- pgskein: up\nSELECT 1;\n").unwrap();
                p
            }),
        ),
    ];
    for (n, (words, make)) in cases.into_iter().enumerate() {
        let dir = std::env::temp_dir().join(format!("pgskein-hostile-files-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0001_a.sql"), good).unwrap();
        // Hidden entries are not revisions.
        std::fs::write(dir.join(".0009_hidden.sql"), "not a revision").unwrap();
        let bad = make(&dir);
        let err = MigrationSet::from_dir(&dir).unwrap_err();
        let text = chain(&err);
        assert!(text.contains(&*bad.file_name().unwrap().to_string_lossy()), "{words}: {text}");
        assert!(text.contains(words), "{words}: {text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// ----- 9. a schema named like a placeholder -----

#[tokio::test]
async fn a_schema_named_like_a_placeholder_holds_the_tables_under_exactly_that_name() {
    let db = fresh_db("hostile_schema_name").await;
    let client = db.connect().await.unwrap();
    for schema in ["{elapsed_ms}", "{schema}", "a\"b{functions}"] {
        let m = crate::common::example().with_config(Config::default().schema(schema));
        let report = m.run(&client).await.unwrap_or_else(|e| panic!("{schema}: {}", chain(&e)));
        assert_eq!(report.steps.len(), crate::common::example().len(), "{schema}");
        assert!(m.run(&client).await.unwrap().fast_path, "{schema}");
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname IN ('applied', 'events', 'meta', 'backfills')",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 4, "{schema}");
        // The example's tables exist once: the next schemas stamp over them.
        m.downgrade(&client, &Target::Base).await.unwrap();
    }
}

// ----- 10. backfills -----

const FILL: &str = "UPDATE items SET h2 = md5(h) WHERE id >= $1 AND id < $2";

fn backfilled() -> MigrationSet {
    MigrationSet::builder()
        .file(
            "0001_items.sql",
            b"-- pgskein: up\nCREATE TABLE items (id bigint PRIMARY KEY, h text NOT NULL, h2 text);\n\
              INSERT INTO items (id, h) SELECT g, g::text FROM generate_series(1, 500) g;\n\
              -- pgskein: down\nDROP TABLE items;\n",
        )
        .file(
            "0002_not_null.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: depends-on h2_fill\n-- pgskein: up\n\
              ALTER TABLE items ALTER COLUMN h2 SET NOT NULL;\n\
              -- pgskein: down\nALTER TABLE items ALTER COLUMN h2 DROP NOT NULL;\n",
        )
        .backfill(
            pgskein::backfill::Backfill::sql("h2_fill", "0001_items")
                .table("items")
                .key("id")
                .statement(FILL),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_backfill_starts_over_when_its_revision_is_reverted() {
    let db = fresh_db("hostile_bf_reset").await;
    let client = db.connect().await.unwrap();
    let m = backfilled().with_config(Config::default().inline_backfills(true));
    let first = m.run(&client).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(first.steps.len(), 2);
    m.downgrade(&client, &Target::Base).await.unwrap();
    let resets: i64 = client
        .query_one("SELECT count(*) FROM pgskein.events WHERE kind = 'backfill_reset'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(resets, 1);
    let state = m.backfills().unwrap().status(&client).await.unwrap();
    assert_eq!(state[0].state, pgskein::backfill::BackfillState::Pending);
    // Upgraded again, the backfill runs again, so the NOT NULL revision applies.
    let again = m.run(&client).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(again.steps.len(), 2);
    let nulls: i64 =
        client.query_one("SELECT count(*) FROM items WHERE h2 IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(nulls, 0);
}

/// A backfill whose revision is reverted while a process runs it stops
/// there: the runner does not start it over on a revision that is gone.
#[tokio::test]
async fn a_running_backfill_stops_when_its_revision_is_reverted_under_it() {
    let db = fresh_db("hostile_bf_revert_live").await;
    let (runner_client, admin) = (db.connect().await.unwrap(), db.connect().await.unwrap());
    let set = MigrationSet::builder()
        .file(
            "0001_items.sql",
            b"-- pgskein: up\nCREATE TABLE items (id bigint PRIMARY KEY, h text NOT NULL, h2 text);\n\
              INSERT INTO items (id, h) SELECT g, g::text FROM generate_series(1, 500) g;\n",
        )
        .file(
            "0002_mark.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: up\nSELECT 1;\n-- pgskein: down\nSELECT 1;\n",
        )
        .backfill(
            pgskein::backfill::Backfill::sql("h2_fill", "0002_mark")
                .table("items")
                .key("id")
                .statement(FILL)
                .initial_batch_size(10)
                .batch_size_limits(10, 10)
                .pause_between_batches(Duration::from_millis(40)),
        )
        .build()
        .unwrap();
    set.run(&admin).await.unwrap();
    let backfills = set.backfills().unwrap();
    let revert = async {
        let started = eventually(Duration::from_secs(30), || async {
            let row = admin
                .query_opt("SELECT batches FROM pgskein.backfills WHERE name = 'h2_fill'", &[])
                .await
                .unwrap();
            row.is_some_and(|r| r.get::<_, i64>(0) >= 2)
        })
        .await;
        assert!(started, "the backfill never got going");
        set.downgrade(&admin, &Target::Revision("0001_items".into())).await.unwrap();
    };
    let (report, ()) = tokio::join!(backfills.run(&runner_client), revert);
    let report = report.unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(report.get("h2_fill").unwrap().outcome, pgskein::backfill::BackfillOutcome::NotEligible);
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM pgskein.backfills WHERE name = 'h2_fill'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the reverted revision's backfill was started over");
    let filled: i64 =
        admin.query_one("SELECT count(*) FROM items WHERE h2 IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(filled < 500, "the backfill ran to its end: {filled} rows filled");
}

/// Counts what a run's hooks saw.
#[derive(Default)]
struct Seen {
    before_run: std::sync::atomic::AtomicUsize,
    after_run: std::sync::atomic::AtomicUsize,
    steps: std::sync::Mutex<Vec<String>>,
}

#[derive(Clone, Default)]
struct Counting(std::sync::Arc<Seen>);

#[async_trait::async_trait]
impl pgskein::Hooks for Counting {
    async fn before_run(&self, _plan: &pgskein::Plan) -> Result<(), pgskein::error::BoxError> {
        self.0.before_run.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    async fn after_step(&self, step: &pgskein::Step, outcome: Result<&pgskein::StepReport, &Error>) {
        if outcome.is_ok() {
            self.0.steps.lock().unwrap().push(step.id.to_string());
        }
    }
    async fn after_run(&self, _outcome: Result<&pgskein::Report, &Error>) {
        self.0.after_run.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starters_with_inline_backfills_report_exactly_what_their_hooks_saw() {
    use std::sync::atomic::Ordering::SeqCst;
    let db = fresh_db("hostile_bf_report").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = db.connect().await.unwrap();
        let hooks = Counting::default();
        let m = backfilled().with_config(Config::default().inline_backfills(true).hooks(hooks.clone()));
        tasks.push(tokio::spawn(async move { (m.run(&client).await, hooks) }));
    }
    let mut applied_by = Vec::new();
    for task in tasks {
        let (result, hooks) = task.await.unwrap();
        let report = result.unwrap_or_else(|e| panic!("{}", chain(&e)));
        let seen = hooks.0.steps.lock().unwrap().clone();
        let reported: Vec<String> = report.steps.iter().map(|s| s.id.to_string()).collect();
        assert_eq!(reported, seen, "the report lists the steps the hooks saw");
        if report.fast_path {
            assert!(seen.is_empty() && hooks.0.before_run.load(SeqCst) == 0, "a fast path ran nothing");
        }
        assert!(hooks.0.before_run.load(SeqCst) <= 1, "before_run fires at most once per run()");
        assert_eq!(hooks.0.before_run.load(SeqCst), hooks.0.after_run.load(SeqCst));
        applied_by.extend(reported);
    }
    applied_by.sort();
    assert_eq!(applied_by, ["0001_items", "0002_not_null"], "every revision applied once, by one starter");
}

// ----- 11. SIGINT and SIGTERM of the CLI -----

#[tokio::test]
async fn sigint_or_sigterm_cancels_the_running_statement_and_records_where_it_stopped() {
    for signal in ["INT", "TERM"] {
        let db = fresh_db(&format!("hostile_sig{}", signal.to_lowercase())).await;
        let client = db.connect().await.unwrap();
        let dir = crate::cli::scratch_dir(&format!("hostile_sig{signal}"));
        std::fs::write(dir.join("0001_go.sql"), rev(None, false, "CREATE TABLE go (x int);", None)).unwrap();
        std::fs::write(
            dir.join("0002_slow.sql"),
            rev(
                Some("0001_go"),
                true,
                "CREATE TABLE t2 (x int);\nSELECT pg_sleep(60) WHERE NOT EXISTS (SELECT FROM go);\nINSERT INTO t2 VALUES (1);",
                None,
            ),
        )
        .unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgskein"));
        cmd.arg("--dir").arg(&dir).args(["upgrade", "--yes"]);
        cmd.env("DATABASE_URL", db.url()).env_remove("RUST_LOG").env("NO_COLOR", "1");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        let sleeping = eventually(Duration::from_secs(30), || async {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        })
        .await;
        assert!(sleeping, "the slow statement never ran");
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(killed.success());
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("the CLI exits soon after the signal")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "SIG{signal}: {stderr}");
        assert!(stderr.contains(&format!("SIG{signal}")), "{stderr}");
        assert_eq!(row(&client, "0002_slow").await, Some(("failed".to_owned(), Some(2))), "SIG{signal}");
        let error: String = client
            .query_one("SELECT last_error FROM pgskein.applied WHERE id = '0002_slow'", &[])
            .await
            .unwrap()
            .get(0);
        assert!(error.contains("canceling statement"), "{error}");
        // The retry starts at the cancelled statement: the table is not created twice.
        client.batch_execute("INSERT INTO go VALUES (1)").await.unwrap();
        let retry = crate::cli::run(&db, &dir, &["resolve", "0002_slow", "--retry", "--yes"]).await;
        assert_eq!(retry.code, 0, "{retry:?}");
        let rows: i64 = client.query_one("SELECT count(*) FROM t2", &[]).await.unwrap().get(0);
        assert_eq!(rows, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

// ----- 12. a revision that drops privileges -----

#[tokio::test]
async fn a_revision_that_drops_privileges_is_recorded_by_the_role_the_run_started_with() {
    let db = fresh_db("hostile_privileges").await;
    let client = db.connect().await.unwrap();
    let role = low_role(&client, db.name()).await;
    let drop = format!("SET ROLE \"{role}\";\nSET default_transaction_read_only = on;");
    let migrations = set(&[
        ("0001_a.sql", &rev(None, false, "CREATE TABLE a (id int);", None)),
        ("0002_drop.sql", &rev(Some("0001_a"), false, &drop, None)),
        ("0003_b.sql", &rev(Some("0002_drop"), false, "CREATE TABLE b (id int);", None)),
        ("0004_drop_none.sql", &rev(Some("0003_b"), true, &drop, None)),
        ("0005_c.sql", &rev(Some("0004_drop_none"), false, "CREATE TABLE c (id int);", None)),
        ("0006_read_only.sql", &rev(Some("0005_c"), false, "SET TRANSACTION READ ONLY;", None)),
    ]);
    let err = migrations.run(&client).await.unwrap_err();
    assert_eq!(applied(&client).await, ["0001_a", "0002_drop", "0003_b", "0004_drop_none", "0005_c"]);
    assert!(
        matches!(&err, Error::NotRecorded { id, rolled_back: true, .. } if id.as_str() == "0006_read_only"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ran, but recording it in the ledger failed"), "{err}");
    client.batch_execute(&format!("DROP ROLE \"{role}\"")).await.unwrap();
}

// ----- 13. running now is not blocked -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_a_revision_running_now_from_a_blocked_one() {
    let db = fresh_db("hostile_running_now").await;
    let client = db.connect().await.unwrap();
    let dir = crate::cli::scratch_dir("hostile_running_now");
    std::fs::write(dir.join("0001_a.sql"), rev(None, false, "CREATE TABLE a (id int);", None)).unwrap();
    std::fs::write(
        dir.join("0002_wait.sql"),
        rev(Some("0001_a"), true, "SELECT pg_advisory_xact_lock(4242);", None),
    )
    .unwrap();
    let migrations = MigrationSet::from_dir(&dir).unwrap();
    // The test holds lock 4242, so the migration's statement waits on it.
    client.batch_execute("SELECT pg_advisory_lock(4242)").await.unwrap();
    let migrating = db.connect().await.unwrap();
    let run = tokio::spawn({
        let migrations = migrations.clone();
        async move { migrations.run(&migrating).await }
    });
    let running = eventually(Duration::from_secs(30), || async {
        row(&client, "0002_wait").await.is_some_and(|(s, _)| s == "running")
    })
    .await;
    assert!(running);
    let status = migrations.status(&client).await.unwrap();
    assert_eq!(status.blocked.len(), 1);
    assert!(status.blocked[0].is_running_now(), "{:?}", status.blocked[0]);
    let out = crate::cli::run(&db, &dir, &["status"]).await;
    assert_eq!(out.code, 0, "a revision running now needs no attention: {out:?}");
    assert!(out.stdout.contains("0002_wait is running now"), "{out:?}");
    client.batch_execute("SELECT pg_advisory_unlock(4242)").await.unwrap();
    run.await.unwrap().unwrap_or_else(|e| panic!("{}", chain(&e)));

    // A dead run's `running` row is blocked, and says so.
    client
        .batch_execute(
            "UPDATE pgskein.applied SET state = 'running', direction = 'up' WHERE id = '0002_wait'",
        )
        .await
        .unwrap();
    let status = migrations.status(&client).await.unwrap();
    assert!(!status.blocked[0].is_running_now());
    let out = crate::cli::run(&db, &dir, &["status"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ----- 14. a first deploy logs no server error -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_deploy_with_64_starters_logs_no_server_error() {
    let server = match pgskein::testing::TestServer::start_private() {
        Ok(server) => server,
        Err(e) => {
            assert!(std::env::var("DATABASE_URL").is_ok(), "a private server must start: {e}");
            println!("skipped: DATABASE_URL is set; its server's log cannot be read");
            return;
        }
    };
    let db = server.create_database("first_deploy").await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = db.connect().await.unwrap();
        tasks.push(tokio::spawn(async move { crate::common::example().run(&client).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap_or_else(|e| panic!("{}", chain(&e)));
    }
    // And a later deploy with one more revision, 64 starters again.
    let more = MigrationSet::builder()
        .dir(crate::cli::example_dir())
        .file(
            "0011_more.sql",
            b"-- pgskein: revises 0010_audit_log\n-- pgskein: up\nCREATE TABLE more (id int);\n",
        )
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = db.connect().await.unwrap();
        let more = more.clone();
        tasks.push(tokio::spawn(async move { more.run(&client).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap_or_else(|e| panic!("{}", chain(&e)));
    }
    let log = server.server_log().expect("a private server's log");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR:") || l.contains("FATAL:")).collect();
    assert!(errors.is_empty(), "the server logged errors:\n{}", errors.join("\n"));
}

// ----- the bookkeeping format -----

#[tokio::test]
async fn a_newer_format_that_this_version_may_read_is_used_as_it_is() {
    let db = fresh_db("hostile_readable_by").await;
    let client = db.connect().await.unwrap();
    let example = crate::common::example();
    example.upgrade(&client, &Target::Revision("0005".into())).await.unwrap();
    client.batch_execute("UPDATE pgskein.meta SET value = '9' WHERE key = 'format'").await.unwrap();
    let report = example.run(&client).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(!report.steps.is_empty());
    assert!(example.run(&client).await.unwrap().fast_path);
    let format: String =
        client.query_one("SELECT value FROM pgskein.meta WHERE key = 'format'", &[]).await.unwrap().get(0);
    assert_eq!(format, "9", "an older version leaves a newer format as it is");
    client.batch_execute("UPDATE pgskein.meta SET value = '9' WHERE key = 'readable_by'").await.unwrap();
    let err = example.status(&client).await.unwrap_err();
    assert!(matches!(err, Error::FormatTooNew { found: 9, .. }), "{err:?}");
}

// ----- the property: whatever the revisions do, the ledger tells the truth -----

/// Something a revision does to its session or to the lock.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    SearchPath,
    Role,
    StatementTimeout,
    ReadOnlyDefault,
    Prepare,
    UnlockAll,
    /// `DISCARD ALL`; in a transactional revision (where it cannot run), `pg_advisory_unlock_all()`.
    DiscardAll,
}

#[derive(Debug, Clone)]
struct Spec {
    none: bool,
    hostile: Vec<Hostile>,
}

/// How a run is cut short.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Not,
    /// The caller drops the run after this many pending polls.
    Dropped(usize),
    /// Another session terminates the run's backend after this many milliseconds.
    Terminated(u64),
}

fn spec() -> impl proptest::strategy::Strategy<Value = Spec> {
    use proptest::prelude::*;
    let hostile = prop_oneof![
        Just(Hostile::SearchPath),
        Just(Hostile::Role),
        Just(Hostile::StatementTimeout),
        Just(Hostile::ReadOnlyDefault),
        Just(Hostile::Prepare),
        Just(Hostile::UnlockAll),
        Just(Hostile::DiscardAll),
    ];
    (prop::bool::weighted(0.3), prop::collection::vec(hostile, 0..3))
        .prop_map(|(none, hostile)| Spec { none, hostile })
}

fn cut() -> impl proptest::strategy::Strategy<Value = Cut> {
    use proptest::prelude::*;
    prop_oneof![Just(Cut::Not), (1usize..60).prop_map(Cut::Dropped), (0u64..400).prop_map(Cut::Terminated)]
}

/// The revisions of a spec list: each creates its table, waits a little
/// (longer than a leaked statement timeout), then does its hostile things.
fn hostile_set(specs: &[Spec], role: &str) -> MigrationSet {
    let mut b = MigrationSet::builder();
    for (i, spec) in specs.iter().enumerate() {
        let mut up = format!("CREATE TABLE t_{i} (id int);\nSELECT pg_sleep(0.06);\n");
        for h in &spec.hostile {
            up.push_str(match h {
                Hostile::SearchPath => "SET search_path = elsewhere;\n",
                Hostile::Role => "",
                Hostile::StatementTimeout => "SET statement_timeout = '40ms';\n",
                Hostile::ReadOnlyDefault => "SET default_transaction_read_only = on;\n",
                Hostile::Prepare => "PREPARE leak AS SELECT 1;\n",
                Hostile::UnlockAll => "SELECT pg_advisory_unlock_all();\n",
                Hostile::DiscardAll if spec.none => "DISCARD ALL;\n",
                Hostile::DiscardAll => "SELECT pg_advisory_unlock_all();\n",
            });
            if let Hostile::Role = h {
                up.push_str(&format!("SET ROLE \"{role}\";\n"));
            }
        }
        let revises = if i > 0 { format!("-- pgskein: revises {:04}_r\n", i - 1) } else { String::new() };
        let none = if spec.none { "-- pgskein: transaction none\n" } else { "" };
        b = b.file(&format!("{i:04}_r.sql"), format!("{revises}{none}-- pgskein: up\n{up}").as_bytes());
    }
    b.build().unwrap()
}

/// The invariant: applied revisions form a prefix and each has its table in
/// `public`; a revision with no row has no table; at most one `transaction
/// none` revision after the prefix is running or failed (its table may or may
/// not exist); the digest follows the rows; the lock is free.
async fn ledger_equals_catalog(client: &Client, specs: &[Spec], when: &str) {
    assert!(lock_free(client).await, "{when}: the lock is held");
    let idle =
        eventually(Duration::from_secs(30), || async { crate::crash::other_sessions(client).await == 0 })
            .await;
    assert!(idle, "{when}: an interrupted session never ended");
    let mut seen_gap = false;
    for (i, spec) in specs.iter().enumerate() {
        let id = format!("{i:04}_r");
        let table: Option<String> = client
            .query_one(
                "SELECT (SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relname = $1 AND c.relkind = 'r')",
                &[&format!("t_{i}")],
            )
            .await
            .unwrap()
            .get(0);
        match row(client, &id).await.map(|r| r.0) {
            Some(state) if state == "applied" => {
                assert!(!seen_gap, "{when}: {id} is applied after a gap");
                assert_eq!(table.as_deref(), Some("public"), "{when}: {id} is applied");
                let releases =
                    spec.hostile.iter().any(|h| matches!(h, Hostile::UnlockAll | Hostile::DiscardAll));
                assert!(!releases, "{when}: {id} released the lock, yet it is recorded applied");
            }
            Some(state) => {
                assert!(spec.none && !seen_gap, "{when}: {id} is {state}");
                seen_gap = true;
            }
            None => {
                assert_eq!(table, None, "{when}: {id} has no row but its table exists");
                seen_gap = true;
            }
        }
    }
    if client
        .query_one("SELECT to_regclass('pgskein.meta') IS NOT NULL", &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(digest_follows_rows(client).await, "{when}: the digest does not follow the rows");
    }
}

async fn cut_run(db: &pgskein::testing::TestDatabase, set: &MigrationSet, cut: Cut) {
    let client = db.connect().await.unwrap();
    let m = set.clone().with_config(Config::default().application_name("hostile-prop"));
    match cut {
        Cut::Not => drop(m.run(&client).await),
        Cut::Dropped(polls) => drop(crate::common::CancelAfter::new(m.run(&client), polls).await),
        Cut::Terminated(ms) => {
            let killer = db.connect().await.unwrap();
            let kill = async {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                killer
                    .batch_execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hostile-prop'",
                    )
                    .await
                    .unwrap();
            };
            let _ = tokio::join!(m.run(&client), kill);
        }
    }
}

fn prop_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 12,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Random plans of revisions that change their session and release the
    /// lock, cut short at random: after each run (and after a second, uncut
    /// one), the ledger says exactly what the catalog holds.
    #[test]
    fn random_hostile_plans_cut_short_keep_the_ledger_equal_to_the_catalog(
        specs in proptest::collection::vec(spec(), 2..7),
        cut in cut(),
    ) {
        prop_runtime().block_on(async {
            let db = fresh_db("hostile_prop").await;
            let admin = db.connect().await.unwrap();
            let role = low_role(&admin, db.name()).await;
            admin.batch_execute("CREATE SCHEMA elsewhere").await.unwrap();
            let set = hostile_set(&specs, &role);
            cut_run(&db, &set, cut).await;
            ledger_equals_catalog(&admin, &specs, &format!("{specs:?} cut {cut:?}")).await;
            cut_run(&db, &set, Cut::Not).await;
            ledger_equals_catalog(&admin, &specs, &format!("{specs:?} cut {cut:?}, then run again")).await;
            drop(admin);
            drop(db);
            let server = pgskein::testing::TestServer::shared().unwrap();
            let (cleanup, conn) = server.config("postgres").connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            cleanup.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\"")).await.unwrap();
        });
    }
}
