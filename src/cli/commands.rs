//! One function per command: load the set, connect when needed, call the
//! library, show what it found (a view of `super::view`), and return the
//! exit code.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::Client;

use super::args::{
    BackfillCommand, CheckArgs, Command, DowngradeArgs, GraphArgs, MergeArgs, NewArgs, PlanArgs,
    PreflightArgs, ResolveArgs, RunOptions, StampArgs, StatusArgs, UpgradeArgs,
};
use super::progress::{Bars, StepBar};
use super::scaffold;
use super::ui::{Failure, Style, count, ids, list_or, warning_text};
use super::view::{self, blocking, problem_kind};
use super::{Backup, Ctx, Run, exit};
use crate::backfill::{BackfillState, Reset};
use crate::config::TransactionMode;
use crate::connstr::{self, ConnStr};
use crate::preflight::Preflight;
use crate::report::Direction;
use crate::status::Resolution;
use crate::{Config, Error, MigrationSet, Migrator, Report, RevisionId, Target};

pub(crate) async fn dispatch(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    match &*ctx.args.command {
        Command::New(a) => new(ctx, a),
        Command::Status(a) => status(ctx, a).await,
        Command::Current => current(ctx).await,
        Command::Heads => heads(ctx),
        Command::History => history(ctx),
        Command::Graph(a) => graph(ctx, a),
        Command::Upgrade(a) => upgrade(ctx, a).await,
        Command::Downgrade(a) => downgrade(ctx, a).await,
        Command::Stamp(a) => stamp(ctx, a).await,
        Command::Verify => verify(ctx).await,
        Command::Check(a) => check(ctx, a),
        Command::Plan(a) => plan(ctx, a).await,
        Command::Preflight(a) => preflight(ctx, a).await,
        Command::Resolve(a) => resolve(ctx, a).await,
        Command::Merge(a) => merge(ctx, a),
        Command::Repair => repair(ctx).await,
        Command::Backfill(c) => backfill(ctx, c).await,
    }
}

