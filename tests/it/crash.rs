//! R1: a child process applies a long plan and is killed with SIGKILL at a
//! random moment; the ledger must then agree with the catalog, the lock must
//! be free, and the next run must converge.
//!
//! The child is this test binary itself, re-run with `--exact` on the ignored
//! test below and the database URL in `PGSKEIN_CRASH_URL`. Ten trials run in
//! `cargo test`; `PGSKEIN_LONG=1` runs 150. `PGSKEIN_CRASH_SEED=<n>` replays a
//! sequence of kill moments.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pgskein::status::Resolution;
use pgskein::{Error, MigrationSet, Migrator, Target};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::Client;

use crate::common::{Rng, eventually, fresh_db, lock_held};

/// The child's environment variable: the URL of the database to migrate.
const CHILD_URL: &str = "PGSKEIN_CRASH_URL";
/// Printed by the child once connected, just before `run()`.
const READY: &str = "pgskein-crash-child: ready";
/// Linux and the BSDs agree on its number.
const SIGKILL: i32 = 9;
const CHILD_TEST: &str = "crash::crash_child_applies_the_plan_until_killed";

/// Revisions in the chain; every fifth one is `transaction none`.
const REVISIONS: usize = 30;

fn is_notx(i: usize) -> bool {
    i % 5 == 3
}

fn rev_id(i: usize) -> String {
    format!("{i:04}_step")
}

/// A linear chain of small revisions. Revision `i` creates table `t_i` with
/// some rows, or, when `transaction none`, builds two indexes concurrently on
/// the previous revision's table (with a verify section), so a kill can land
/// between its statements.
pub(crate) fn crash_plan() -> MigrationSet {
    let mut builder = MigrationSet::builder();
    for (name, text) in crash_files() {
        builder = builder.file(&name, text.as_bytes());
    }
    builder.build().expect("the crash plan is valid")
}

/// The files of the crash plan: (file name, content).
fn crash_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for i in 1..=REVISIONS {
        let mut text = String::new();
        if i > 1 {
            text.push_str(&format!("-- pgskein: revises {}\n", rev_id(i - 1)));
        }
        if is_notx(i) {
            let t = i - 1;
            text.push_str(&format!(
                "-- pgskein: transaction none\n-- pgskein: up\n\
                 CREATE INDEX CONCURRENTLY ix_{i}_a ON t_{t} (v);\n\
                 CREATE INDEX CONCURRENTLY ix_{i}_b ON t_{t} (id, v);\n\
                 -- pgskein: down\n\
                 DROP INDEX CONCURRENTLY IF EXISTS ix_{i}_b;\n\
                 DROP INDEX CONCURRENTLY IF EXISTS ix_{i}_a;\n\
                 -- pgskein: verify\n\
                 SELECT count(*) = 2 AND bool_and(indisvalid) FROM pg_index \
                 WHERE indexrelid IN ('ix_{i}_a'::regclass, 'ix_{i}_b'::regclass);\n"
            ));
        } else {
            text.push_str(&format!(
                "-- pgskein: up\n\
                 CREATE TABLE t_{i} (id int PRIMARY KEY, v text NOT NULL);\n\
                 INSERT INTO t_{i} SELECT g, md5(g::text) FROM generate_series(1, 3000) g;\n\
                 -- pgskein: down\n\
                 DROP TABLE t_{i};\n"
            ));
        }
        files.push((format!("{}.sql", rev_id(i)), text));
    }
    files
}

#[test]
#[ignore = "the child process of kill_9_at_random_moments_never_leaves_an_inconsistent_state; \
            does nothing unless PGSKEIN_CRASH_URL is set"]
fn crash_child_applies_the_plan_until_killed() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        eprintln!("{CHILD_URL} is not set: this test only runs as the child of the crash test");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        // On a line of its own: the harness may have started one without ending it.
        println!("\n{READY}");
        crash_plan().run(&client).await.expect("the child's run succeeds when not killed");
    });
}

enum ChildEnd {
    /// The run finished before the kill.
    Finished,
    /// Killed this long after it reported ready.
    Killed,
}

