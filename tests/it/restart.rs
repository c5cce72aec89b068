//! R2: the server restarts, or the migrating session is terminated, in the
//! middle of a run. The run must fail with the database error as its source,
//! leave nothing half-recorded, free the lock, and the next run must converge.
//!
//! The run is stopped at a known point without sleeping: revision 0003 waits
//! for an advisory lock (the gate) that the test holds, and the test acts once
//! `pg_locks` shows the migrating session waiting for it.

use std::time::Duration;

use pgskein::config::TransactionMode;
use pgskein::status::Resolution;
use pgskein::testing::{TestDatabase, TestServer};
use pgskein::{Error, MigrationSet, Migrator};
use tokio_postgres::Client;

use crate::common::eventually;
use crate::common::{catalog, chain, fresh_db, ledger, lock_held};
use crate::crash::other_sessions;

/// The advisory-lock key of the gate; pgskein's own key is a SHA-256 prefix.
const GATE: i64 = 4242;

/// 0001 and 0002 create tables a and b; 0003 creates c and then waits at the
/// gate (in its second statement, or its third when `transaction none`);
/// 0004 creates d.
fn gated_set(notx: bool) -> MigrationSet {
    let gate = if notx {
        "-- pgskein: revises 0002_b\n-- pgskein: transaction none\n-- pgskein: up\n\
         CREATE TABLE c (id int);\nCREATE INDEX CONCURRENTLY c_id_idx ON c (id);\n\
         SELECT pg_advisory_lock(4242), pg_advisory_unlock(4242);\n\
         -- pgskein: down\nDROP TABLE c;\n"
    } else {
        "-- pgskein: revises 0002_b\n-- pgskein: up\nCREATE TABLE c (id int);\n\
         SELECT pg_advisory_xact_lock(4242);\n-- pgskein: down\nDROP TABLE c;\n"
    };
    MigrationSet::builder()
        .file("0001_a.sql", b"-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n")
        .file(
            "0002_b.sql",
            b"-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\n-- pgskein: down\nDROP TABLE b;\n",
        )
        .file("0003_gate.sql", gate.as_bytes())
        .file(
            "0004_d.sql",
            b"-- pgskein: revises 0003_gate\n-- pgskein: up\nCREATE TABLE d (id int);\n-- pgskein: down\nDROP TABLE d;\n",
        )
        .build()
        .unwrap()
}

/// Holds the gate on a session of its own.
async fn close_gate(db: &TestDatabase) -> Client {
    let holder = db.connect().await.unwrap();
    holder.execute("SELECT pg_advisory_lock($1)", &[&GATE]).await.unwrap();
    holder
}

/// Waits until backend `pid` is waiting at the gate.
async fn wait_at_gate(observer: &Client, pid: i32) {
    let waiting = || async {
        observer
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1 \
                 AND objid = $2",
                // A bigint key is (classid, objid) = (high, low) 32 bits.
                &[&pid, &(GATE as u32)],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    };
    assert!(eventually(Duration::from_secs(60), waiting).await, "the run never reached the gate");
}

