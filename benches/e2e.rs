//! End-to-end figures for SPEC §13 (P1, P2, P3, P5), each next to its
//! baseline measured in the same run: `cargo bench --bench e2e`.
//!
//! Runs on the throwaway PostgreSQL of `pgskein::testing` (or the server of
//! `DATABASE_URL`), with N generated small revisions (a table with a key, a
//! text column with a default, a timestamp, an index). Every figure is a
//! median over several runs; contenders take turns within each run, so slow
//! phases of a busy machine fall on all of them alike.
//!
//! - P1: a no-op `run()` at head, N = 100 / 1,000 / 5,000: in-process on a warm
//!   connection (against `SELECT 1` on the same connection, with the requests
//!   counted by a proxy), and as a fresh process against the connect floor
//!   (`examples/startup.rs select1`): a binary built with `embed_migrations!`
//!   over the N files (a crate written and built under `target/bench-e2e`),
//!   `examples/startup.rs` reading the directory, and the sqlx library's
//!   `migrate!().run()` (likewise built, with sqlx from the registry; skipped
//!   with a note when it cannot be built).
//! - P1c: the same at N = 500 and 2,000 for the `pgskein` CLI reading the files
//!   (`pgskein --dir DIR upgrade`) against sqlx-cli and refinery_cli.
//! - `PGSKEIN_BENCH_BEFORE=<checkout>`: the same pgskein programs built from an
//!   older checkout, measured in the same run as "(before)".
//! - P2 / P3: apply 1,000 revisions to an empty database, one transaction per
//!   revision / one transaction, against psql running the same SQL (one
//!   process; `BEGIN`/`\ir`/`COMMIT` per file, or `psql -1` on the
//!   concatenation), and the peers.
//! - P5: K = 8 / 32 / 64 starters at once on an empty database, as tasks in
//!   one process and as processes, against one starter; exactly-once checked in
//!   `pgskein.events`; the peers' CLIs with K processes.
//!
//! The peers come from `scripts/bench-setup.sh` (into `target/bench-tools`,
//! or `$PGSKEIN_BENCH_TOOLS`); each missing one is skipped with a note.
//!
//! Arguments (after `--`): any of `p1 p2 p5` to run only those parts
//! (`p2` includes P3). `PGSKEIN_BENCH_SCALE=0.5` halves the number of runs.
//! Results are printed and written to `target/bench-e2e/report.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgskein::config::TransactionMode;
use pgskein::testing::{TestDatabase, TestServer};
use pgskein::{Config, MigrationSet, Migrator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const P1_SIZES: [usize; 3] = [100, 1_000, 5_000];
/// P1c, the CLI reading files from disk: ≤ 1.3× the floor at the first, ahead of every peer at the second.
const P1C_SIZES: [usize; 2] = [500, 2_000];
const APPLY_N: usize = 1_000;
const STARTERS: [usize; 3] = [8, 32, 64];

fn main() -> Result<()> {
    let filter: Vec<String> =
        std::env::args().skip(1).filter(|a| !a.starts_with("--")).map(|a| a.to_lowercase()).collect();
    let wants = |part: &str| filter.is_empty() || filter.iter().any(|f| f == part);
    let scale: f64 = std::env::var("PGSKEIN_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let runs = |n: usize| ((n as f64 * scale).round() as usize).max(1);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut bench = Bench::new()?;
    bench.machine();
    runtime.block_on(async {
        bench.versions().await?;
        if wants("p1") {
            bench.p1_in_process(runs(300)).await?;
            bench.p1_fresh_process(runs(25)).await?;
        }
        if wants("p2") || wants("p3") {
            bench.p2_p3(runs(10)).await?;
        }
        if wants("p5") {
            bench.p5(runs(3)).await?;
        }
        Ok::<_, BoxError>(())
    })?;
    bench.finish()
}

/// The fresh-process times of one N: the contenders' names, and each one's samples.
type Timed = (usize, Vec<String>, Vec<Vec<Duration>>);

/// What K starters at once did.
struct Starters {
    wall: Duration,
    ok: usize,
    once: bool,
    /// Tasks only: the applying starter's `run()`, and the time from its end to the last starter's.
    detail: Option<(Duration, Duration)>,
}

/// The programs a run compares.
struct Tools {
    startup: PathBuf,
    /// The `pgskein` binary.
    cli: PathBuf,
    psql: Option<PathBuf>,
    sqlx: Option<PathBuf>,
    refinery: Option<PathBuf>,
    /// Which of [`url_forms`] each peer accepted: (sqlx, refinery).
    url_form: (usize, usize),
}

/// An older pgskein to measure next to this one (`PGSKEIN_BENCH_BEFORE`, a checkout).
#[derive(Clone)]
struct Before {
    root: PathBuf,
    startup: PathBuf,
    cli: PathBuf,
}

struct Bench {
    server: &'static TestServer,
    /// This checkout, and its target directory.
    root: PathBuf,
    target: PathBuf,
    before: Option<Before>,
    work: PathBuf,
    tools: Tools,
    out: String,
    load_before: String,
}

impl Bench {
    fn new() -> Result<Bench> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let target = if target.is_absolute() { target } else { root.join(target) };
        let work = target.join("bench-e2e");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;

        eprintln!("building examples/startup.rs and the pgskein binary (release) ...");
        build_startup_and_cli(&root, None)?;
        let startup = target.join("release/examples/startup");
        let before = match std::env::var_os("PGSKEIN_BENCH_BEFORE") {
            Some(dir) => {
                let dir = std::fs::canonicalize(PathBuf::from(dir))?;
                eprintln!("building the same in {} (release) ...", dir.display());
                let before_target = dir.join("target");
                build_startup_and_cli(&dir, Some(&before_target))?;
                Some(Before {
                    root: dir,
                    startup: before_target.join("release/examples/startup"),
                    cli: before_target.join("release/pgskein"),
                })
            }
            None => None,
        };

        let tools_dir = std::env::var_os("PGSKEIN_BENCH_TOOLS")
            .map_or_else(|| target.join("bench-tools"), PathBuf::from)
            .join("bin");
        let found = |name: &str| Some(tools_dir.join(name)).filter(|p| p.is_file());
        let tools = Tools {
            startup,
            cli: target.join("release/pgskein"),
            psql: which("psql"),
            sqlx: found("sqlx"),
            refinery: found("refinery"),
            url_form: (0, 0),
        };
        let server = TestServer::shared()?;
        Ok(Bench { server, root, target, before, work, tools, out: String::new(), load_before: load() })
    }

    /// Prints a line and keeps it for the report.
    fn say(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.out.push_str(line.as_ref());
        self.out.push('\n');
    }

    fn machine(&mut self) {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned()))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or_else(|| "unknown".into(), |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0));
        let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
        self.say("# pgskein end-to-end benchmarks\n");
        self.say(format!("- machine: {cores} cores, {mem}, CPU {cpu}, kernel {kernel}"));
        let load = self.load_before.clone();
        self.say(format!("- load average at start: {load}"));
    }

    async fn versions(&mut self) -> Result<()> {
        let db = self.server.create_database("bench_version").await?;
        let client = db.connect().await?;
        let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        let settings = client
            .query_one(
                "SELECT current_setting('fsync') || ' / ' || current_setting('synchronous_commit')",
                &[],
            )
            .await?
            .get::<_, String>(0);
        let kind = if std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
            "DATABASE_URL"
        } else {
            "throwaway server, Unix socket"
        };
        self.say(format!("- PostgreSQL {version} ({kind}; fsync / synchronous_commit: {settings})"));
        let rustc = output(Command::new("rustc").arg("--version")).unwrap_or_else(|| "rustc unknown".into());
        self.say(format!("- {rustc}"));
        let psql = self.tools.psql.as_ref().and_then(|p| output(Command::new(p).arg("--version")));
        let sqlx = self.tools.sqlx.as_ref().and_then(|p| output(Command::new(p).arg("--version")));
        let refinery = self.tools.refinery.as_ref().and_then(|p| output(Command::new(p).arg("--version")));
        for (name, v) in [("psql", psql), ("sqlx-cli", sqlx), ("refinery_cli", refinery)] {
            let v =
                v.unwrap_or_else(|| format!("{name}: not installed (run scripts/bench-setup.sh), skipped"));
            self.say(format!("- {v}"));
        }
        drop(client);
        self.probe_peers().await
    }

    /// Finds a URL form each peer accepts for the server (a Unix socket
    /// directory for the throwaway server), or skips the peer.
    async fn probe_peers(&mut self) -> Result<()> {
        let sql = revisions(1);
        let dir = self.work.join("probe");
        write_sets(&dir, &sql)?;
        for peer in [Peer::Sqlx, Peer::Refinery] {
            let Some(bin) = peer.bin(&self.tools).cloned() else {
                // Without sqlx-cli to ask, the sqlx library gets the form sqlx
                // documents for a socket: the directory percent-encoded as the host.
                if peer == Peer::Sqlx {
                    let db = self.server.create_database("bench_probe").await?;
                    self.tools.url_form.0 = url_forms(&db).len() - 1;
                }
                continue;
            };
            let mut tried = Vec::new();
            let mut accepted = None;
            let db = self.server.create_database("bench_probe").await?;
            for (form, url) in url_forms(&db).into_iter().enumerate() {
                match run_checked(peer.command(&bin, &url, &dir, false)) {
                    Ok(_) => {
                        match peer {
                            Peer::Sqlx => self.tools.url_form.0 = form,
                            Peer::Refinery => self.tools.url_form.1 = form,
                        }
                        accepted = Some(url);
                        break;
                    }
                    Err(e) => tried.push(format!("`{}`: {}", redact_dir(&url), first_line(&e.to_string()))),
                }
            }
            match accepted {
                Some(url) => self.say(format!(
                    "- {} connects with a URL of the form `{}`",
                    peer.name(),
                    redact_dir(&url)
                )),
                None => {
                    self.say(format!(
                        "- {} skipped: it accepted none of these URLs: {}",
                        peer.name(),
                        tried.join("; ")
                    ));
                    match peer {
                        Peer::Sqlx => self.tools.sqlx = None,
                        Peer::Refinery => self.tools.refinery = None,
                    }
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- P1

    async fn p1_in_process(&mut self, runs: usize) -> Result<()> {
        self.say("\n## P1: no-op `run()` at head, in process, warm connection\n");
        self.say(format!(
            "Median of {runs} calls, alternating with `SELECT 1` on the same connection (the baseline). \
             Requests: statements the client sent during one `run()`, counted by a proxy."
        ));
        self.say("\n| N | `run()` median | p90 | `SELECT 1` median | ratio | requests | target |");
        self.say("|---:|---:|---:|---:|---:|---:|---|");
        let mut medians = Vec::new();
        for n in P1_SIZES {
            let dir = self.sets(n)?;
            let set = MigrationSet::from_dir(dir.join("pgskein"))?;
            let db = self.server.create_database(&format!("bench_p1_{n}")).await?;
            let client = db.connect().await?;
            let applied = set.run(&client).await?;
            assert_eq!(applied.steps.len(), n);
            for _ in 0..20 {
                set.run(&client).await?;
                client.simple_query("SELECT 1").await?;
            }
            let (mut at_head, mut floor) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
            for _ in 0..runs {
                let t = Instant::now();
                let report = set.run(&client).await?;
                at_head.push(t.elapsed());
                assert!(report.fast_path && report.steps.is_empty());
                let t = Instant::now();
                client.simple_query("SELECT 1").await?;
                floor.push(t.elapsed());
            }
            // The proxy speaks to a Unix socket: with a TCP `DATABASE_URL` the count is left out.
            let requests = match count_requests(&db, |client| {
                let set = &set;
                async move {
                    set.run(&client).await?;
                    Ok(())
                }
            })
            .await
            {
                Ok(n) => n.to_string(),
                Err(e) => {
                    eprintln!("requests not counted: {e}");
                    "–".to_owned()
                }
            };
            let (m, f) = (median(&at_head), median(&floor));
            medians.push(m);
            self.say(format!(
                "| {n} | {} | {} | {} | {:.2}× | {requests} | 1 request, ≤ 1 ms, flat in N |",
                ms(m),
                ms(pct(&at_head, 0.9)),
                ms(f),
                ratio(m, f)
            ));
        }
        let (first, last) = (medians[0], medians[medians.len() - 1]);
        self.say(format!(
            "\nFlatness: median at N = {} over median at N = {}: {:.2}×.",
            P1_SIZES[P1_SIZES.len() - 1],
            P1_SIZES[0],
            ratio(last, first)
        ));
        Ok(())
    }

    async fn p1_fresh_process(&mut self, runs: usize) -> Result<()> {
        self.say("\n## P1 and P1c: no-op run at head, fresh process\n");
        self.say(format!(
            "Wall time of a whole process, median of {runs} runs (ratio to the connect floor in \
             parentheses; p10 – p90 in the second table); the contenders take turns in each run. Connect \
             floor: `examples/startup.rs select1` (start, connect, `SELECT 1`, exit). pgskein macro: a binary \
             built with `embed_migrations!` over the N files (start, connect, `MIGRATIONS.run()`, exit). \
             pgskein library from disk: `examples/startup.rs run` over the directory. pgskein CLI: \
             `pgskein --dir DIR upgrade`. sqlx library: a binary built with `sqlx::migrate!` over the same \
             bodies, `MIGRATOR.run(&mut conn)` on one connection. sqlx-cli: `sqlx migrate run`; \
             refinery_cli: `refinery migrate`. \"(before)\": the same programs built from \
             `PGSKEIN_BENCH_BEFORE`. Every tool's database is at head beforehand (the sqlx library and \
             sqlx-cli share one: same table, same checksums)."
        ));
        let sizes: Vec<usize> = {
            let mut v: Vec<usize> = P1_SIZES.iter().chain(P1C_SIZES.iter()).copied().collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for &n in &sizes {
            self.sets(n)?;
        }
        let mut crates = Vec::new();
        for (kind, root, label) in self.crate_roots() {
            eprintln!("building the {label} bench binaries (release) ...");
            match build_bench_crate(&self.work, &self.target, kind, &root, &label, &sizes) {
                Ok(built) => crates.push(built),
                Err(e) => self.say(format!("- {label} skipped: {}", first_line(&e.to_string()))),
            }
        }
        let mut all = Vec::new();
        for &n in &sizes {
            eprintln!("P1 fresh process, N = {n}");
            let dir = self.sets(n)?;
            let pg_db = self.server.create_database(&format!("bench_p1p_{n}")).await?;
            let pg_url = pg_db.url();
            let sqlx_db = self.server.create_database(&format!("bench_p1sqlx_{n}")).await?;
            let sqlx_url = self.peer_url(Peer::Sqlx, &sqlx_db);
            let refinery_db = self.server.create_database(&format!("bench_p1refinery_{n}")).await?;
            let refinery_url = self.peer_url(Peer::Refinery, &refinery_db);

            // (name, the command, whether it brings its database to head first)
            let mut contenders: Vec<(String, Command, bool)> =
                vec![("connect floor".into(), self.select1(&pg_url), false)];
            let mut variants = vec![("", self.tools.startup.clone(), self.tools.cli.clone())];
            if let Some(b) = &self.before {
                variants.push((" (before)", b.startup.clone(), b.cli.clone()));
            }
            for built in crates.iter().filter(|c| c.kind == CrateKind::Pgskein) {
                let mut cmd = Command::new(built.bin(n));
                cmd.arg(&pg_url);
                contenders.push((built.label.clone(), cmd, false));
            }
            for (tag, startup, cli) in &variants {
                let first = tag.is_empty();
                contenders.push((
                    format!("pgskein library, from disk{tag}"),
                    startup_from_dir(startup, &pg_url, &dir),
                    first,
                ));
                contenders.push((format!("pgskein CLI{tag}"), cli_upgrade(cli, &pg_url, &dir), false));
            }
            let sqlx_cli = self.tools.sqlx.clone();
            for built in crates.iter().filter(|c| c.kind == CrateKind::Sqlx) {
                let mut cmd = Command::new(built.bin(n));
                cmd.arg(&sqlx_url);
                contenders.push((built.label.clone(), cmd, sqlx_cli.is_none()));
            }
            if let Some(bin) = &sqlx_cli {
                contenders.push((
                    Peer::Sqlx.name().into(),
                    Peer::Sqlx.command(bin, &sqlx_url, &dir, false),
                    true,
                ));
            }
            if let Some(bin) = &self.tools.refinery {
                contenders.push((
                    Peer::Refinery.name().into(),
                    Peer::Refinery.command(bin, &refinery_url, &dir, false),
                    true,
                ));
            }
            for (_, cmd, migrates) in &mut contenders {
                if *migrates {
                    run_checked_mut(cmd)?;
                }
            }
            // Warm the page cache and the binaries; each must succeed at head.
            for _ in 0..2 {
                for (_, cmd, _) in &mut contenders {
                    time_checked_mut(cmd)?;
                }
            }
            let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
            for _ in 0..runs {
                for (k, (_, cmd, _)) in contenders.iter_mut().enumerate() {
                    times[k].push(time_checked_mut(cmd)?);
                }
            }
            check_tables(&pg_db, n).await?;
            let names = contenders.into_iter().map(|(name, ..)| name).collect();
            all.push((n, names, times));
        }
        self.p1_tables(&all);
        Ok(())
    }

    /// The fresh-process tables: medians and ratios to the floor, then the spread.
    fn p1_tables(&mut self, all: &[Timed]) {
        let Some((_, names, _)) = all.first() else { return };
        let names = names.clone();
        self.say(format!("\n| N | {} | targets |", names.join(" | ")));
        self.say(format!("|---:|{}---|", "---:|".repeat(names.len())));
        for (n, row_names, times) in all {
            let floor = median(&times[0]);
            let mut cells = Vec::new();
            for (k, name) in names.iter().enumerate() {
                let Some(pos) = row_names.iter().position(|r| r == name) else {
                    cells.push("–".to_owned());
                    continue;
                };
                let m = median(&times[pos]);
                cells.push(if k == 0 { ms(m) } else { format!("{} ({:.2}×)", ms(m), ratio(m, floor)) });
            }
            let mut targets = Vec::new();
            if P1_SIZES.contains(n) {
                targets.push("macro ≤ 1.1×");
            }
            if P1C_SIZES.contains(n) {
                targets.push(if *n == P1C_SIZES[0] { "CLI ≤ 1.3×" } else { "CLI ahead of every peer" });
            }
            if *n == 2_000 {
                targets.push("macro ≥ 2× faster than the sqlx library");
            }
            self.say(format!("| {n} | {} | {} |", cells.join(" | "), targets.join("; ")));
        }
        self.say("\nSpread: p10 – p90 of the same runs.\n");
        self.say(format!("| N | {} |", names.join(" | ")));
        self.say(format!("|---:|{}", "---:|".repeat(names.len())));
        for (n, _, times) in all {
            let cells: Vec<String> =
                times.iter().map(|t| format!("{} – {}", ms(pct(t, 0.1)), ms(pct(t, 0.9)))).collect();
            self.say(format!("| {n} | {} |", cells.join(" | ")));
        }
    }

    /// The crates whose `migrate!`-style binaries are measured: pgskein's
    /// `embed_migrations!` from this checkout (and from `PGSKEIN_BENCH_BEFORE`),
    /// and the sqlx library's `migrate!`.
    fn crate_roots(&self) -> Vec<(CrateKind, PathBuf, String)> {
        let mut roots = vec![(CrateKind::Pgskein, self.root.clone(), "pgskein macro".to_owned())];
        if let Some(before) = &self.before {
            roots.push((CrateKind::Pgskein, before.root.clone(), "pgskein macro (before)".to_owned()));
        }
        roots.push((CrateKind::Sqlx, PathBuf::new(), "sqlx library".to_owned()));
        roots
    }

    // ---------------------------------------------------------------- P2, P3

    async fn p2_p3(&mut self, runs: usize) -> Result<()> {
        let n = APPLY_N;
        let dir = self.sets(n)?;
        self.say(format!("\n## P2 / P3: apply {n} revisions to an empty database\n"));
        self.say(format!(
            "Wall time of one process from start to exit, median of {runs} runs, a fresh database for every \
             run; the contenders take turns in each run. psql per file: `psql -X -q -v ON_ERROR_STOP=1 -f \
             per-file.sql` where per-file.sql is `BEGIN;` `\\ir <file>` `COMMIT;` for each file; psql -1: \
             `psql -X -q -1 -v ON_ERROR_STOP=1 -f all.sql` on the concatenation. pgskein: \
             `examples/startup.rs run` (per revision) and `run ... --single`; in process: `run()` on a \
             warm connection, set loaded (not a ratio target; for reading). sqlx-cli: `sqlx migrate run`; \
             refinery_cli: `refinery migrate` (per revision) and `refinery migrate -g` (grouped)."
        ));
        type Make<'a> = Box<dyn Fn(&str) -> Option<Command> + 'a>;
        let (psql, sqlx, refinery) =
            (self.tools.psql.clone(), self.tools.sqlx.clone(), self.tools.refinery.clone());
        let startup = self.tools.startup.clone();
        let names = [
            "psql per file",
            "pgskein per revision",
            "psql -1",
            "pgskein single",
            "sqlx-cli",
            "refinery_cli",
            "refinery_cli -g",
        ];
        let makers: Vec<Make<'_>> = vec![
            Box::new(|url| {
                psql.as_ref().map(|p| psql_command(p, url, &dir.join("psql/per-file.sql"), false))
            }),
            Box::new(|url| Some(startup_command(&startup, url, &dir, false))),
            Box::new(|url| psql.as_ref().map(|p| psql_command(p, url, &dir.join("psql/all.sql"), true))),
            Box::new(|url| Some(startup_command(&startup, url, &dir, true))),
            Box::new(|url| sqlx.as_ref().map(|b| Peer::Sqlx.command(b, url, &dir, false))),
            Box::new(|url| refinery.as_ref().map(|b| Peer::Refinery.command(b, url, &dir, false))),
            Box::new(|url| refinery.as_ref().map(|b| Peer::Refinery.command(b, url, &dir, true))),
        ];
        let set = MigrationSet::from_dir(dir.join("pgskein"))?;
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
        let (mut inproc_rev, mut inproc_single) = (Vec::new(), Vec::new());
        for run in 0..runs {
            eprintln!("P2/P3 run {}/{runs}", run + 1);
            for (k, make) in makers.iter().enumerate() {
                let db = self.server.create_database("bench_p2").await?;
                let url = if names[k].starts_with("sqlx") {
                    self.peer_url(Peer::Sqlx, &db)
                } else if names[k].starts_with("refinery") {
                    self.peer_url(Peer::Refinery, &db)
                } else {
                    db.url()
                };
                let Some(cmd) = make(&url) else { continue };
                times[k].push(time_checked(cmd)?);
                check_tables(&db, n).await?;
            }
            for (mode, out) in [
                (TransactionMode::PerRevision, &mut inproc_rev),
                (TransactionMode::Single, &mut inproc_single),
            ] {
                let db = self.server.create_database("bench_p2").await?;
                let client = db.connect().await?;
                let cfg = Config::default().transaction_mode(mode);
                let t = Instant::now();
                let report = set.clone().with_config(cfg).run(&client).await?;
                out.push(t.elapsed());
                assert_eq!(report.steps.len(), n);
            }
        }
        drop(makers);
        let m = |k: usize| (!times[k].is_empty()).then(|| median(&times[k]));
        self.say("\n| what | contender | median | baseline | baseline median | ratio | target |");
        self.say("|---|---|---:|---|---:|---:|---|");
        let rows = [
            ("P2 per-revision transactions", 1, 0, "≤ 1.1×"),
            ("P2", 4, 0, "–"),
            ("P2", 5, 0, "–"),
            ("P3 single transaction", 3, 2, "≤ 1.05×"),
            ("P3", 6, 2, "–"),
            ("P2 (for reading)", 0, 2, "–"),
        ];
        for (what, k, base, target) in rows {
            let (name, base_name) = (names[k], names[base]);
            match (m(k), m(base)) {
                (Some(t), Some(b)) => self.say(format!(
                    "| {what} | {name} | {} | {base_name} | {} | {:.2}× | {target} |",
                    ms(t),
                    ms(b),
                    ratio(t, b)
                )),
                (Some(t), None) => self
                    .say(format!("| {what} | {name} | {} | {base_name} | skipped | – | {target} |", ms(t))),
                (None, _) => {
                    self.say(format!("| {what} | {name} | skipped | {base_name} | – | – | {target} |"))
                }
            }
        }
        self.say(format!(
            "\nIn process, warm connection, set loaded: per revision {} ({:.2} ms per revision), single {}.",
            ms(median(&inproc_rev)),
            median(&inproc_rev).as_secs_f64() * 1000.0 / n as f64,
            ms(median(&inproc_single)),
        ));
        Ok(())
    }

    // ---------------------------------------------------------------- P5

    async fn p5(&mut self, runs: usize) -> Result<()> {
        let n = APPLY_N;
        let dir = self.sets(n)?;
        let set = Arc::new(MigrationSet::from_dir(dir.join("pgskein"))?);
        self.say(format!("\n## P5: K starters at once on an empty database ({n} revisions)\n"));
        self.say(format!(
            "Wall time from the first start to the last exit, median of {runs} runs. Tasks: K tokio tasks in \
             this process, each opening its own connection and calling `run()`. Processes: K \
             `examples/startup.rs run` processes. Exactly once: every revision has exactly one `apply` \
             event in `pgskein.events`. Baseline: one starter, the same way."
        ));
        self.say(
            "\n| starters | K | succeeded | exactly once | wall median | one starter | ratio | target |",
        );
        self.say("|---|---:|---:|---|---:|---:|---:|---|");
        let mut breakdown: Vec<(usize, Duration, Duration)> = Vec::new();
        for as_processes in [false, true] {
            let how = if as_processes { "processes" } else { "tasks" };
            // One starter takes its turn in every run, next to the K starters.
            let sizes: Vec<usize> = std::iter::once(1).chain(STARTERS).collect();
            let mut walls = vec![Vec::new(); sizes.len()];
            let (mut holder_runs, mut tails) = (vec![Vec::new(); sizes.len()], vec![Vec::new(); sizes.len()]);
            let (mut worst, mut once) = (sizes.clone(), vec![true; sizes.len()]);
            for run in 0..runs {
                eprintln!("P5 {how}, run {}/{runs}", run + 1);
                for (i, &k) in sizes.iter().enumerate() {
                    let started = self.starters(&set, &dir, k, as_processes).await?;
                    walls[i].push(started.wall);
                    worst[i] = worst[i].min(started.ok);
                    once[i] &= started.once;
                    if let Some((run, tail)) = started.detail {
                        holder_runs[i].push(run);
                        tails[i].push(tail);
                    }
                }
            }
            if !as_processes {
                breakdown = sizes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !holder_runs[*i].is_empty())
                    .map(|(i, &k)| (k, median(&holder_runs[i]), median(&tails[i])))
                    .collect();
            }
            assert!(worst[0] == 1 && once[0], "a single starter applies everything once");
            let base = median(&walls[0]);
            for (i, &k) in sizes.iter().enumerate().skip(1) {
                self.say(format!(
                    "| pgskein, {how} | {k} | {} of {k} | {} | {} | {} | {:.2}× | {k} of {k}, exactly once, ≤ 1.3× |",
                    worst[i],
                    if once[i] { "yes" } else { "NO" },
                    ms(median(&walls[i])),
                    ms(base),
                    ratio(median(&walls[i]), base)
                ));
            }
        }
        for peer in [Peer::Sqlx, Peer::Refinery] {
            let Some(bin) = peer.bin(&self.tools).cloned() else {
                self.say(format!("| {}, processes | – | skipped (not installed) | | | | | |", peer.name()));
                continue;
            };
            let one = {
                let db = self.server.create_database("bench_p5").await?;
                let url = self.peer_url(peer, &db);
                let t = Instant::now();
                let (ok, _) = spawn_all(1, || peer.command(&bin, &url, &dir, false))?;
                assert_eq!(ok, 1, "{} migrates alone", peer.name());
                t.elapsed()
            };
            for k in STARTERS {
                let db = self.server.create_database("bench_p5").await?;
                let url = self.peer_url(peer, &db);
                let t = Instant::now();
                let (ok, errors) = spawn_all(k, || peer.command(&bin, &url, &dir, false))?;
                let wall = t.elapsed();
                let complete = check_tables(&db, n).await.is_ok();
                let why =
                    errors.first().map(|e| format!(" (first error: {})", first_line(e))).unwrap_or_default();
                self.say(format!(
                    "| {}, processes | {k} | {ok} of {k}{why} | {} | {} | {} | {:.2}× | – |",
                    peer.name(),
                    if complete { "schema complete" } else { "schema INCOMPLETE" },
                    ms(wall),
                    ms(one),
                    ratio(wall, one)
                ));
            }
        }
        if !breakdown.is_empty() {
            self.say(
                "\nWhere the time goes, tasks (medians): the `run()` of the starter that applied the revisions, \
                 and how long after it returned the last starter returned.",
            );
            self.say("\n| K | applying starter's `run()` | last starter after it |");
            self.say("|---:|---:|---:|");
            for (k, run, tail) in breakdown {
                self.say(format!("| {k} | {} | {} |", ms(run), ms(tail)));
            }
        }
        Ok(())
    }

    /// K starters at once on a fresh database: (wall, how many succeeded, exactly once).
    /// K starters at once on a fresh database. For tasks, also where the time
    /// went: the run() of the starter that applied the revisions, and how long
    /// after it the last starter returned.
    async fn starters(
        &self,
        set: &Arc<MigrationSet>,
        dir: &Path,
        k: usize,
        as_processes: bool,
    ) -> Result<Starters> {
        let db = self.server.create_database("bench_p5").await?;
        let (wall, ok, detail) = if as_processes {
            let url = db.url();
            let t = Instant::now();
            let (ok, errors) = spawn_all(k, || self.startup(&url, dir, false))?;
            let wall = t.elapsed();
            if let Some(e) = errors.first() {
                eprintln!("a starter failed: {e}");
            }
            (wall, ok, None)
        } else {
            let config = db.config();
            let t = Instant::now();
            let tasks: Vec<_> = (0..k)
                .map(|_| {
                    let (set, config) = (Arc::clone(set), config.clone());
                    tokio::spawn(async move {
                        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                        let conn = tokio::spawn(connection);
                        let result = set.run(&client).await;
                        let finished = Instant::now();
                        drop(client);
                        let _ = conn.await;
                        result.map(|report| (report, finished)).map_err(BoxError::from)
                    })
                })
                .collect();
            let (mut ok, mut holder, mut last) = (0, None, t);
            for task in tasks {
                match task.await? {
                    Ok((report, finished)) => {
                        ok += 1;
                        last = last.max(finished);
                        if !report.steps.is_empty() {
                            holder = Some((report.duration, finished));
                        }
                    }
                    Err(e) => eprintln!("a starter failed: {e}"),
                }
            }
            let detail = holder.map(|(run, finished)| (run, last.saturating_duration_since(finished)));
            (t.elapsed(), ok, detail)
        };
        let client = db.connect().await?;
        let counts = client
            .query("SELECT count(*) FROM pgskein.events WHERE kind = 'apply' GROUP BY revision", &[])
            .await?;
        let once = counts.len() == set.len() && counts.iter().all(|r| r.get::<_, i64>(0) == 1);
        Ok(Starters { wall, ok, once, detail })
    }

    // ---------------------------------------------------------------- helpers

    /// The generated revisions of size `n`, in every format, written once.
    fn sets(&self, n: usize) -> Result<PathBuf> {
        let dir = self.work.join(format!("n{n}"));
        if !dir.exists() {
            write_sets(&dir, &revisions(n))?;
        }
        Ok(dir)
    }

    fn startup(&self, url: &str, dir: &Path, single: bool) -> Command {
        startup_command(&self.tools.startup, url, dir, single)
    }

    fn select1(&self, url: &str) -> Command {
        let mut cmd = Command::new(&self.tools.startup);
        cmd.arg("select1").arg(url);
        cmd
    }

    /// The URL form `peer` accepted in the probe.
    fn peer_url(&self, peer: Peer, db: &TestDatabase) -> String {
        let form = match peer {
            Peer::Sqlx => self.tools.url_form.0,
            Peer::Refinery => self.tools.url_form.1,
        };
        url_forms(db).swap_remove(form)
    }

    fn finish(mut self) -> Result<()> {
        let load = load();
        self.say(format!("\nLoad average at start: {}; at the end: {load}.", self.load_before));
        let path = self.work.join("report.md");
        std::fs::write(&path, &self.out)?;
        eprintln!("report written to {}", path.display());
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    Sqlx,
    Refinery,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Sqlx => "sqlx-cli",
            Peer::Refinery => "refinery_cli",
        }
    }
    fn bin(self, tools: &Tools) -> Option<&PathBuf> {
        match self {
            Peer::Sqlx => tools.sqlx.as_ref(),
            Peer::Refinery => tools.refinery.as_ref(),
        }
    }
    /// `migrate run` to the newest revision; `grouped` (refinery only) in one transaction.
    fn command(self, bin: &Path, url: &str, dir: &Path, grouped: bool) -> Command {
        let mut cmd = Command::new(bin);
        // Their errors, not a backtrace, end what they print.
        cmd.env("RUST_BACKTRACE", "0");
        match self {
            Peer::Sqlx => {
                cmd.args(["migrate", "run", "--no-dotenv", "--source"])
                    .arg(dir.join("sqlx"))
                    .arg("-D")
                    .arg(url);
                // No sqlx.toml is read from the working directory.
                cmd.current_dir(dir);
            }
            Peer::Refinery => {
                cmd.args(["migrate", "-e", "PGSKEIN_BENCH_URL", "-p"]).arg(dir.join("refinery"));
                if grouped {
                    cmd.arg("-g");
                }
                cmd.env("PGSKEIN_BENCH_URL", url).current_dir(dir);
            }
        }
        cmd
    }
}

/// The URL forms to offer a peer: libpq's (`?host=/dir`), then the socket
/// directory percent-encoded as the host.
fn url_forms(db: &TestDatabase) -> Vec<String> {
    let libpq = db.url();
    let config = db.config();
    let mut forms = vec![libpq.clone()];
    if let (Some(tokio_postgres::config::Host::Unix(dir)), Some(port)) =
        (config.get_hosts().first(), config.get_ports().first())
    {
        let user = config.get_user().unwrap_or("postgres");
        let host: String = dir
            .to_string_lossy()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        forms.push(format!("postgres://{user}@{host}:{port}/{}", db.name()));
    }
    forms
}

/// Hides the socket directory (a temporary path) in what is printed.
fn redact_dir(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(i) = out.find("host=") {
        let end = out[i..].find('&').map_or(out.len(), |e| i + e);
        out.replace_range(i + 5..end, "/SOCKET_DIR");
    }
    if let Some(i) = out.find("@%2F") {
        let end = out[i..].find(':').map_or(out.len(), |e| i + e);
        out.replace_range(i + 1..end, "%2FSOCKET%2FDIR");
    }
    if let Some(i) = out.rfind('/') {
        let end = out[i..].find('?').map_or(out.len(), |e| i + e);
        out.replace_range(i + 1..end, "DB");
    }
    out
}

/// The bodies of `n` small revisions: a table with a key, a text column with
/// a default, a timestamp, and an index.
fn revisions(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| {
            format!(
                "CREATE TABLE bench_{i:05} (\n    id bigint PRIMARY KEY,\n    label text NOT NULL DEFAULT 'new',\n    \
                 created_at timestamptz NOT NULL DEFAULT now()\n);\n\
                 CREATE INDEX bench_{i:05}_created_at_idx ON bench_{i:05} (created_at);\n"
            )
        })
        .collect()
}