impl Ctx<'_> {
    fn dir(&self) -> PathBuf {
        self.args.dir.clone().unwrap_or_else(|| PathBuf::from("migrations"))
    }

    /// Whether the set comes from files (the standalone binary, or `--dir`).
    fn uses_files(&self) -> bool {
        self.embedded.is_none() || self.args.dir.is_some()
    }

    /// The embedded set, or the directory's, which may have several heads
    /// (so that `heads`, `history` and `merge` work on it).
    fn load(&self) -> Result<Cow<'_, MigrationSet>, Failure> {
        if let (Some(m), false) = (self.embedded, self.uses_files()) {
            return m.set().map(Cow::Borrowed).map_err(|e| self.load_failure(e));
        }
        self.files()?.build().map(Cow::Owned).map_err(|e| self.load_failure(e))
    }

    /// What [`load`](Ctx::load) loads, not parsed yet: the directory's files
    /// read, or the service's migrations as given. A run towards every head
    /// first compares its fingerprint with the database's.
    fn source(&self) -> Result<Source<'_>, Failure> {
        match (self.embedded, self.uses_files()) {
            (Some(m), false) => Ok(Source::Service(m)),
            _ => self.files()?.lazy().map(|l| Source::Files(Box::new(l))).map_err(|e| self.load_failure(e)),
        }
    }

    /// The directory's files, with the embedded set's Rust-coded revisions
    /// and backfills when there is one (`myservice migrate --dir migrations`).
    fn files(&self) -> Result<crate::SetBuilder, Failure> {
        let builder = match self.embedded {
            Some(m) => m.set().map_err(|e| self.load_failure(e))?.without_files(),
            None => crate::SetBuilder::default(),
        };
        Ok(builder.dir(self.dir()).allow_multiple_heads(true))
    }

    fn load_failure(&self, e: Error) -> Failure {
        let not_found =
            matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
        let f = Failure::from(e);
        if not_found {
            f.hint(format!("run {} in the project directory, or pass --dir", self.ui.bin))
        } else {
            f
        }
    }

    /// `set`, with progress bars for its backfills when they are drawn.
    fn with_bars<'s>(
        &self,
        set: Cow<'s, MigrationSet>,
        bars: &Option<std::sync::Arc<Bars>>,
    ) -> Cow<'s, MigrationSet> {
        match bars {
            Some(bars) if !set.declared_backfills().is_empty() => {
                let mut set = set.into_owned();
                bars.on_backfills(&mut set);
                Cow::Owned(set)
            }
            _ => set,
        }
    }

    /// The progress bars of a command that runs steps or backfills, on a terminal.
    fn bars(&self) -> Option<std::sync::Arc<Bars>> {
        self.ui.progress.then(Bars::new)
    }

    /// Refuses a directory with several heads for commands that write, as
    /// the library's loader does, unless `--allow-multiple-heads`.
    fn single_head(&self, set: &MigrationSet) -> Result<(), Failure> {
        let heads = set.heads();
        if self.uses_files() && !self.args.allow_multiple_heads && heads.len() > 1 {
            let heads = heads.into_iter().cloned().collect();
            return Err(Failure::from(Error::MultipleHeads { heads })
                .hint(format!("merge them with `{} merge`, or pass --allow-multiple-heads", self.ui.bin)));
        }
        Ok(())
    }

    /// The connection, for people: rebuilt without the password.
    fn database(&self) -> String {
        self.conn.as_ref().and_then(|c| c.as_ref().ok()).map(ConnStr::display).unwrap_or_default()
    }

    /// The parsed connection string, or why there is none.
    fn conn(&self) -> Result<&ConnStr, Failure> {
        match &self.conn {
            None => Err(Failure::new(
                exit::USAGE,
                "no_database",
                "no database given: set DATABASE_URL or pass --database-url",
            )),
            Some(Err(e)) => {
                Err(Failure::new(exit::USAGE, "invalid_database_url", "invalid database URL").caused_by(e))
            }
            Some(Ok(conn)) => Ok(conn),
        }
    }

    async fn connect(&self) -> Result<Client, Failure> {
        let mut conn = self.conn()?.clone();
        let config = conn.config_mut();
        if config.get_application_name().is_none() {
            config.application_name("pgskein");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let (client, connection) = connstr::connect(&conn).await.map_err(|e| {
            let (code, kind) = match e {
                connstr::ConnectError::Setup(_) => (exit::USAGE, "tls_setup"),
                connstr::ConnectError::Connect(_) => (exit::ERROR, "connect"),
            };
            let f = Failure::new(code, kind, format!("cannot connect to {}", conn.display())).caused_by(&e);
            match connstr::hint(&conn, &e) {
                Some(hint) => f.hint(hint),
                None => f,
            }
        })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.interrupt.register(client.cancel_token(), connstr::tls::connector(conn.tls_options()).ok());
        Ok(client)
    }

    fn runner<'s>(&self, set: &'s MigrationSet) -> Run<'s> {
        set.with_config(self.config.clone())
    }

    /// The migrator of a run, with the progress bar and the backup hook.
    fn run_config(
        &self,
        opts: &RunOptions,
        bars: &Option<Arc<Bars>>,
    ) -> Result<(Config, Arc<AtomicBool>), Failure> {
        // First of the hooks: an interrupt while waiting for the lock stops
        // the run before the backup is taken.
        let mut config =
            self.config.clone().add_hooks(super::interrupt::StopOnInterrupt(self.interrupt.clone()));
        if opts.single_transaction {
            config = config.transaction_mode(TransactionMode::Single);
        }
        let taken = Arc::new(AtomicBool::new(false));
        if let Some(file) = &opts.backup {
            config = config.add_hooks(Backup {
                file: file.clone(),
                conn: self.conn()?.clone(),
                taken: taken.clone(),
            });
        }
        if let Some(bars) = bars {
            config = config.add_hooks(StepBar(Arc::clone(bars)));
        }
        Ok((config, taken))
    }
}

/// Parses a target and checks that what it names exists in the set, so a
/// misspelt revision is a usage error before connecting.
fn parse_target(set: &MigrationSet, text: &str) -> Result<Target, Failure> {
    let target = text.parse::<Target>().map_err(Failure::from)?;
    if matches!(target, Target::Head | Target::BranchHead(_) | Target::Revision(_)) {
        set.plan_from(std::iter::empty(), &target).map_err(Failure::from)?;
    }
    Ok(target)
}

// ----- reading the graph: no database -----

fn heads(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let heads = set.heads().into_iter().filter_map(|h| set.get(h.as_str())).collect();
    ctx.ui.show(&view::Heads { heads });
    Ok(exit::OK)
}

fn history(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    ctx.ui.show(&view::History { set: &set });
    Ok(exit::OK)
}

fn graph(ctx: &Ctx<'_>, a: &GraphArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    ctx.ui.show(&view::Graph { set: &set, format: a.format });
    Ok(exit::OK)
}