async fn backend_pid(client: &Client) -> i32 {
    client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

fn tables(catalog: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = catalog
        .iter()
        .filter_map(|l| l.strip_prefix("relation public."))
        .filter_map(|l| l.strip_suffix(" r"))
        .collect();
    names.sort();
    names
}

/// The database error under a run's error, and the revision it names, if any.
fn db_source(err: &Error) -> (&tokio_postgres::Error, Option<&str>) {
    match err {
        Error::RevisionFailed { id, source, .. } => (source, Some(id.as_str())),
        Error::Db { source, .. } => (source, None),
        other => panic!("expected RevisionFailed or Db, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_session_mid_run_fails_the_revision_and_the_next_run_converges() {
    let db = fresh_db("terminated").await;
    let observer = db.connect().await.unwrap();
    let set = gated_set(false);
    let holder = close_gate(&db).await;
    let client = db.connect().await.unwrap();
    let pid = backend_pid(&client).await;
    let (result, ()) = tokio::join!(set.run(&client), async {
        wait_at_gate(&observer, pid).await;
        let killed: bool =
            observer.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
        assert!(killed);
    });

    let err = result.unwrap_err();
    let Error::RevisionFailed { id, path, statement, line, report, source } = &err else {
        panic!("expected RevisionFailed, got {err:?}")
    };
    assert_eq!((id.as_str(), path.as_str()), ("0003_gate", "0003_gate.sql"));
    assert_eq!((*statement, *line), (Some(2), Some(4)), "the statement waiting at the gate");
    assert_eq!(report.steps.len(), 2, "0001 and 0002 were applied before");
    assert_eq!(err.db_code(), Some("57P01"), "admin_shutdown: {}", chain(&err));
    assert!(chain(&err).contains("terminating connection due to administrator command"), "{}", chain(&err));
    assert!(!err.to_string().contains("administrator"), "the cause is printed once, by the chain: {err}");
    assert!(source.as_db_error().is_some());
    assert!(client.is_closed());

    holder.execute("SELECT pg_advisory_unlock($1)", &[&GATE]).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async { !lock_held(&observer).await }).await,
        "the migration lock dies with the session"
    );
    assert_eq!(other_sessions(&observer).await, 1, "only the gate's holder is left");
    let applied: Vec<(String, String)> = ledger(&observer).await;
    let ok = |id: &str| (id.to_owned(), "applied".to_owned());
    assert_eq!(applied, [ok("0001_a"), ok("0002_b")]);
    assert_eq!(tables(&catalog(&observer).await), ["a", "b"], "nothing of 0003 is left");

    let client = db.connect().await.unwrap();
    let report = set.run(&client).await.expect("the next run converges");
    assert_eq!(report.steps.len(), 2);
    assert_eq!(tables(&catalog(&observer).await), ["a", "b", "c", "d"]);
    assert_eq!(ledger(&observer).await.len(), 4);
    assert!(!lock_held(&observer).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_single_transaction_run_records_nothing() {
    let db = fresh_db("terminated_single").await;
    let observer = db.connect().await.unwrap();
    let set =
        gated_set(false).with_config(pgskein::Config::default().transaction_mode(TransactionMode::Single));
    let holder = close_gate(&db).await;
    let client = db.connect().await.unwrap();
    let pid = backend_pid(&client).await;
    let (result, ()) = tokio::join!(set.run(&client), async {
        wait_at_gate(&observer, pid).await;
        observer.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    });
    let err = result.unwrap_err();
    let (source, id) = db_source(&err);
    assert_eq!(id, Some("0003_gate"), "{err:?}");
    assert_eq!(source.code().map(|c| c.code()), Some("57P01"));
    holder.execute("SELECT pg_advisory_unlock($1)", &[&GATE]).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || async { !lock_held(&observer).await }).await);
    assert!(ledger(&observer).await.is_empty(), "the plan's one transaction was rolled back whole");
    assert!(tables(&catalog(&observer).await).is_empty());

    let client = db.connect().await.unwrap();
    assert_eq!(set.run(&client).await.unwrap().steps.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_non_transactional_revision_leaves_it_running_until_resolved() {
    let db = fresh_db("terminated_notx").await;
    let observer = db.connect().await.unwrap();
    let set = gated_set(true);
    let holder = close_gate(&db).await;
    let client = db.connect().await.unwrap();
    let pid = backend_pid(&client).await;
    let (result, ()) = tokio::join!(set.run(&client), async {
        wait_at_gate(&observer, pid).await;
        observer.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    });
    let err = result.unwrap_err();
    let Error::RevisionFailed { id, statement, line, .. } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!((id.as_str(), *statement, *line), ("0003_gate", Some(3), Some(6)));
    assert_eq!(err.db_code(), Some("57P01"));
    holder.execute("SELECT pg_advisory_unlock($1)", &[&GATE]).await.unwrap();
    assert!(eventually(Duration::from_secs(30), || async { !lock_held(&observer).await }).await);

    // The failure could not be recorded on the dead session: the row says
    // `running`, which is what happened as far as the ledger can know.
    let rows = ledger(&observer).await;
    let ok = |id: &str, s: &str| (id.to_owned(), s.to_owned());
    assert_eq!(rows, [ok("0001_a", "applied"), ok("0002_b", "applied"), ok("0003_gate", "running")]);
    let client = db.connect().await.unwrap();
    let blocked = set.run(&client).await.unwrap_err();
    assert!(
        matches!(&blocked, Error::Blocked { id, state, .. } if id.as_str() == "0003_gate" && *state == pgskein::status::BlockedState::Running),
        "{blocked:?}"
    );
    // Its first two statements did complete: the operator finishes by hand.
    assert_eq!(tables(&catalog(&observer).await), ["a", "b", "c"]);
    set.resolve(&client, "0003_gate", Resolution::MarkApplied).await.unwrap();
    assert_eq!(set.run(&client).await.unwrap().steps.len(), 1);
    assert_eq!(tables(&catalog(&observer).await), ["a", "b", "c", "d"]);
    assert!(set.run(&client).await.unwrap().fast_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_server_restart_mid_run_fails_cleanly_and_the_next_run_converges() {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
        println!(
            "note: DATABASE_URL is set, so there is no local server to restart; \
             skipping an_immediate_server_restart_mid_run_fails_cleanly_and_the_next_run_converges"
        );
        return;
    }
    let server = TestServer::start_private().expect("a private PostgreSQL server");
    let db = server.create_database("restarted").await.unwrap();
    let observer = db.connect().await.unwrap();
    let set = gated_set(false);
    let holder = close_gate(&db).await;
    let client = db.connect().await.unwrap();
    let pid = backend_pid(&client).await;
    let (result, ()) = tokio::join!(set.run(&client), async {
        wait_at_gate(&observer, pid).await;
        tokio::task::block_in_place(|| server.restart_immediate()).expect("the server restarts");
    });
    drop(holder);

    let err = result.unwrap_err();
    let (source, id) = db_source(&err);
    assert_eq!(id, Some("0003_gate"), "the revision in flight is named: {err:?}");
    // Immediate shutdown tells each session why it goes (57P01 admin_shutdown
    // on recent servers, 57P02 crash_shutdown on older ones), unless the
    // socket closes first.
    let code = source.code().map(|c| c.code().to_owned());
    assert!(
        matches!(code.as_deref(), Some("57P01" | "57P02")) || source.is_closed(),
        "unexpected source: {source:?}"
    );
    assert!(client.is_closed());

    let observer = db.connect().await.unwrap();
    assert!(!lock_held(&observer).await);
    // Commits acknowledged just before the crash may be lost (the throwaway
    // server runs with synchronous_commit=off), so 0001 and 0002 may or may
    // not be there; whatever is recorded must match the schema.
    let rows = ledger(&observer).await;
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert!(["", "0001_a", "0001_a 0002_b"].contains(&ids.join(" ").as_str()), "{rows:?}");
    assert!(rows.iter().all(|(_, state)| state == "applied"));
    let expected: Vec<&str> = ids.iter().map(|id| &id[5..]).collect();
    assert_eq!(tables(&catalog(&observer).await), expected, "the ledger and the schema agree");

    let client = db.connect().await.unwrap();
    set.run(&client).await.expect("the next run converges");
    assert_eq!(tables(&catalog(&observer).await), ["a", "b", "c", "d"]);
    assert_eq!(ledger(&observer).await.len(), 4);
    assert!(set.run(&client).await.unwrap().fast_path);
    assert!(!lock_held(&observer).await);
}