/// Writes the same revisions for each tool: `pgskein/` (a chain, and all of
/// it in `pgskein.bundle` for `examples/startup.rs`), `sqlx/`
/// (`<version>_<name>.sql`), `refinery/` (`V<n>__<name>.sql`) and `psql/`
/// (the bodies, `per-file.sql` and the concatenation `all.sql`).
fn write_sets(dir: &Path, bodies: &[String]) -> Result<()> {
    for sub in ["pgskein", "sqlx", "refinery", "psql"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let (mut per_file, mut all, mut bundle) = (String::new(), String::new(), String::new());
    for (k, body) in bodies.iter().enumerate() {
        let i = k + 1;
        let id = format!("{i:05}_bench");
        let mut file = String::new();
        if i > 1 {
            writeln!(file, "-- pgskein: revises {:05}_bench", i - 1)?;
        }
        write!(file, "-- pgskein: up\n{body}-- pgskein: down\nDROP TABLE bench_{i:05};\n")?;
        write!(bundle, "{id}.sql {}\n{file}", file.len())?;
        std::fs::write(dir.join(format!("pgskein/{id}.sql")), file)?;
        std::fs::write(dir.join(format!("sqlx/{i:05}_bench_{i:05}.sql")), body)?;
        std::fs::write(dir.join(format!("refinery/V{i}__bench_{i:05}.sql")), body)?;
        std::fs::write(dir.join(format!("psql/{id}.sql")), body)?;
        writeln!(per_file, "BEGIN;\n\\ir {id}.sql\nCOMMIT;")?;
        all.push_str(body);
    }
    std::fs::write(dir.join("psql/per-file.sql"), per_file)?;
    std::fs::write(dir.join("psql/all.sql"), all)?;
    std::fs::write(dir.join("pgskein.bundle"), bundle)?;
    Ok(())
}

/// `examples/startup.rs run` reading the revision files from disk.
fn startup_from_dir(startup: &Path, url: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(startup);
    cmd.arg("run").arg(url).arg(dir.join("pgskein"));
    cmd
}

/// `pgskein --dir DIR upgrade`, with the connection in `DATABASE_URL`.
fn cli_upgrade(cli: &Path, url: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(cli);
    cmd.arg("--dir").arg(dir.join("pgskein")).arg("upgrade");
    cmd.env("DATABASE_URL", url).env("NO_COLOR", "1").env_remove("RUST_LOG");
    cmd
}

/// Builds `examples/startup.rs` and the `pgskein` binary of the checkout at `root`, in release mode.
fn build_startup_and_cli(root: &Path, target: Option<&Path>) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "--example",
        "startup",
        "--features",
        "cli",
        "--bin",
        "pgskein",
    ]);
    cmd.current_dir(root);
    if let Some(target) = target {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    if !cmd.status()?.success() {
        return Err(format!("could not build examples/startup.rs and pgskein in {}", root.display()).into());
    }
    Ok(())
}