fn check(ctx: &Ctx<'_>, a: &CheckArgs) -> Result<u8, Failure> {
    let loaded = if ctx.uses_files() {
        match ctx.files() {
            Ok(files) => files
                .build_reporting_all()
                .map(Cow::Owned)
                .map_err(|errors| errors.into_iter().map(|e| ctx.load_failure(e)).collect()),
            Err(f) => Err(vec![f]),
        }
    } else {
        ctx.load().map_err(|f| vec![f])
    };
    let set = match loaded {
        Ok(set) => set,
        Err(failures) => return Ok(load_errors(ctx, failures)),
    };
    let mut errors = Vec::new();
    let heads: Vec<&str> = set.heads().into_iter().map(|h| h.as_str()).collect();
    if ctx.uses_files() && heads.len() > 1 && !ctx.args.allow_multiple_heads {
        let owned = set.heads().into_iter().cloned().collect();
        errors.push(Error::MultipleHeads { heads: owned }.to_string());
    }
    let check = view::Check { revisions: set.len(), heads, errors, warnings: set.lint() };
    ctx.ui.show(&check);
    Ok(if !check.errors.is_empty() {
        exit::ERROR
    } else if a.strict && !check.warnings.is_empty() {
        exit::ATTENTION
    } else {
        exit::OK
    })
}

/// Shows every error of a set that did not load and returns the first one's
/// exit code.
fn load_errors(ctx: &Ctx<'_>, failures: Vec<Failure>) -> u8 {
    let code = failures.first().map_or(exit::ERROR, |f| f.code);
    ctx.ui.show(&view::LoadErrors { failures });
    code
}

// ----- writing revision files -----

fn writable_dir(ctx: &Ctx<'_>, command: &str) -> Result<PathBuf, Failure> {
    if !ctx.uses_files() {
        return Err(Failure::new(
            exit::USAGE,
            "needs_dir",
            format!(
                "`{command}` writes a revision file: pass --dir with the migrations directory of the source tree"
            ),
        ));
    }
    Ok(ctx.dir())
}

fn known(set: &MigrationSet, id: &str) -> Result<String, Failure> {
    match set.get(id) {
        Some(r) => Ok(r.id().to_string()),
        None => Err(Failure::from(Error::UnknownTarget { target: id.to_owned() })),
    }
}

fn new(ctx: &Ctx<'_>, a: &NewArgs) -> Result<u8, Failure> {
    let dir = writable_dir(ctx, "new")?;
    let slug = scaffold::slugify(&a.slug).ok_or_else(|| {
        Failure::new(exit::USAGE, "bad_slug", format!("slug {:?} has no letters or digits", a.slug))
    })?;
    let set = if dir.exists() { Some(ctx.load()?) } else { None };
    let heads: Vec<String> =
        set.as_ref().map(|s| s.heads().into_iter().map(|h| h.to_string()).collect()).unwrap_or_default();
    let revises: Vec<String> = match a.revises.as_slice() {
        _ if a.repeatable => Vec::new(),
        [base] if base == "base" => Vec::new(),
        [] if heads.len() > 1 => {
            return Err(Failure::new(
                exit::USAGE,
                "multiple_heads",
                format!("there are several heads ({}): say which with --revises", heads.join(", ")),
            )
            .hint(format!("or merge them first with `{} merge`", ctx.ui.bin)));
        }
        [] => heads,
        given => {
            let empty = MigrationSet::builder().build().expect("an empty set is valid");
            let set = set.as_deref().unwrap_or(&empty);
            given.iter().map(|id| known(set, id)).collect::<Result<_, _>>()?
        }
    };
    let depends_on: Vec<String> = match set.as_deref() {
        Some(set) => a.depends_on.iter().map(|id| known(set, id)).collect::<Result<_, _>>()?,
        None if a.depends_on.is_empty() => Vec::new(),
        None => return Err(Failure::from(Error::UnknownTarget { target: a.depends_on[0].clone() })),
    };
    if let Some(b) = &a.branch {
        RevisionId::new(b.clone()).map_err(|reason| {
            Failure::new(exit::USAGE, "bad_branch", format!("bad branch label: {reason}"))
        })?;
    }
    let (number, width) = scaffold::next_number(&dir).map_err(|e| io_failure(&dir, e))?;
    let id = format!("{number:0width$}_{slug}");
    RevisionId::new(id.clone()).map_err(|reason| Failure::new(exit::USAGE, "bad_slug", reason))?;
    let message = a.message.clone().unwrap_or_else(|| {
        let words = slug.replace('_', " ");
        let mut chars = words.chars();
        chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
    });
    let text = scaffold::render(&scaffold::NewFile {
        revises: &revises,
        depends_on: &depends_on,
        branch: a.branch.as_deref(),
        no_transaction: a.no_transaction,
        repeatable: a.repeatable,
        message: &message,
        merge: false,
    });
    let path =
        scaffold::write(&dir, &id, &text).map_err(|e| io_failure(&dir.join(format!("{id}.sql")), e))?;
    ctx.ui.show(&view::Created {
        id,
        path,
        revises,
        depends_on,
        branch: a.branch.clone(),
        no_transaction: a.no_transaction,
        repeatable: a.repeatable,
        message,
    });
    Ok(exit::OK)
}