/// Runs the child; kills it `kill_after` after it is ready (never, if `None`).
/// Returns how it ended and how long it ran after being ready.
async fn run_child(url: &str, kill_after: Option<Duration>) -> (ChildEnd, Duration) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_URL, url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child test process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Collected for the failure message; read all along, so the child never
    // blocks on a full pipe.
    let stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut BufReader::new(stderr), &mut text).await;
        text
    });
    let wait_ready = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim() == READY {
                return true;
            }
        }
        false
    };
    let ready = tokio::time::timeout(Duration::from_secs(60), wait_ready).await;
    if ready != Ok(true) {
        let _ = child.start_kill();
        let _ = child.wait().await;
        panic!("the child never reported ready; its stderr:\n{}", errors.await.unwrap());
    }
    let ready = Instant::now();
    // Keep draining stdout, so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let status = match kill_after {
        None => tokio::time::timeout(Duration::from_secs(120), child.wait()).await.unwrap().unwrap(),
        Some(delay) => {
            tokio::select! {
                status = child.wait() => status.unwrap(),
                () = tokio::time::sleep(delay) => {
                    child.start_kill().unwrap(); // SIGKILL
                    child.wait().await.unwrap()
                }
            }
        }
    };
    let ran = ready.elapsed();
    if status.success() {
        (ChildEnd::Finished, ran)
    } else {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(SIGKILL) {
            panic!("the child failed on its own ({status}); its stderr:\n{}", errors.await.unwrap());
        }
        (ChildEnd::Killed, ran)
    }
}

