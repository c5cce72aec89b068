//! The operator CLI (feature `cli`): the commands of the `pgskein` binary,
//! and the same commands for a service's own binary over its embedded
//! migrations.
//!
//! The standalone binary reads revision files from `--dir` (default
//! `migrations`). A service embeds the commands in one call, over the set it
//! already bundles (no files on disk, the service's [`Config`]
//! and hooks):
//!
//! ```no_run
//! static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
//!
//! fn main() -> std::process::ExitCode {
//!     // `myservice status`, `myservice upgrade`, ... (`upgrade` at head parses nothing)
//!     pgskein::cli::run_with(MIGRATIONS, std::env::args_os())
//! }
//! ```
//!
//! or mounts [`Args`] as a subcommand of its own clap parser
//! (`myservice migrate status`) and calls [`execute`] from async code; see
//! `examples/embedded_cli.rs`. With `--dir`, the embedded commands read the
//! files of a directory (to write a revision with `new`, or to check the
//! source tree) and keep the service's Rust-coded revisions and backfills. Commands, output, JSON shapes and exit codes
//! are documented in `docs/cli.md`; the codes are also in [`exit`].

mod args;
mod commands;
mod interrupt;
mod progress;
mod render;
mod scaffold;
mod ui;
mod view;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use clap::{FromArgMatches, Parser};

pub use args::Args;

use crate::connstr::{ConnStr, ConnStrError};
use crate::error::BoxError;
use crate::{Config, Hooks, MigrationSet, Migrator, Plan};
use ui::Ui;

/// The exit codes of every command.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An error: the database, a revision that failed, invalid migration files, I/O.
    pub const ERROR: u8 = 1;
    /// The command line is wrong: an unknown option, a missing argument, a target that names nothing.
    pub const USAGE: u8 = 2;
    /// A destructive command was not confirmed (no terminal and no `--yes`, or answered no).
    pub const REFUSED: u8 = 3;
    /// The database needs attention: a failed or running `transaction none` revision, changed
    /// checksums, a diverged history, a failed verify section, or what `status --require-head`
    /// and `check --strict` are asked to flag.
    pub const ATTENTION: u8 = 4;
    /// Timed out waiting for a lock: the migration lock, or a table lock (`lock_timeout`).
    pub const LOCK_TIMEOUT: u8 = 5;
}

/// The `pgskein` binary: parses the process's arguments and runs one command
/// over the revision files of `--dir`.
pub fn main() -> ExitCode {
    let matches = match Standalone::try_parse_from(std::env::args_os()) {
        Ok(m) => m,
        Err(e) => return clap_exit(&e),
    };
    block_on(None, Config::default(), matches.args, "pgskein".to_owned())
}

/// Runs one command over `migrator`'s migrations and configuration, parsing
/// `args` (the first being the program's name, as in `std::env::args_os()`).
/// Blocks on a runtime of its own: from async code, use [`execute`].
///
/// `--dir` switches to the revision files of a directory; `new` and `merge`,
/// which write files, need it.
pub fn run_with<M, I, T>(migrator: M, args: I) -> ExitCode
where
    M: Migrator,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args = args.into_iter().map(Into::into).peekable();
    let name = args
        .peek()
        .and_then(|a| std::path::Path::new(a).file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "migrate".to_owned());
    let name_for_hints = name.clone();
    let command = <Args as clap::Args>::augment_args(clap::Command::new(name))
        .about("Database migrations: status, upgrade, downgrade, history and more (pgskein)");
    let parsed = command.try_get_matches_from(args).and_then(|m| Args::from_arg_matches(&m));
    match parsed {
        Ok(args) => block_on(Some(&migrator), migrator.config().into_owned(), args, name_for_hints),
        Err(e) => clap_exit(&e),
    }
}

/// Runs one parsed command over `migrator`'s migrations and configuration,
/// on the caller's runtime. Prints to standard output and error, and returns
/// the exit code; never exits the process.
///
/// Hints name the commands as the program's file name followed by the
/// command (`myservice upgrade`); when [`Args`] is mounted under a
/// subcommand, say so with [`Args::with_command_name`] (`myservice migrate`).
///
/// ```no_run
/// # async fn run(set: pgskein::MigrationSet, args: pgskein::cli::Args) {
/// let code = pgskein::cli::execute(&set, args).await;
/// # }
/// ```
pub async fn execute<M: Migrator>(migrator: &M, args: Args) -> ExitCode {
    let program = std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "pgskein".to_owned());
    ExitCode::from(run(Some(migrator), migrator.config().into_owned(), args, program).await)
}

#[derive(Parser)]
#[command(
    name = "pgskein",
    version,
    about = "PostgreSQL migrations: a revision graph, advisory-locked runs, upgrade and downgrade to any target",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 refused (needs --yes), 4 needs attention, 5 lock timeout.\n\
                  Documentation: docs/cli.md"
)]
struct Standalone {
    #[command(flatten)]
    args: Args,
}