fn io_failure(path: &std::path::Path, e: std::io::Error) -> Failure {
    Failure::from(Error::Io { path: path.display().to_string(), source: e })
}

fn merge(ctx: &Ctx<'_>, a: &MergeArgs) -> Result<u8, Failure> {
    let dir = writable_dir(ctx, "merge")?;
    let set = ctx.load()?;
    let parents: Vec<String> = if a.revisions.is_empty() {
        set.heads().into_iter().map(|h| h.to_string()).collect()
    } else {
        a.revisions.iter().map(|id| known(&set, id)).collect::<Result<_, _>>()?
    };
    if parents.len() < 2 {
        return Err(Failure::new(
            exit::ERROR,
            "nothing_to_merge",
            format!(
                "nothing to merge: {} is the only head",
                list_or(&parents.iter().map(String::as_str).collect::<Vec<_>>(), "nothing")
            ),
        ));
    }
    let slug = scaffold::slugify(&a.slug).ok_or_else(|| {
        Failure::new(exit::USAGE, "bad_slug", format!("slug {:?} has no letters or digits", a.slug))
    })?;
    let (number, width) = scaffold::next_number(&dir).map_err(|e| io_failure(&dir, e))?;
    let id = format!("{number:0width$}_{slug}");
    RevisionId::new(id.clone()).map_err(|reason| Failure::new(exit::USAGE, "bad_slug", reason))?;
    let message = a.message.clone().unwrap_or_else(|| match parents.split_last() {
        Some((last, rest)) => format!("Merge {} and {last}", rest.join(", ")),
        None => String::new(),
    });
    let text = scaffold::render(&scaffold::NewFile {
        revises: &parents,
        depends_on: &[],
        branch: None,
        no_transaction: false,
        repeatable: false,
        message: &message,
        merge: true,
    });
    let path =
        scaffold::write(&dir, &id, &text).map_err(|e| io_failure(&dir.join(format!("{id}.sql")), e))?;
    ctx.ui.show(&view::Merged { id, path, revises: parents, message });
    Ok(exit::OK)
}

// ----- reading the database -----

async fn status(ctx: &Ctx<'_>, a: &StatusArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let status = ctx.runner(&set).status(&client).await?;
    let backfills = if set.declared_backfills().is_empty() {
        Vec::new()
    } else {
        ctx.runner(&set).backfills()?.status(&client).await?
    };
    let status = view::Status {
        database: ctx.database(),
        schema: ctx.config.schema_name().to_owned(),
        status,
        revisions: set.len(),
        has_releases: set.revisions().any(|r| r.release().is_some()),
        backfills,
    };
    ctx.ui.show(&status);
    let behind = a.require_head && !status.status.pending.is_empty();
    Ok(if status.needs_attention() || behind { exit::ATTENTION } else { exit::OK })
}

async fn current(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let st = ctx.runner(&set).status(&client).await?;
    ctx.ui.show(&view::Current { current: st.current });
    Ok(exit::OK)
}

async fn plan(ctx: &Ctx<'_>, a: &PlanArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let target = a.target.as_deref().map_or(Ok(Target::Heads), |t| parse_target(&set, t))?;
    let client = ctx.connect().await?;
    let m = ctx.runner(&set);
    if a.sql {
        return print_sql(ctx, &m, &client, &target, a.single_transaction).await;
    }
    let plan = m.plan(&client, &target).await?;
    ctx.ui.show(&view::Plan { target: &target, plan });
    Ok(exit::OK)
}

async fn print_sql(
    ctx: &Ctx<'_>,
    m: &Run<'_>,
    client: &Client,
    target: &Target,
    single_transaction: bool,
) -> Result<u8, Failure> {
    let style = if single_transaction { TransactionMode::Single } else { TransactionMode::PerRevision };
    let script = m.sql(client, target, style).await?;
    ctx.ui.show(&view::Sql { target, single_transaction, script });
    Ok(exit::OK)
}

