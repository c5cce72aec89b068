//! The command line: global options and one struct per command, parsed by clap.

use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Subcommand, ValueEnum};

/// The pgskein commands and their shared options, as a clap [`Args`](clap::Args)
/// type: mount it as a subcommand of a service's own parser and hand it to
/// [`execute`](crate::cli::execute), or let [`run_with`](crate::cli::run_with) parse it.
///
/// ```
/// use clap::{Parser, Subcommand};
///
/// #[derive(Parser)]
/// struct Service {
///     #[command(subcommand)]
///     command: Command,
/// }
///
/// #[derive(Subcommand)]
/// enum Command {
///     /// Start serving.
///     Serve,
///     /// Manage the database schema.
///     Migrate(pgskein::cli::Args),
/// }
///
/// let parsed = Service::parse_from(["myservice", "migrate", "status", "--json"]);
/// assert!(matches!(parsed.command, Command::Migrate(_)));
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// PostgreSQL connection URL (postgres://user:password@host/db) or key=value string,
    /// with libpq's TLS options (sslmode up to verify-full, sslrootcert, sslcert, sslkey).
    /// Shown with the password masked.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub(crate) database_url: Option<String>,

    /// Directory of revision files [default: migrations, or the embedded set].
    #[arg(long, global = true, help_heading = "Global options", value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,

    /// Schema of the bookkeeping tables [default: pgskein].
    #[arg(long, global = true, help_heading = "Global options", value_name = "NAME")]
    pub(crate) schema: Option<String>,

    /// Print one JSON document on standard output instead of text.
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) json: bool,

    /// Answer yes to confirmations: needed by downgrade, stamp, resolve and repair when not on a terminal.
    #[arg(long, short = 'y', global = true, help_heading = "Global options")]
    pub(crate) yes: bool,

    /// When to use colour and progress display.
    #[arg(long, global = true, help_heading = "Global options", value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub(crate) color: ColorChoice,

    /// Accept a directory with several heads (otherwise upgrade, downgrade, stamp and check refuse it).
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) allow_multiple_heads: bool,

    /// Seconds to wait for another migrator's lock [default: 600].
    #[arg(long, global = true, help_heading = "Global options", value_name = "SECONDS")]
    pub(crate) lock_wait: Option<u64>,

    /// How runs are kept apart: auto (the advisory lock on a direct connection, the lease
    /// through a connection pooler), advisory (refuses a pooler), or lease [default: auto].
    #[arg(long, global = true, help_heading = "Global options", value_enum, value_name = "MODE")]
    pub(crate) lock_mode: Option<LockModeArg>,

    /// More log output on standard error: -v info, -vv debug (RUST_LOG overrides).
    #[arg(long, short = 'v', global = true, help_heading = "Global options", action = ArgAction::Count)]
    pub(crate) verbose: u8,

    // Boxed, so that a service's own command enum stays small.
    #[command(subcommand)]
    pub(crate) command: Box<Command>,

    /// How the operator invokes these commands, for hints (`myservice migrate`).
    #[arg(skip)]
    pub(crate) program: Option<String>,
}

impl Args {
    /// Sets the database URL unless one was given (flag or `DATABASE_URL`).
    pub fn default_database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url.get_or_insert_with(|| url.into());
        self
    }

    /// Sets the database URL, replacing one given by flag or `DATABASE_URL`.
    pub fn with_database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// The database URL given, if any. It may contain a password: do not log it.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// Names the commands in hints as the operator invokes them, e.g.
    /// `myservice migrate` when [`Args`] is mounted as the `migrate`
    /// subcommand of `myservice` (default: the program's file name).
    ///
    /// ```
    /// # use clap::Parser;
    /// # #[derive(Parser)] struct Service { #[command(subcommand)] command: Command }
    /// # #[derive(clap::Subcommand)] enum Command { Migrate(pgskein::cli::Args) }
    /// # let Command::Migrate(args) = Service::parse_from(["myservice", "migrate", "status"]).command;
    /// let args = args.with_command_name("myservice migrate");
    /// ```
    pub fn with_command_name(mut self, name: impl Into<String>) -> Self {
        self.program = Some(name.into());
        self
    }

    /// The name of the command, e.g. `status`.
    pub fn command_name(&self) -> &'static str {
        self.command.name()
    }
}