fn clap_exit(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK })
}

fn block_on(set: Option<&dyn Migrations>, config: Config, args: Args, program: String) -> ExitCode {
    init_logging(args.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    ExitCode::from(runtime.block_on(run(set, config, args, program)))
}

/// Library events on standard error: by default only the migration lock's
/// (who holds it while we wait). Ignored when the program has a subscriber.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "off,pgskein::lock=info",
        1 => "warn,pgskein=info",
        _ => "info,pgskein=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `program` is how the commands are invoked, unless `args` says otherwise.
async fn run(embedded: Option<&dyn Migrations>, config: Config, args: Args, program: String) -> u8 {
    let bin = args.program.clone().unwrap_or(program);
    let mut ui = Ui::new(args.json, args.color, bin);
    let conn = args.database_url.as_deref().map(ConnStr::parse);
    // Nothing shown is cut from the connection string, so this is a second
    // line of defence: against a password echoed by something else.
    if let Some(password) = conn.as_ref().and_then(|c| c.as_ref().ok()).and_then(ConnStr::password) {
        ui.hide(&String::from_utf8_lossy(password));
        ui.hide(&crate::connstr::percent_encode(password, false));
    }
    let mut config = config;
    if let Some(schema) = &args.schema {
        config = config.schema(schema.clone());
    }
    if let Some(secs) = args.lock_wait {
        config = config.lock_wait_timeout(Some(std::time::Duration::from_secs(secs)));
    }
    if let Some(mode) = args.lock_mode {
        config = config.lock_mode(mode.into());
    }
    let interrupt = Arc::new(interrupt::Interrupt::default());
    let ctx = Ctx { args: &args, ui, embedded, config, conn, interrupt: interrupt.clone() };
    let outcome = tokio::select! {
        outcome = commands::dispatch(&ctx) => outcome,
        () = interrupt.watch() => return interrupt::INTERRUPTED,
    };
    match outcome {
        Ok(code) => code,
        Err(f) => {
            let f = f.with_command_hint(&ctx.ui.bin);
            ctx.ui.failure(&f);
            f.code
        }
    }
}

/// A service's migrations as the commands see them: loaded (and checked)
/// when a command needs the revisions, which `upgrade` at head does not.
pub(crate) trait Migrations: Sync {
    fn set(&self) -> Result<&MigrationSet, crate::Error>;
    fn known_fingerprint(&self) -> Option<&str>;
}

impl<M: Migrator> Migrations for M {
    fn set(&self) -> Result<&MigrationSet, crate::Error> {
        self.migrations()
    }
    fn known_fingerprint(&self) -> Option<&str> {
        Migrator::known_fingerprint(self)
    }
}

/// What every command gets: the parsed arguments, the output, the source
/// of the migrations and the settings.
pub(crate) struct Ctx<'a> {
    pub(crate) args: &'a Args,
    pub(crate) ui: Ui,
    /// The service's migrations (an embedded CLI); `None` for the standalone binary.
    pub(crate) embedded: Option<&'a dyn Migrations>,
    pub(crate) config: Config,
    /// `--database-url` or `DATABASE_URL`, read once.
    pub(crate) conn: Option<Result<ConnStr, ConnStrError>>,
    /// Signals while the command runs.
    pub(crate) interrupt: Arc<interrupt::Interrupt>,
}

/// The migrator a command runs: the loaded set with the CLI's settings.
pub(crate) type Run<'a> = crate::Configured<&'a MigrationSet>;

/// `--backup FILE`: `pg_dump --format=custom` before a run that has work to do,
/// with the lock held, so no other migrator runs between the dump and the run.
/// pg_dump's command line holds no connection setting: they go in libpq's
/// environment variables, the password in a private passfile.
struct Backup {
    file: std::path::PathBuf,
    conn: ConnStr,
    taken: Arc<AtomicBool>,
}

#[async_trait]
impl Hooks for Backup {
    async fn before_run(&self, _plan: &Plan) -> Result<(), BoxError> {
        let program = std::env::var_os("PGSKEIN_PG_DUMP").unwrap_or_else(|| "pg_dump".into());
        let mut cmd = std::process::Command::new(&program);
        cmd.arg("--format=custom").arg("--file").arg(&self.file);
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        // Kept until pg_dump has exited: dropping it removes the passfile.
        let env = self.conn.child_env().map_err(|e| -> BoxError {
            format!("cannot write the passfile for {}: {e}", program.to_string_lossy()).into()
        })?;
        env.apply(&mut cmd);
        let output = tokio::process::Command::from(cmd).kill_on_drop(true).output().await.map_err(
            |e| -> BoxError {
                format!(
                    "cannot run {}: {e}; install the PostgreSQL client tools or set PGSKEIN_PG_DUMP",
                    program.to_string_lossy()
                )
                .into()
            },
        )?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
            return Err(format!("pg_dump failed ({}): {last}", output.status).into());
        }
        self.taken.store(true, Ordering::Relaxed);
        Ok(())
    }
}