async fn verify(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let report = ctx.runner(&set).verify(&client).await?;
    let verify = view::Verify { report };
    ctx.ui.show(&verify);
    Ok(if verify.report.failed.is_empty() { exit::OK } else { exit::ATTENTION })
}

async fn preflight(ctx: &Ctx<'_>, a: &PreflightArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let target = a.target.as_deref().map_or(Ok(Target::Heads), |t| parse_target(&set, t))?;
    let client = ctx.connect().await?;
    let found = ctx.runner(&set).preflight(&client, &target).await?;
    let preflight = view::Preflight { database: ctx.database(), target: &target, found };
    ctx.ui.show(&preflight);
    Ok(if preflight.stopping() == 0 { exit::OK } else { exit::ATTENTION })
}

/// Runs the pre-flight checks before a run: a missing privilege or extension
/// stops it before anything is touched; the other findings are warnings.
async fn preflight_gate(
    ctx: &Ctx<'_>,
    m: &Run<'_>,
    client: &Client,
    target: &Target,
    skip: bool,
) -> Result<(), Failure> {
    if skip {
        return Ok(());
    }
    let found: Preflight = m.preflight(client, target).await?;
    if found.plan.is_empty() {
        return Ok(());
    }
    let (stopping, notes): (Vec<_>, Vec<_>) = found.problems.iter().partition(|p| blocking(p.kind));
    for p in &notes {
        ctx.ui.note(format!(
            "{}: {} [{}]",
            ctx.ui.paint_err(Style::Yellow, "warning"),
            p.message,
            problem_kind(p.kind)
        ));
    }
    if stopping.is_empty() {
        return Ok(());
    }
    let mut failure = Failure::new(
        exit::ATTENTION,
        "preflight_failed",
        format!(
            "pre-flight checks found {} that would stop the run part-way; nothing was changed",
            count(stopping.len(), "problem")
        ),
    );
    failure.causes = stopping.iter().map(|p| format!("{} [{}]", p.message, problem_kind(p.kind))).collect();
    Err(failure.hint("fix them and run again, or pass --no-preflight to run anyway"))
}

// ----- changing the database -----

/// Where a command's revisions come from, read but not parsed.
enum Source<'c> {
    /// The files of `--dir` (with an embedded CLI's Rust-coded revisions and backfills).
    Files(Box<crate::LazySet>),
    /// The migrations of the service that embeds the CLI.
    Service(&'c dyn super::Migrations),
}

impl Source<'_> {
    fn known_fingerprint(&self) -> Option<&str> {
        match self {
            Source::Files(files) => crate::Migrator::known_fingerprint(&**files),
            Source::Service(m) => m.known_fingerprint(),
        }
    }

    fn set(&self) -> Result<&MigrationSet, Error> {
        match self {
            Source::Files(files) => files.set(),
            Source::Service(m) => m.set(),
        }
    }
}

async fn upgrade(ctx: &Ctx<'_>, a: &UpgradeArgs) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    // Towards every head, the files are parsed and checked only when the
    // database does not hold exactly them already (docs/running.md).
    let towards_heads = !a.run.sql && matches!(a.target.as_deref(), None | Some("heads"));
    let (source, connected) = if towards_heads {
        let (source, client, meta) = fast_path(ctx).await?;
        if source.known_fingerprint().is_some_and(|digest| meta.at(digest)) {
            return Ok(nothing_to_do(ctx, &a.run, started.elapsed()));
        }
        (source, Some(client))
    } else {
        (ctx.source()?, None)
    };
    // The fast path's query was asked above, and found work.
    let asked = connected.is_some();
    let bars = ctx.bars();
    let set = ctx.with_bars(Cow::Borrowed(source.set().map_err(|e| ctx.load_failure(e))?), &bars);
    ctx.single_head(&set)?;
    let target = a.target.as_deref().map_or(Ok(Target::Heads), |t| parse_target(&set, t))?;
    let client = match connected {
        Some(client) => client,
        None => ctx.connect().await?,
    };
    if a.run.sql {
        return print_sql(ctx, &ctx.runner(&set), &client, &target, a.run.single_transaction).await;
    }
    preflight_gate(ctx, &ctx.runner(&set), &client, &target, a.run.no_preflight).await?;
    let (config, backup) = ctx.run_config(&a.run, &bars)?;
    let m = <&MigrationSet as Migrator>::with_config(&set, config);
    let report = if asked {
        crate::migrator::upgrade_with_work(&m, (&client).into(), &target).await?
    } else {
        m.upgrade(&client, &target).await?
    };
    finish(ctx, &m, &client, "upgrade", &target, &report, &a.run, &backup).await
}