/// The lock modes the command line offers (`LockMode::DangerousNone` is for libraries only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LockModeArg {
    /// The advisory lock on a direct connection, the lease through a connection pooler.
    Auto,
    /// Always the session advisory lock; a connection pooler is refused.
    Advisory,
    /// Always the lease.
    Lease,
}

impl From<LockModeArg> for crate::config::LockMode {
    fn from(mode: LockModeArg) -> Self {
        match mode {
            LockModeArg::Auto => crate::config::LockMode::Auto,
            LockModeArg::Advisory => crate::config::LockMode::Advisory,
            LockModeArg::Lease => crate::config::LockMode::Lease,
        }
    }
}

/// When to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set or TERM is dumb.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Command {
    /// Write a new revision file whose parent is the current head.
    New(NewArgs),
    /// Show what is applied, pending, blocked or drifted. Exit 4 when the database needs attention.
    Status(StatusArgs),
    /// Print the current revisions: the applied ones nothing applied builds on.
    Current,
    /// Print the heads of the revision graph.
    Heads,
    /// Print the revisions newest first, with a graph of branches and merges.
    History,
    /// Print the revision graph as Graphviz dot or Mermaid.
    Graph(GraphArgs),
    /// Apply what a target needs [default target: heads].
    Upgrade(UpgradeArgs),
    /// Revert revisions down to a target (asks for confirmation).
    Downgrade(DowngradeArgs),
    /// Record the database as being at a target without running SQL (asks for confirmation).
    Stamp(StampArgs),
    /// Re-run the verify sections of the applied revisions. Exit 4 when one fails.
    Verify,
    /// Validate the revision graph and lint the SQL for long or heavy locks.
    Check(CheckArgs),
    /// Print the steps an upgrade or downgrade to a target would run, or its SQL script.
    Plan(PlanArgs),
    /// Check connectivity, privileges, extensions and blocking sessions before a run.
    Preflight(PreflightArgs),
    /// Settle a failed or interrupted `transaction none` revision (asks for confirmation).
    #[command(group(ArgGroup::new("how").required(true).args(["retry", "mark_applied", "mark_reverted"])))]
    Resolve(ResolveArgs),
    /// Write a merge revision of the current heads.
    Merge(MergeArgs),
    /// Record the current checksums of applied revisions after an intentional edit (asks for confirmation).
    Repair,
    /// Show, run, pause or resume the data backfills.
    #[command(subcommand)]
    Backfill(BackfillCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum BackfillCommand {
    /// Every declared backfill: its revision, state and rows done.
    Status,
    /// Run the eligible backfills to completion, one after the other (progress bar on a terminal).
    Run,
    /// Pause a backfill: no process runs it until it is resumed.
    Pause(BackfillName),
    /// Resume a paused backfill; the next run (or `backfill run`) continues it.
    Resume(BackfillName),
    /// Reset a done, failed or paused backfill to pending: the next run starts it over (asks for confirmation).
    Reset(ResetArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ResetArgs {
    /// The backfill's name.
    pub(crate) name: String,
    /// Reset it even while another session runs it (that session starts it over).
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BackfillName {
    /// The backfill's name.
    pub(crate) name: String,
}

impl Command {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::New(_) => "new",
            Command::Status(_) => "status",
            Command::Current => "current",
            Command::Heads => "heads",
            Command::History => "history",
            Command::Graph(_) => "graph",
            Command::Upgrade(_) => "upgrade",
            Command::Downgrade(_) => "downgrade",
            Command::Stamp(_) => "stamp",
            Command::Verify => "verify",
            Command::Check(_) => "check",
            Command::Plan(_) => "plan",
            Command::Preflight(_) => "preflight",
            Command::Resolve(_) => "resolve",
            Command::Merge(_) => "merge",
            Command::Repair => "repair",
            Command::Backfill(_) => "backfill",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NewArgs {
    /// What the revision does, as a short slug: `add_users` makes `0011_add_users.sql`.
    pub(crate) slug: String,
    /// Parent revisions [default: the current head]; `base` makes a new root.
    #[arg(long, value_delimiter = ',', value_name = "REVISION")]
    pub(crate) revises: Vec<String>,
    /// Revisions on other branches this one needs applied first.
    #[arg(long, value_delimiter = ',', value_name = "REVISION")]
    pub(crate) depends_on: Vec<String>,
    /// A branch label for the revision.
    #[arg(long, value_name = "LABEL")]
    pub(crate) branch: Option<String>,
    /// Declare `transaction none` (for CREATE INDEX CONCURRENTLY and the like).
    #[arg(long)]
    pub(crate) no_transaction: bool,
    /// A repeatable revision (views, functions): outside the graph, re-applied when the file changes.
    #[arg(long, conflicts_with_all = ["revises", "depends_on", "branch"])]
    pub(crate) repeatable: bool,
    /// The one-line description [default: the slug in words].
    #[arg(long, short = 'm')]
    pub(crate) message: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatusArgs {
    /// Also exit 4 when revisions are pending (for health checks).
    #[arg(long)]
    pub(crate) require_head: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GraphArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub(crate) format: GraphFormat,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunOptions {
    /// Run `pg_dump --format=custom` into FILE first, when there is something to do
    /// (`PGSKEIN_PG_DUMP` names the program, default `pg_dump`).
    #[arg(long, value_name = "FILE")]
    pub(crate) backup: Option<PathBuf>,
    /// Run the whole plan in one transaction: all of it is applied, or none.
    /// With --sql: a script for `psql -1`, without transaction statements.
    #[arg(long)]
    pub(crate) single_transaction: bool,
    /// Print the SQL script the run would execute instead of running it.
    #[arg(long, conflicts_with = "backup")]
    pub(crate) sql: bool,
    /// Skip the pre-flight checks (privileges, extensions, sessions holding locks).
    #[arg(long)]
    pub(crate) no_preflight: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct UpgradeArgs {
    /// head, heads, +N, <branch>@head, @<release>, or a revision id or unique prefix.
    pub(crate) target: Option<String>,
    #[command(flatten)]
    pub(crate) run: RunOptions,
}

#[derive(Debug, Clone, clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct DowngradeArgs {
    /// base, -N, or a revision (id or unique prefix) that stays applied.
    pub(crate) target: String,
    #[command(flatten)]
    pub(crate) run: RunOptions,
}

#[derive(Debug, Clone, clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct StampArgs {
    /// The target the ledger should say the database is at: head, heads, base, ±N, a revision.
    pub(crate) target: String,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CheckArgs {
    /// Exit 4 when there are lint warnings.
    #[arg(long)]
    pub(crate) strict: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct PlanArgs {
    /// The target [default: heads]; base, -N and applied revisions plan a downgrade.
    pub(crate) target: Option<String>,
    /// Print the SQL script (with the bookkeeping statements) instead of the steps.
    #[arg(long)]
    pub(crate) sql: bool,
    /// With --sql: a script for `psql -1`, without transaction statements.
    #[arg(long, requires = "sql")]
    pub(crate) single_transaction: bool,
}

#[derive(Debug, Clone, clap::Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct PreflightArgs {
    /// The target [default: heads].
    pub(crate) target: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ResolveArgs {
    /// The failed or running revision: its id or a prefix of it.
    pub(crate) revision: String,
    /// Resume at the statement that failed, after dropping an invalid index it left.
    #[arg(long)]
    pub(crate) retry: bool,
    /// Record it as applied: a failed up whose remaining statements were run by hand,
    /// or a failed down whose statements were undone by hand.
    #[arg(long)]
    pub(crate) mark_applied: bool,
    /// Record it as not applied: a failed up that was undone by hand (the next run
    /// applies it again), or a failed down whose remaining statements were run by hand.
    #[arg(long)]
    pub(crate) mark_reverted: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MergeArgs {
    /// The revisions to merge [default: every head].
    pub(crate) revisions: Vec<String>,
    /// The one-line description [default: "Merge <heads>"].
    #[arg(long, short = 'm')]
    pub(crate) message: Option<String>,
    /// The file's slug: `0012_<slug>.sql`.
    #[arg(long, default_value = "merge")]
    pub(crate) slug: String,
}