/// Polls `cond` until it holds or `limit` passes.
pub(crate) async fn other_sessions(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// What a trial left behind.
#[derive(Debug, Default)]
struct Observed {
    /// Revisions recorded as applied (a prefix of the chain).
    applied: usize,
    /// The `transaction none` revision recorded as running or failed, if any.
    running: Option<usize>,
}

/// Checks the ledger against the catalog and returns what is recorded.
async fn check_consistent(client: &Client, when: &str) -> Observed {
    let rows: Vec<(String, String)> = match client.query("SELECT id, state FROM pgskein.applied", &[]).await {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(e) if matches!(e.code().map(|c| c.code()), Some("42P01" | "3F000")) => Vec::new(),
        Err(e) => panic!("{when}: reading the ledger: {e}"),
    };
    let state_of = |i: usize| rows.iter().find(|(id, _)| *id == rev_id(i)).map(|(_, s)| s.as_str());
    let tables: Vec<String> = client
        .query("SELECT relname::text FROM pg_class WHERE relkind = 'r' AND relname ~ '^t_[0-9]+$'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let indexes: Vec<(String, bool)> = client
        .query(
            "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname ~ '^ix_[0-9]+_[ab]$'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut seen = Observed::default();
    let mut ended = false;
    for i in 1..=REVISIONS {
        let state = state_of(i);
        if ended {
            assert_eq!(state, None, "{when}: {} is recorded after a gap in the chain: {rows:?}", rev_id(i));
        }
        if is_notx(i) {
            let index = |s: &str| indexes.iter().find(|(n, _)| *n == format!("ix_{i}_{s}")).map(|(_, v)| *v);
            let (a, b) = (index("a"), index("b"));
            match state {
                Some("applied") => assert!(
                    a == Some(true) && b == Some(true),
                    "{when}: {} is applied but its indexes are {a:?}, {b:?}",
                    rev_id(i)
                ),
                None => assert!(
                    a.is_none() && b.is_none(),
                    "{when}: indexes of {} exist without its ledger row",
                    rev_id(i)
                ),
                Some("running" | "failed") => {
                    // Interrupted between its statements (killed), or at one
                    // (its statement cancelled): anything of it may exist.
                    assert!(seen.running.is_none(), "{when}: two running rows: {rows:?}");
                    seen.running = Some(i);
                }
                Some(other) => panic!("{when}: {} is recorded as {other}", rev_id(i)),
            }
        } else {
            let exists = tables.contains(&format!("t_{i}"));
            match state {
                Some("applied") => assert!(exists, "{when}: {} is applied but t_{i} is missing", rev_id(i)),
                None => assert!(!exists, "{when}: t_{i} exists but {} has no ledger row", rev_id(i)),
                Some(other) => {
                    panic!("{when}: transactional revision {} is recorded as {other}", rev_id(i))
                }
            }
        }
        match state {
            Some("applied") => seen.applied += 1,
            _ => ended = true,
        }
    }
    assert_eq!(
        rows.len(),
        seen.applied + usize::from(seen.running.is_some()),
        "{when}: unknown rows: {rows:?}"
    );
    seen
}

/// The operator's part for an interrupted `transaction none` revision: the
/// run refuses to go on, then the revision is settled by what exists.
async fn settle_running(set: &MigrationSet, client: &Client, i: usize, when: &str) -> Resolution {
    let err = set.run(client).await.unwrap_err();
    match &err {
        Error::Blocked { id, .. } => assert_eq!(id.as_str(), rev_id(i).as_str(), "{when}"),
        other => panic!("{when}: expected Blocked, got {other:?}"),
    }
    assert!(err.to_string().contains("resolve"), "{when}: {err}");
    let valid: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname IN ($1, $2) AND i.indisvalid",
            &[&format!("ix_{i}_a"), &format!("ix_{i}_b")],
        )
        .await
        .unwrap()
        .get(0);
    let resolution = if valid == 2 {
        Resolution::MarkApplied
    } else {
        // A concurrent build cut short leaves an invalid index behind.
        client.batch_execute(&format!("DROP INDEX IF EXISTS ix_{i}_a, ix_{i}_b")).await.unwrap();
        Resolution::MarkReverted
    };
    set.resolve(client, &rev_id(i), resolution).await.unwrap();
    resolution
}

fn long() -> bool {
    std::env::var("PGSKEIN_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_never_leaves_an_inconsistent_state() {
    let trials = if long() { 150 } else { 10 };
    let seed = std::env::var("PGSKEIN_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }) | 1;
    println!("crash trials: {trials}, PGSKEIN_CRASH_SEED={seed}");
    let mut rng = Rng::from_seed(seed);
    let db = fresh_db("crash").await;
    let url = db.url();
    let client = db.connect().await.unwrap();
    let set = crash_plan();

    // A whole run, to learn how long one takes.
    let (end, full) = run_child(&url, None).await;
    assert!(matches!(end, ChildEnd::Finished));
    assert_eq!(check_consistent(&client, "after a full run").await.applied, REVISIONS);
    set.downgrade(&client, &Target::Base).await.unwrap();
    client.batch_execute("DROP SCHEMA pgskein CASCADE").await.unwrap();

    let (mut mid_plan, mut running, mut finished) = (0, 0, 0);
    let mut resolutions = Vec::new();
    for trial in 0..trials {
        let start = check_consistent(&client, "before the trial").await.applied;
        // Somewhere in what is left to do (a run from part-way is shorter).
        let left = full.as_micros() as u64 * (REVISIONS - start) as u64 / REVISIONS as u64;
        let delay = Duration::from_micros(rng.below(left + 1));
        let when = format!("trial {trial} (seed {seed}, from {start} applied, killed after {delay:?})");
        let (end, _) = run_child(&url, Some(delay)).await;
        if matches!(end, ChildEnd::Finished) {
            finished += 1;
        }
        assert!(
            eventually(Duration::from_secs(30), || async { !lock_held(&client).await }).await,
            "{when}: the lock is still held"
        );
        // The killed backend may still be finishing a statement (or committing
        // a pipelined transaction): judge the state once it is gone.
        assert!(
            eventually(Duration::from_secs(60), || async { other_sessions(&client).await == 0 }).await,
            "{when}: the killed session never ended"
        );
        let seen = check_consistent(&client, &when).await;
        if seen.applied > start && seen.applied < REVISIONS {
            mid_plan += 1;
        }
        if let Some(i) = seen.running {
            running += 1;
            resolutions.push(settle_running(&set, &client, i, &when).await);
            check_consistent(&client, &format!("{when}, resolved")).await;
        }
        let report = set.run(&client).await.unwrap_or_else(|e| panic!("{when}: the next run fails: {e}"));
        assert!(report.warnings.is_empty(), "{when}: {:?}", report.warnings);
        let after = check_consistent(&client, &format!("{when}, next run")).await;
        assert_eq!(
            (after.applied, after.running),
            (REVISIONS, None),
            "{when}: the next run did not converge"
        );
        assert!(
            set.run(&client).await.unwrap().fast_path,
            "{when}: a converged database takes the fast path"
        );
        assert!(!lock_held(&client).await);

        // The next trial starts from scratch (bootstrap included) or part-way.
        if rng.below(2) == 0 {
            set.downgrade(&client, &Target::Base).await.unwrap();
            client.batch_execute("DROP SCHEMA pgskein CASCADE").await.unwrap();
        } else {
            let back = 1 + rng.below(REVISIONS as u64) as i64;
            set.downgrade(&client, &Target::Relative(-back)).await.unwrap();
        }
    }
    let applied = resolutions.iter().filter(|r| **r == Resolution::MarkApplied).count();
    println!(
        "crash trials: {trials}; killed mid-plan {mid_plan}, inside a transaction-none revision {running} \
         (resolved: {applied} applied, {} reverted), finished before the kill {finished}; \
         a full run takes {full:?}",
        running - applied
    );
    assert!(mid_plan > 0, "no kill landed in the middle of the plan: the trials tested nothing");
    if long() {
        assert!(running > 0, "no kill landed inside a transaction-none revision in {trials} trials");
    }
}

/// The CLI applies the plan from disk and gets SIGINT or SIGTERM at a random
/// moment: it cancels the running statement, stops before the next step and
/// exits, having recorded what ran. The ledger then agrees with the catalog,
/// the lock is free, and the next run (after settling a cancelled
/// `transaction none` revision) converges. Ten trials in `cargo test`,
/// 100 with `PGSKEIN_LONG=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_sigterm_at_random_moments_leave_what_the_ledger_says() {
    let trials = if long() { 100 } else { 10 };
    let seed = std::env::var("PGSKEIN_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }) | 1;
    println!("signal trials: {trials}, PGSKEIN_CRASH_SEED={seed}");
    let mut rng = Rng::from_seed(seed);
    let db = fresh_db("crash_signals").await;
    let client = db.connect().await.unwrap();
    let set = crash_plan();
    let dir = std::env::temp_dir().join(format!("pgskein-crash-signals-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in crash_files() {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let cli = |signal: Option<(&'static str, Duration)>| {
        let (dir, url) = (dir.clone(), db.url());
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgskein"));
            cmd.arg("--dir").arg(&dir).args(["upgrade", "--yes"]).env("DATABASE_URL", url);
            cmd.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            let started = Instant::now();
            let child = cmd.spawn().unwrap();
            if let Some((name, delay)) = signal {
                let pid = child.id().unwrap().to_string();
                tokio::time::sleep(delay).await;
                let _ = std::process::Command::new("kill").args([&format!("-{name}"), &pid]).status();
            }
            let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("the CLI exits after a signal")
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
        }
    };
    let (code, stderr, full) = cli(None).await;
    assert_eq!(code, Some(0), "{stderr}");
    set.downgrade(&client, &Target::Base).await.unwrap();

    let (mut interrupted, mut blocked) = (0, 0);
    for trial in 0..trials {
        let start = check_consistent(&client, "before the trial").await.applied;
        let name = if trial % 2 == 0 { "INT" } else { "TERM" };
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let when = format!("trial {trial} (seed {seed}, from {start} applied, SIG{name} after {delay:?})");
        let (code, stderr, _) = cli(Some((name, delay))).await;
        // 0: it finished first; 1: it stopped, reporting what it recorded;
        // the default signal exit only when the signal came before its handler.
        assert!(matches!(code, Some(0 | 1) | None), "{when}: exit {code:?}: {stderr}");
        if code == Some(1) {
            interrupted += 1;
            assert!(stderr.contains(&format!("SIG{name}")), "{when}: {stderr}");
        }
        assert!(
            eventually(Duration::from_secs(30), || async { !lock_held(&client).await }).await,
            "{when}: the lock is still held"
        );
        assert!(
            eventually(Duration::from_secs(60), || async { other_sessions(&client).await == 0 }).await,
            "{when}: the interrupted session never ended"
        );
        let seen = check_consistent(&client, &when).await;
        if let Some(i) = seen.running {
            blocked += 1;
            settle_running(&set, &client, i, &when).await;
            check_consistent(&client, &format!("{when}, resolved")).await;
        }
        set.run(&client).await.unwrap_or_else(|e| panic!("{when}: the next run fails: {e}"));
        let after = check_consistent(&client, &format!("{when}, next run")).await;
        assert_eq!(
            (after.applied, after.running),
            (REVISIONS, None),
            "{when}: the next run did not converge"
        );
        let back = 1 + rng.below(REVISIONS as u64) as i64;
        set.downgrade(&client, &Target::Relative(-back)).await.unwrap();
    }
    println!(
        "signal trials: {trials}; stopped by the signal {interrupted}, of which inside a transaction-none \
         revision {blocked}; a full run takes {full:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