async fn downgrade(ctx: &Ctx<'_>, a: &DowngradeArgs) -> Result<u8, Failure> {
    let bars = ctx.bars();
    let set = ctx.load()?;
    ctx.single_head(&set)?;
    let target = parse_target(&set, &a.target)?;
    let client = ctx.connect().await?;
    let plain = ctx.runner(&set);
    if a.run.sql {
        return print_sql(ctx, &plain, &client, &target, a.run.single_transaction).await;
    }
    let plan = plain.plan(&client, &target).await?;
    let downs: Vec<&str> =
        plan.steps.iter().filter(|s| s.direction == Direction::Down).map(|s| s.id.as_str()).collect();
    if !downs.is_empty() {
        if !ctx.ui.json {
            ctx.ui.note(format!("downgrade to {target} reverts, in this order:"));
            for id in &downs {
                ctx.ui.note(format!("  down {id}"));
            }
        }
        let question = format!("Revert {} in {}?", count(downs.len(), "revision"), ctx.database());
        ctx.ui.confirm(ctx.args.yes, &question)?;
        preflight_gate(ctx, &plain, &client, &target, a.run.no_preflight).await?;
    }
    let (config, backup) = ctx.run_config(&a.run, &bars)?;
    let m = <&MigrationSet as Migrator>::with_config(&set, config);
    let report = m.downgrade(&client, &target).await?;
    finish(ctx, &m, &client, "downgrade", &target, &report, &a.run, &backup).await
}

async fn stamp(ctx: &Ctx<'_>, a: &StampArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    ctx.single_head(&set)?;
    let target = parse_target(&set, &a.target)?;
    let client = ctx.connect().await?;
    let question = format!(
        "Record {} as being at {target}, without running any SQL? The ledger will then say what the schema may not contain.",
        ctx.database()
    );
    ctx.ui.confirm(ctx.args.yes, &question)?;
    let m = ctx.runner(&set);
    let report = m.stamp(&client, &target).await?;
    let opts = RunOptions { backup: None, single_transaction: false, sql: false, no_preflight: true };
    finish(ctx, &m, &client, "stamp", &target, &report, &opts, &Arc::new(AtomicBool::new(false))).await
}

/// The source, connected, and what the ledger's `meta` holds. The standalone
/// binary's files are read and hashed on another thread while this one
/// connects and asks: a start at head then costs about the longer of the two,
/// not their sum.
async fn fast_path<'c>(ctx: &'c Ctx<'_>) -> Result<(Source<'c>, Client, crate::state::Meta), Failure> {
    ctx.config.validate().map_err(Failure::from)?;
    // The files are read and hashed on a thread of their own while the
    // connection is made and the ledger asked.
    let reading = if ctx.uses_files() {
        let files = ctx.files()?;
        Some(tokio::task::spawn_blocking(move || files.lazy()))
    } else {
        None
    };
    let client = ctx.connect().await?;
    let ledger = crate::ledger::Ledger::new(ctx.config.schema_name());
    let meta = crate::migrator::fast_path_meta(&ledger, &client).await?;
    let source = match reading {
        Some(reading) => {
            let read = reading.await.map_err(|e| {
                Failure::new(exit::ERROR, "io", format!("reading {} failed", ctx.dir().display()))
                    .caused_by(&e)
            })?;
            Source::Files(Box::new(read.map_err(|e| ctx.load_failure(e))?))
        }
        None => ctx.source()?,
    };
    Ok((source, client, meta))
}

/// `upgrade` towards every head on a database that holds exactly the set:
/// what `finish` prints for a run that took the fast path, without the
/// current revisions (the set was not loaded to name them).
fn nothing_to_do(ctx: &Ctx<'_>, opts: &RunOptions, duration: Duration) -> u8 {
    let report = Report { fast_path: true, duration, ..Report::default() };
    ctx.ui.show(&view::Ran {
        command: "upgrade",
        target: &Target::Heads,
        report: &report,
        backup_asked: opts.backup.is_some(),
        backup: None,
        current: None,
    });
    exit::OK
}