/// What a bench crate embeds its migrations with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CrateKind {
    /// `pgskein::embed_migrations!`, from a pgskein checkout.
    Pgskein,
    /// `sqlx::migrate!`, sqlx from the registry.
    Sqlx,
}

/// A crate of small programs, one per N, each embedding the N generated
/// revisions at compile time and running them on a database given as argument.
struct BuiltCrate {
    kind: CrateKind,
    label: String,
    /// The target directory's `release`.
    out: PathBuf,
    prefix: String,
}

impl BuiltCrate {
    fn bin(&self, n: usize) -> PathBuf {
        self.out.join(format!("{}_n{n}", self.prefix))
    }
}

/// Writes and builds a bench crate under `work`, with the revisions of each
/// size in `sizes` (already written by `write_sets`) as its `migrations/mN` directories.
/// The crates share one target directory, so their dependencies build once.
fn build_bench_crate(
    work: &Path,
    target: &Path,
    kind: CrateKind,
    pgskein_root: &Path,
    label: &str,
    sizes: &[usize],
) -> Result<BuiltCrate> {
    let prefix: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let prefix = prefix.trim_matches('_').replace("__", "_");
    let dir = work.join(format!("crate-{prefix}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/bin"))?;
    let dependency = match kind {
        CrateKind::Pgskein => format!("pgskein = {{ path = {:?} }}\ntokio-postgres = \"0.7\"\n", pgskein_root),
        CrateKind::Sqlx => "sqlx = { version = \"0.9\", default-features = false, features = [\"runtime-tokio\", \"postgres\", \"migrate\", \"macros\"] }\n".to_owned(),
    };
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"bench-{prefix}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
             [workspace]\n\n[dependencies]\n{dependency}tokio = {{ version = \"1\", features = [\"rt\", \"macros\"] }}\n"
        ),
    )?;
    if kind == CrateKind::Pgskein {
        // The versions this checkout is built with.
        let lock = pgskein_root.join("Cargo.lock");
        if lock.is_file() {
            std::fs::copy(lock, dir.join("Cargo.lock"))?;
        }
    }
    for &n in sizes {
        let from = work.join(format!("n{n}")).join(match kind {
            CrateKind::Pgskein => "pgskein",
            CrateKind::Sqlx => "sqlx",
        });
        // sqlx's `migrate!` takes a path with a directory part.
        let to = dir.join(format!("migrations/m{n}"));
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(&from)? {
            let path = entry?.path();
            std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))?;
        }
        let main = match kind {
            CrateKind::Pgskein => format!(
                "static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!(\"migrations/m{n}\");\n\n\
                 #[tokio::main(flavor = \"current_thread\")]\n\
                 async fn main() {{\n\
                 \x20   let url = std::env::args().nth(1).unwrap_or_default();\n\
                 \x20   let (client, connection) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {{\n\
                 \x20       Ok(c) => c,\n\
                 \x20       Err(e) => {{ eprintln!(\"connect: {{e}}\"); std::process::exit(1) }}\n\
                 \x20   }};\n\
                 \x20   tokio::spawn(connection);\n\
                 \x20   if let Err(e) = MIGRATIONS.run(&client).await {{ eprintln!(\"run: {{e}}\"); std::process::exit(1) }}\n\
                 }}\n"
            ),
            CrateKind::Sqlx => format!(
                "use sqlx::Connection;\n\n\
                 static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!(\"migrations/m{n}\");\n\n\
                 #[tokio::main(flavor = \"current_thread\")]\n\
                 async fn main() {{\n\
                 \x20   let url = std::env::args().nth(1).unwrap_or_default();\n\
                 \x20   let mut conn = match sqlx::PgConnection::connect(&url).await {{\n\
                 \x20       Ok(c) => c,\n\
                 \x20       Err(e) => {{ eprintln!(\"connect: {{e}}\"); std::process::exit(1) }}\n\
                 \x20   }};\n\
                 \x20   if let Err(e) = MIGRATOR.run(&mut conn).await {{ eprintln!(\"run: {{e}}\"); std::process::exit(1) }}\n\
                 }}\n"
            ),
        };
        std::fs::write(dir.join(format!("src/bin/{prefix}_n{n}.rs")), main)?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shared = target.join("bench-crates");
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &shared)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = stderr.lines().find(|l| l.starts_with("error")).unwrap_or("the build failed");
        return Err(format!("building {}: {error}", dir.display()).into());
    }
    Ok(BuiltCrate { kind, label: label.to_owned(), out: shared.join("release"), prefix })
}