/// Prints a run's report and where the database is now.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Ctx<'_>,
    m: &Run<'_>,
    client: &Client,
    command: &str,
    target: &Target,
    report: &Report,
    opts: &RunOptions,
    backup: &AtomicBool,
) -> Result<u8, Failure> {
    // The run is done whatever happens here: a failed read (an interrupt
    // cancelling it) leaves the current revisions unknown, never "base".
    let current = match m.status(client).await {
        Ok(status) => Some(status.current),
        Err(e) => {
            ctx.ui.note(format!("could not read where the database is now: {e}"));
            None
        }
    };
    for w in &report.warnings {
        ctx.ui.note(format!("{}: {}", ctx.ui.paint_err(Style::Yellow, "warning"), warning_text(w)));
    }
    ctx.ui.show(&view::Ran {
        command,
        target,
        report,
        backup_asked: opts.backup.is_some(),
        backup: opts.backup.as_deref().filter(|_| backup.load(Ordering::Relaxed)),
        current,
    });
    Ok(exit::OK)
}

async fn resolve(ctx: &Ctx<'_>, a: &ResolveArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let m = ctx.runner(&set);
    let st = m.status(&client).await?;
    let row = blocked_row(&set, &st.blocked, &a.revision)?;
    // Which way the failed step was going decides what each resolution means.
    let down = row.direction == crate::report::Direction::Down;
    let (how, question, done) = match (a.retry, a.mark_applied, down) {
        (true, _, false) => {
            ("retry", "Retry applying it from the statement that failed?", "applied after the retry")
        }
        (true, _, true) => {
            ("retry", "Retry reverting it from the statement that failed?", "reverted after the retry")
        }
        (false, true, false) => (
            "mark_applied",
            "Record it as applied (its remaining statements were completed by hand)?",
            "recorded as applied",
        ),
        (false, true, true) => (
            "mark_applied",
            "Record it as still applied (what its down section did was undone by hand)?",
            "recorded as still applied: a later downgrade reverts it again",
        ),
        (false, false, false) => (
            "mark_reverted",
            "Forget it, so the next run applies it again (what it did was undone by hand)?",
            "forgotten: the next upgrade applies it again",
        ),
        (false, false, true) => (
            "mark_reverted",
            "Record it as reverted (its down section's remaining statements were completed by hand)?",
            "recorded as reverted",
        ),
    };
    let at = row.statement.map(|s| format!(" at statement {s}")).unwrap_or_default();
    let step = if down { "revert" } else { "apply" };
    let question = format!(
        "{} is recorded as {}{at} (a failed {step}) in {}. {question}",
        row.id,
        row.state,
        ctx.database()
    );
    ctx.ui.confirm(ctx.args.yes, &question)?;
    let resolution = match how {
        "retry" => Resolution::Retry,
        "mark_applied" => Resolution::MarkApplied,
        _ => Resolution::MarkReverted,
    };
    m.resolve(&client, &row.id, resolution).await?;
    ctx.ui.show(&view::Resolved {
        revision: &row.id,
        direction: row.direction,
        resolution: how,
        outcome: done,
    });
    Ok(exit::OK)
}

/// The blocked revision `given` names: its id, or a prefix of one blocked
/// revision's id (like targets). A revision that is not blocked, or a
/// prefix of several, is an error naming them.
fn blocked_row<'b>(
    set: &MigrationSet,
    blocked: &'b [crate::status::Blocked],
    given: &str,
) -> Result<&'b crate::status::Blocked, Failure> {
    if let Some(row) = blocked.iter().find(|b| b.id == given) {
        return Ok(row);
    }
    let matching: Vec<&crate::status::Blocked> = blocked.iter().filter(|b| b.id.starts_with(given)).collect();
    match matching.as_slice() {
        [row] => Ok(row),
        [] => {
            // Not blocked: say so about the revision it names, if it names one.
            let ids: Vec<&RevisionId> = match set.get(given) {
                Some(r) => vec![r.id()],
                None => set.revisions().map(|r| r.id()).filter(|id| id.as_str().starts_with(given)).collect(),
            };
            Err(Failure::from(match ids.as_slice() {
                [id] => Error::NothingToResolve { id: (*id).clone() },
                [] => Error::UnknownTarget { target: given.to_owned() },
                several => Error::AmbiguousPrefix {
                    prefix: given.to_owned(),
                    candidates: several.iter().map(|id| (*id).clone()).collect(),
                },
            }))
        }
        several => Err(Failure::from(Error::AmbiguousPrefix {
            prefix: given.to_owned(),
            candidates: several.iter().filter_map(|b| RevisionId::new(b.id.clone()).ok()).collect(),
        })),
    }
}