/// `examples/startup.rs run`: a service starting and migrating, with its
/// revisions in memory (`pgskein.bundle`, like an embedded set).
fn startup_command(startup: &Path, url: &str, dir: &Path, single: bool) -> Command {
    let mut cmd = Command::new(startup);
    cmd.arg("run").arg(url).arg(dir.join("pgskein.bundle"));
    if single {
        cmd.arg("--single");
    }
    cmd
}

fn psql_command(psql: &Path, url: &str, file: &Path, single: bool) -> Command {
    let mut cmd = Command::new(psql);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    if single {
        cmd.arg("-1");
    }
    cmd.arg("-f").arg(file).arg("-d").arg(url);
    cmd
}

/// Every generated table exists.
async fn check_tables(db: &TestDatabase, n: usize) -> Result<()> {
    let client = db.connect().await?;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'bench\\_%'",
            &[],
        )
        .await?
        .get(0);
    if count as usize != n {
        return Err(format!("expected {n} tables, found {count}").into());
    }
    Ok(())
}

/// Runs `f` on a connection made through a proxy that counts the statements
/// the client sends (simple `Query` and extended `Execute` messages).
async fn count_requests<F, Fut>(db: &TestDatabase, f: F) -> Result<usize>
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let config = db.config();
    let (Some(tokio_postgres::config::Host::Unix(dir)), Some(&port)) =
        (config.get_hosts().first().cloned(), config.get_ports().first())
    else {
        return Err("the request count needs the throwaway server's Unix socket".into());
    };
    let upstream = dir.join(format!(".s.PGSQL.{port}"));
    let proxy_dir = std::env::temp_dir().join(format!("pgskein-bench-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&proxy_dir);
    std::fs::create_dir_all(&proxy_dir)?;
    let listener = tokio::net::UnixListener::bind(proxy_dir.join(format!(".s.PGSQL.{port}")))?;
    let counter = Arc::new(AtomicUsize::new(0));
    let accept = tokio::spawn({
        let counter = Arc::clone(&counter);
        async move {
            let (client_side, _) = listener.accept().await?;
            let server_side = tokio::net::UnixStream::connect(upstream).await?;
            let (mut cr, mut cw) = client_side.into_split();
            let (mut sr, mut sw) = server_side.into_split();
            let down = tokio::spawn(async move { tokio::io::copy(&mut sr, &mut cw).await });
            let mut parser = FrontendCounter::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = cr.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                counter.fetch_add(parser.feed(&buf[..n]), Ordering::SeqCst);
                sw.write_all(&buf[..n]).await?;
            }
            let _ = sw.shutdown().await;
            let _ = down.await;
            Ok::<_, std::io::Error>(())
        }
    });
    // `host_path` adds a host to a list: start from an empty config.
    let mut proxied = tokio_postgres::Config::new();
    proxied.host_path(&proxy_dir).port(port).dbname(db.name());
    if let Some(user) = config.get_user() {
        proxied.user(user);
    }
    if let Some(password) = config.get_password() {
        proxied.password(password);
    }
    let (client, connection) = proxied.connect(tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(connection);
    let before = counter.load(Ordering::SeqCst);
    let result = f(client).await;
    let after = counter.load(Ordering::SeqCst);
    let _ = conn.await;
    let _ = accept.await;
    let _ = std::fs::remove_dir_all(&proxy_dir);
    result?;
    Ok(after - before)
}

/// Counts `Query` and `Execute` messages in a frontend byte stream.
#[derive(Default)]
struct FrontendCounter {
    pending: Vec<u8>,
    started: bool,
}

impl FrontendCounter {
    fn feed(&mut self, bytes: &[u8]) -> usize {
        self.pending.extend_from_slice(bytes);
        let mut counted = 0;
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            if !self.started {
                // Untyped: SSLRequest / GSSENCRequest / StartupMessage.
                if rest.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes(rest[0..4].try_into().unwrap()) as usize;
                if rest.len() < len {
                    break;
                }
                let code = u32::from_be_bytes(rest[4..8].try_into().unwrap());
                self.started = code == 196_608;
                at += len;
            } else {
                if rest.len() < 5 {
                    break;
                }
                let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
                if rest.len() < 1 + len {
                    break;
                }
                counted += usize::from(matches!(rest[0], b'Q' | b'E'));
                at += 1 + len;
            }
        }
        self.pending.drain(..at);
        counted
    }
}