async fn repair(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let m = ctx.runner(&set);
    let st = m.status(&client).await?;
    if st.changed.is_empty() {
        ctx.ui.show(&view::Repaired { repaired: Vec::new() });
        return Ok(exit::OK);
    }
    let question = format!(
        "Record the current checksums of {} in {}? Do this only after an intentional edit.",
        ids(&st.changed).join(", "),
        ctx.database()
    );
    ctx.ui.confirm(ctx.args.yes, &question)?;
    let repaired = m.repair(&client).await?;
    ctx.ui.show(&view::Repaired { repaired });
    Ok(exit::OK)
}

// ----- backfills -----

fn known_backfill(set: &MigrationSet, name: &str) -> Result<(), Failure> {
    if set.declared_backfills().iter().any(|b| b.name() == name) {
        return Ok(());
    }
    Err(Failure::from(Error::UnknownBackfill { name: name.to_owned() }))
}

async fn backfill(ctx: &Ctx<'_>, c: &BackfillCommand) -> Result<u8, Failure> {
    let bars = match c {
        BackfillCommand::Run => ctx.bars(),
        _ => None,
    };
    let set = ctx.with_bars(ctx.load()?, &bars);
    let client = ctx.connect().await?;
    let m = ctx.runner(&set);
    let backfills = m.backfills()?;
    match c {
        BackfillCommand::Status => {
            let all = view::BackfillList(backfills.status(&client).await?);
            ctx.ui.show(&all);
            let failed = all.0.iter().any(|b| b.state == BackfillState::Failed);
            Ok(if failed { exit::ATTENTION } else { exit::OK })
        }
        BackfillCommand::Run => {
            let report = backfills.run(&client).await?;
            drop(bars);
            ctx.ui.show(&view::BackfillsRan(report.backfills));
            Ok(exit::OK)
        }
        BackfillCommand::Pause(n) | BackfillCommand::Resume(n) => {
            known_backfill(&set, &n.name)?;
            let pause = matches!(c, BackfillCommand::Pause(_));
            let state = if pause {
                backfills.pause(&client, &n.name).await?
            } else {
                backfills.resume(&client, &n.name).await?
            };
            let next = if pause {
                format!("no process runs it until `{} backfill resume {}`", ctx.ui.bin, n.name)
            } else {
                format!("the next run, or `{} backfill run`, continues it", ctx.ui.bin)
            };
            ctx.ui.show(&view::BackfillPaused { name: &n.name, state, next });
            Ok(exit::OK)
        }
        BackfillCommand::Reset(r) => reset_backfill(ctx, &client, &backfills, &set, r).await,
    }
}

/// `backfill reset NAME`: asks first, names the backfill's state and rows.
async fn reset_backfill(
    ctx: &Ctx<'_>,
    client: &Client,
    backfills: &crate::backfill::Backfills<'_>,
    set: &MigrationSet,
    r: &super::args::ResetArgs,
) -> Result<u8, Failure> {
    known_backfill(set, &r.name)?;
    let now = backfills.status(client).await?.into_iter().find(|b| b.name == r.name);
    let Some(now) = now.filter(|b| b.state != BackfillState::Pending) else {
        ctx.ui.show(&view::BackfillReset { name: &r.name, from: None, bin: &ctx.ui.bin });
        return Ok(exit::OK);
    };
    let running = if now.active { ", and another session is running it now" } else { "" };
    let question = format!(
        "{} is {} with {} rows done{running}. Reset it in {}, so that the next run starts it over \
         (its statement runs again on rows it already changed)?",
        r.name,
        now.state,
        view::thousands(now.rows_done),
        ctx.database()
    );
    ctx.ui.confirm(ctx.args.yes, &question)?;
    let mode = if r.force { Reset::EvenIfRunning } else { Reset::UnlessRunning };
    let from = backfills.reset(client, &r.name, mode).await.map_err(|e| {
        let running = matches!(e, Error::BackfillRunning { .. });
        let f = Failure::from(e);
        if running {
            let (bin, name) = (&ctx.ui.bin, &r.name);
            f.hint(format!(
                "`{bin} backfill pause {name}`, then reset it once that session has stopped; \
                 or pass --force to reset it while it runs"
            ))
        } else {
            f
        }
    })?;
    ctx.ui.show(&view::BackfillReset { name: &r.name, from, bin: &ctx.ui.bin });
    Ok(exit::OK)
}