/// Spawns `k` commands at once and waits for all: (how many succeeded, their errors).
fn spawn_all(k: usize, make: impl Fn() -> Command) -> Result<(usize, Vec<String>)> {
    let children: Vec<_> = (0..k)
        .map(|_| make().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn())
        .collect::<std::result::Result<_, _>>()?;
    let mut ok = 0;
    let mut errors = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        if out.status.success() {
            ok += 1;
        } else {
            // The last line said is the error, on stderr or (sqlx-cli) stdout.
            let (stderr, stdout) =
                (String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
            let last = |s: &str| s.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned);
            errors.push(last(&stderr).or_else(|| last(&stdout)).unwrap_or_default());
        }
    }
    Ok((ok, errors))
}

/// Runs a command to completion; an error carries its stderr.
fn run_checked(mut cmd: Command) -> Result<()> {
    run_checked_mut(&mut cmd)
}

fn run_checked_mut(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// The wall time of a command that must succeed.
fn time_checked(mut cmd: Command) -> Result<Duration> {
    time_checked_mut(&mut cmd)
}

fn time_checked_mut(cmd: &mut Command) -> Result<Duration> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    let child = cmd.spawn()?;
    let out = child.wait_with_output()?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(elapsed)
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn first_line(s: &str) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    line.chars().take(160).collect()
}

fn median(samples: &[Duration]) -> Duration {
    pct(samples, 0.5)
}

fn pct(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.3} s", ms / 1000.0)
    }
}
