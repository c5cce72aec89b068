//! One function per command: load the set, connect when needed, call the
//! library, print text or JSON, and return the exit code.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::Client;

use super::args::{
    BackfillCommand, CheckArgs, Command, DowngradeArgs, GraphArgs, GraphFormat, MergeArgs, NewArgs, PlanArgs,
    PreflightArgs, ResolveArgs, RunOptions, StampArgs, StatusArgs, UpgradeArgs,
};
use super::progress::{Bars, StepBar};
use super::render;
use super::scaffold;
use super::ui::{Failure, Style, list_lines, ms_text, report_json, warning_text};
use super::{Backup, Ctx, Run, exit};
use crate::backfill::{BackfillOutcome, BackfillState, BackfillStatus, Reset};
use crate::config::TransactionMode;
use crate::connstr::{self, ConnStr};
use crate::migration::Transaction;
use crate::preflight::{Preflight, ProblemKind};
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
        let mut config = self.config.clone();
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
        config = config.add_hooks(super::interrupt::StopOnInterrupt(self.interrupt.clone()));
        Ok((config, taken))
    }

    fn key(&self, key: &str, value: impl AsRef<str>) {
        self.ui.line(format!("{} {}", self.ui.paint(Style::Bold, &format!("{key:<9}")), value.as_ref()));
    }

    /// `key` and a list of ids, wrapped, a long one summarised.
    fn key_list(&self, key: &str, count: &str, items: &[&str], style: Style) {
        for (i, line) in list_lines(items).into_iter().enumerate() {
            let text = if i == 0 {
                format!("{count}{line}")
            } else {
                format!("{:width$}{line}", "", width = count.len())
            };
            self.key(if i == 0 { key } else { "" }, self.ui.paint(style, &text));
        }
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

fn ids(list: &[RevisionId]) -> Vec<&str> {
    list.iter().map(|i| i.as_str()).collect()
}

fn list_or(list: &[&str], empty: &str) -> String {
    if list.is_empty() { empty.to_owned() } else { list.join(", ") }
}

// ----- reading the graph: no database -----

fn heads(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let heads: Vec<_> = set.heads().into_iter().filter_map(|h| set.get(h.as_str())).collect();
    ctx.ui.json(json!({
        "heads": heads.iter().map(|r| json!({
            "id": r.id().as_str(),
            "branch": r.branch(),
            "path": r.origin(),
        })).collect::<Vec<_>>(),
    }));
    for r in heads {
        match r.branch() {
            Some(b) => ctx.ui.line(format!("{} (branch {b})", r.id())),
            None => ctx.ui.line(r.id().as_str()),
        }
    }
    Ok(exit::OK)
}

fn revision_json(set: &MigrationSet, r: &crate::Revision) -> Value {
    json!({
        "id": r.id().as_str(),
        "revises": ids(r.revises()),
        "depends_on": ids(r.depends_on()),
        "branch": r.branch(),
        "message": r.message(),
        "release": r.release().map(|v| v.to_string()),
        "transaction": if r.transaction() == Transaction::None { "none" } else { "transactional" },
        "kind": r.kind(),
        "reversible": r.down().is_some(),
        "repeatable": r.is_repeatable(),
        "head": set.heads().contains(&r.id()),
        "path": r.origin(),
    })
}

fn history(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let mut newest_first: Vec<Value> = set.revisions().map(|r| revision_json(&set, r)).collect();
    newest_first.reverse();
    ctx.ui.json(json!({ "revisions": newest_first }));
    for line in render::history_text(&set) {
        ctx.ui.line(line);
    }
    Ok(exit::OK)
}

fn graph(ctx: &Ctx<'_>, a: &GraphArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    if ctx.ui.json {
        let mut edges = Vec::new();
        for r in set.revisions() {
            for p in r.revises() {
                edges.push(json!({ "from": p.as_str(), "to": r.id().as_str(), "kind": "revises" }));
            }
            for d in r.depends_on() {
                edges.push(json!({ "from": d.as_str(), "to": r.id().as_str(), "kind": "depends_on" }));
            }
        }
        let nodes: Vec<Value> = set.revisions().map(|r| revision_json(&set, r)).collect();
        ctx.ui.json(json!({ "nodes": nodes, "edges": edges }));
        return Ok(exit::OK);
    }
    let text = match a.format {
        GraphFormat::Dot => render::dot(&set),
        GraphFormat::Mermaid => render::mermaid(&set),
    };
    ctx.ui.line(text.trim_end());
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
    let warnings = set.lint();
    ctx.ui.json(json!({
        "revisions": set.len(),
        "heads": heads,
        "errors": errors,
        "warnings": warnings.iter().map(|w| json!({
            "path": w.path,
            "line": w.line,
            "revision": w.revision.as_str(),
            "rule": w.rule.name(),
            "table": w.table,
            "message": w.message,
            "suggestion": w.suggestion,
        })).collect::<Vec<_>>(),
    }));
    for w in &warnings {
        let label = ctx.ui.paint(Style::Yellow, "warning");
        ctx.ui.line(format!("{}:{}: {label}: {} [{}]", w.path, w.line, w.message, w.rule));
        ctx.ui.line(format!("    instead, {}", w.suggestion));
    }
    for e in &errors {
        ctx.ui.line(format!("{}: {e}", ctx.ui.paint(Style::Red, "error")));
    }
    let graph = if errors.is_empty() { "the graph is valid" } else { "the graph has errors" };
    ctx.ui.line(format!(
        "{} revisions, {} head{} ({}): {graph}; {} warning{}",
        set.len(),
        heads.len(),
        if heads.len() == 1 { "" } else { "s" },
        list_or(&heads, "none"),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" },
    ));
    Ok(if !errors.is_empty() {
        exit::ERROR
    } else if a.strict && !warnings.is_empty() {
        exit::ATTENTION
    } else {
        exit::OK
    })
}

/// Prints every error of a set that did not load (all of them in the JSON
/// document) and returns the first one's exit code.
fn load_errors(ctx: &Ctx<'_>, failures: Vec<Failure>) -> u8 {
    let messages: Vec<String> = failures
        .iter()
        .map(|f| f.causes.iter().fold(f.message.clone(), |m, c| format!("{m}: {c}")))
        .collect();
    ctx.ui.json(json!({ "revisions": 0, "heads": [], "errors": messages, "warnings": [] }));
    if !ctx.ui.json {
        for f in &failures {
            ctx.ui.failure(f);
        }
        let n = failures.len();
        ctx.ui.note(format!("{n} error{} loading the set", if n == 1 { "" } else { "s" }));
    }
    failures.first().map_or(exit::ERROR, |f| f.code)
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
    ctx.ui.json(json!({
        "id": id,
        "path": path.display().to_string(),
        "revises": revises,
        "depends_on": depends_on,
        "branch": a.branch,
        "transaction": if a.no_transaction { "none" } else { "transactional" },
        "repeatable": a.repeatable,
        "message": message,
    }));
    let parent = if a.repeatable {
        "repeatable".to_owned()
    } else if revises.is_empty() {
        "a new root".to_owned()
    } else {
        format!("revises {}", revises.join(", "))
    };
    ctx.ui.line(format!("created {} ({parent})", path.display()));
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
    ctx.ui.json(json!({
        "id": id,
        "path": path.display().to_string(),
        "revises": parents,
        "message": message,
    }));
    ctx.ui.line(format!("created {} (merges {})", path.display(), parents.join(", ")));
    Ok(exit::OK)
}

// ----- reading the database -----

async fn status(ctx: &Ctx<'_>, a: &StatusArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let st = ctx.runner(&set).status(&client).await?;
    let backfills = if set.declared_backfills().is_empty() {
        Vec::new()
    } else {
        ctx.runner(&set).backfills()?.status(&client).await?
    };
    let release = st.release.clone();
    let has_releases = set.revisions().any(|r| r.release().is_some());
    let diverged = !st.unknown.is_empty() && !st.ahead;
    // A revision recorded as running while a migrator holds the lock is being applied now: not stuck.
    let stuck = st.blocked.iter().any(|b| !b.is_running_now());
    let attention = stuck || !st.changed.is_empty() || diverged;
    let code =
        if attention || (a.require_head && !st.pending.is_empty()) { exit::ATTENTION } else { exit::OK };
    ctx.ui.json(json!({
        "database": ctx.database(),
        "schema": ctx.config.schema_name(),
        "current": ids(&st.current),
        "heads": ids(&st.heads),
        "applied": ids(&st.applied),
        "pending": ids(&st.pending),
        "release": release.as_ref().map(|v| v.to_string()),
        "blocked": st.blocked.iter().map(|b| json!({
            "id": b.id,
            "state": b.state.as_str(),
            "direction": b.direction.to_string(),
            "statement": b.statement,
            "error": b.error,
            "running_now": b.is_running_now(),
            "lock_holder_pid": b.holder.as_ref().map(|h| h.pid),
        })).collect::<Vec<_>>(),
        "changed": ids(&st.changed),
        "unknown": st.unknown,
        "ahead": st.ahead,
        "at_head": st.pending.is_empty() && st.blocked.is_empty(),
        "needs_attention": attention,
        "backfills": backfills.iter().map(backfill_json).collect::<Vec<_>>(),
    }));
    ctx.key("database", ctx.database());
    ctx.key("schema", ctx.config.schema_name());
    ctx.key("current", list_or(&ids(&st.current), "base (nothing applied)"));
    ctx.key("heads", list_or(&ids(&st.heads), "none"));
    if has_releases {
        ctx.key("release", release.map_or_else(|| "none fully applied".to_owned(), |v| v.to_string()));
    }
    ctx.key("applied", format!("{} of {} revisions", st.applied.len(), set.len()));
    if st.pending.is_empty() {
        ctx.key("pending", ctx.ui.paint(Style::Green, "none: at head"));
    } else {
        ctx.key_list("pending", &format!("{}: ", st.pending.len()), &ids(&st.pending), Style::Yellow);
    }
    for b in &backfills {
        let style = match b.state {
            BackfillState::Done => Style::Green,
            BackfillState::Failed => Style::Red,
            _ => Style::Yellow,
        };
        ctx.key("backfill", ctx.ui.paint(style, &backfill_line(b)));
    }
    for b in &st.blocked {
        if let (true, Some(h)) = (b.is_running_now(), &b.holder) {
            let at = b.statement.map(|s| format!(", at statement {s}")).unwrap_or_default();
            let text = format!(
                "{} is running now ({} {}{at}; the lock is held by pid {})",
                b.id, b.direction, b.state, h.pid
            );
            ctx.key("running", ctx.ui.paint(Style::Yellow, &text));
            continue;
        }
        let at = b.statement.map(|s| format!(" at statement {s}")).unwrap_or_default();
        let error = b.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
        ctx.key("blocked", ctx.ui.paint(Style::Red, &format!("{} is {}{at}{error}", b.id, b.state)));
        ctx.key(
            "",
            format!("settle it: {} resolve {} --retry | --mark-applied | --mark-reverted", ctx.ui.bin, b.id),
        );
    }
    if !st.changed.is_empty() {
        let text = format!("{} (edited since applied)", ids(&st.changed).join(", "));
        ctx.key("changed", ctx.ui.paint(Style::Red, &text));
        ctx.key("", format!("restore the files, or record the new checksums with {} repair", ctx.ui.bin));
    }
    if !st.unknown.is_empty() {
        let why = if st.ahead {
            "applied by a newer release: the database is ahead of the code"
        } else {
            "not in the code and not built on its heads: the histories have diverged"
        };
        let style = if st.ahead { Style::Yellow } else { Style::Red };
        ctx.key("unknown", ctx.ui.paint(style, &format!("{} ({why})", st.unknown.join(", "))));
    }
    Ok(code)
}

async fn current(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let st = ctx.runner(&set).status(&client).await?;
    ctx.ui.json(json!({ "current": ids(&st.current) }));
    if st.current.is_empty() {
        ctx.ui.line("base");
    }
    for id in &st.current {
        ctx.ui.line(id.as_str());
    }
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
    ctx.ui.json(json!({
        "target": target.to_string(),
        "steps": plan.steps.iter().map(|s| json!({
            "id": s.id.as_str(),
            "direction": s.direction.to_string(),
        })).collect::<Vec<_>>(),
    }));
    if plan.is_empty() {
        ctx.ui.line(format!("nothing to do: the database is at {target}"));
    }
    for s in &plan.steps {
        ctx.ui.line(format!("{:<4} {}", s.direction, s.id));
    }
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
    ctx.ui.json(json!({
        "target": target.to_string(),
        "style": if single_transaction { "single" } else { "per_revision" },
        "sql": script,
    }));
    if !ctx.ui.json {
        ctx.ui.line(script.trim_end());
    }
    Ok(exit::OK)
}

async fn verify(ctx: &Ctx<'_>) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let client = ctx.connect().await?;
    let report = ctx.runner(&set).verify(&client).await?;
    let failure = |id: &RevisionId| report.failed.iter().find(|(f, _)| f == id).map(|(_, why)| why.as_str());
    ctx.ui.json(json!({
        "revisions": report.checked.iter().map(|id| json!({
            "id": id.as_str(),
            "ok": failure(id).is_none(),
            "error": failure(id),
        })).collect::<Vec<_>>(),
        "failed": report.failed.len(),
    }));
    for id in &report.checked {
        match failure(id) {
            None => ctx.ui.line(format!("{}  {id}", ctx.ui.paint(Style::Green, "ok    "))),
            Some(e) => ctx.ui.line(format!("{}  {id}: {e}", ctx.ui.paint(Style::Red, "FAILED"))),
        }
    }
    let n = report.checked.len();
    ctx.ui.line(format!(
        "{n} verify section{} run, {} failed",
        if n == 1 { "" } else { "s" },
        report.failed.len()
    ));
    Ok(if report.failed.is_empty() { exit::OK } else { exit::ATTENTION })
}

/// Whether a pre-flight problem stops a run: a missing privilege or
/// extension would fail it part-way. Locks and long transactions are
/// reported but do not stop it: an ordinary query holds a lock for an
/// instant, and lock timeouts with retries deal with the lasting ones.
fn blocking(kind: ProblemKind) -> bool {
    match kind {
        ProblemKind::MissingPrivilege
        | ProblemKind::MissingExtension
        | ProblemKind::ExtensionNotCreatable => true,
        ProblemKind::LockHeld | ProblemKind::LongTransaction => false,
    }
}

fn problem_kind(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::MissingPrivilege => "missing_privilege",
        ProblemKind::MissingExtension => "missing_extension",
        ProblemKind::ExtensionNotCreatable => "extension_not_creatable",
        ProblemKind::LockHeld => "lock_held",
        ProblemKind::LongTransaction => "long_transaction",
    }
}

async fn preflight(ctx: &Ctx<'_>, a: &PreflightArgs) -> Result<u8, Failure> {
    let set = ctx.load()?;
    let target = a.target.as_deref().map_or(Ok(Target::Heads), |t| parse_target(&set, t))?;
    let client = ctx.connect().await?;
    let found = ctx.runner(&set).preflight(&client, &target).await?;
    let stopping = found.problems.iter().filter(|p| blocking(p.kind)).count();
    ctx.ui.json(json!({
        "server_version": found.server_version,
        "target": target.to_string(),
        "steps": found.plan.steps.iter().map(|s| json!({
            "id": s.id.as_str(),
            "direction": s.direction.to_string(),
        })).collect::<Vec<_>>(),
        "problems": found.problems.iter().map(|p| json!({
            "kind": problem_kind(p.kind),
            "blocking": blocking(p.kind),
            "revision": p.revision.as_ref().map(|r| r.as_str()),
            "message": p.message,
        })).collect::<Vec<_>>(),
        "ok": stopping == 0,
    }));
    ctx.key("database", ctx.database());
    ctx.key("server", &found.server_version);
    let steps: Vec<String> = found.plan.steps.iter().map(|s| format!("{} {}", s.direction, s.id)).collect();
    if steps.is_empty() {
        ctx.key("plan", "nothing to do");
    } else {
        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
        let count = format!("{} step{}: ", steps.len(), if steps.len() == 1 { "" } else { "s" });
        ctx.key_list("plan", &count, &steps, Style::Bold);
    }
    for p in &found.problems {
        let label = if blocking(p.kind) {
            ctx.ui.paint(Style::Red, "problem")
        } else {
            ctx.ui.paint(Style::Yellow, "warning")
        };
        ctx.ui.line(format!("{label}: {} [{}]", p.message, problem_kind(p.kind)));
    }
    ctx.ui.line(if stopping == 0 {
        ctx.ui.paint(Style::Green, "pre-flight: ok")
    } else {
        format!("pre-flight: {stopping} problem{} would stop the run", if stopping == 1 { "" } else { "s" })
    });
    Ok(if stopping == 0 { exit::OK } else { exit::ATTENTION })
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
            "pre-flight checks found {} problem{} that would stop the run part-way; nothing was changed",
            stopping.len(),
            if stopping.len() == 1 { "" } else { "s" }
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
    let report = m.upgrade(&client, &target).await?;
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
        let question = format!(
            "Revert {} revision{} in {}?",
            downs.len(),
            if downs.len() == 1 { "" } else { "s" },
            ctx.database()
        );
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
    let reading = ctx.embedded.is_none().then(|| {
        let dir = ctx.dir();
        tokio::task::spawn_blocking(move || {
            crate::SetBuilder::default().dir(dir).allow_multiple_heads(true).lazy()
        })
    });
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
    let mut doc = report_json(&report);
    doc["command"] = json!("upgrade");
    doc["target"] = json!(Target::Heads.to_string());
    doc["backup"] = Value::Null;
    doc["current"] = Value::Null;
    ctx.ui.json(doc);
    let backup = if opts.backup.is_some() { " (no backup taken)" } else { "" };
    ctx.ui.line(
        ctx.ui.paint(Style::Green, &format!("nothing to do for heads: the database is at head{backup}")),
    );
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
    let current = m.status(client).await.map(|s| s.current).unwrap_or_default();
    let backup_file = opts.backup.as_ref().filter(|_| backup.load(Ordering::Relaxed));
    let mut doc = report_json(report);
    doc["command"] = json!(command);
    doc["target"] = json!(target.to_string());
    doc["backup"] = json!(backup_file.map(|p| p.display().to_string()));
    doc["current"] = json!(ids(&current));
    ctx.ui.json(doc);
    for w in &report.warnings {
        ctx.ui.note(format!("{}: {}", ctx.ui.paint_err(Style::Yellow, "warning"), warning_text(w)));
    }
    if let Some(p) = backup_file {
        ctx.ui.line(format!("backup written to {}", p.display()));
    }
    let width = report.steps.iter().map(|s| s.id.as_str().len()).max().unwrap_or(0);
    for s in &report.steps {
        let what = if s.stamped { "stamped".to_owned() } else { ms_text(s.duration) };
        ctx.ui.line(format!("{:<4} {:<width$}  {}", s.direction, s.id, ctx.ui.paint(Style::Dim, &what)));
    }
    let done = if report.steps.is_empty() {
        if opts.backup.is_some() {
            format!("nothing to do for {target} (no backup taken)")
        } else {
            format!("nothing to do for {target}")
        }
    } else {
        let n = report.steps.len();
        let verb = match command {
            "upgrade" => "applied",
            "downgrade" => "reverted",
            _ => "recorded",
        };
        format!(
            "{verb} {n} revision{} in {}{}",
            if n == 1 { "" } else { "s" },
            ms_text(report.duration),
            if report.lock_wait >= Duration::from_millis(100) {
                format!(" (waited {} for the lock)", ms_text(report.lock_wait))
            } else {
                String::new()
            }
        )
    };
    ctx.ui.line(ctx.ui.paint(Style::Green, &done));
    ctx.key("current", list_or(&ids(&current), "base (nothing applied)"));
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
    ctx.ui.json(json!({
        "revision": row.id,
        "direction": if down { "down" } else { "up" },
        "resolution": how,
    }));
    ctx.ui.line(format!("{}: {done}", row.id));
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
        ctx.ui.json(json!({ "repaired": [] }));
        ctx.ui.line("nothing to repair: every applied revision matches its file");
        return Ok(exit::OK);
    }
    let question = format!(
        "Record the current checksums of {} in {}? Do this only after an intentional edit.",
        ids(&st.changed).join(", "),
        ctx.database()
    );
    ctx.ui.confirm(ctx.args.yes, &question)?;
    let repaired = m.repair(&client).await?;
    ctx.ui.json(json!({ "repaired": ids(&repaired) }));
    ctx.ui.line(format!("recorded new checksums: {}", ids(&repaired).join(", ")));
    Ok(exit::OK)
}

// ----- backfills -----

fn backfill_json(b: &BackfillStatus) -> Value {
    json!({
        "name": b.name,
        "revision": b.revision,
        "eligible": b.eligible,
        "state": b.state.as_str(),
        "active": b.active,
        "rows_done": b.rows_done,
        "estimated_total": b.estimated_total,
        "fraction": b.fraction,
        "batches": b.batches,
        "last_error": b.last_error,
    })
}

/// `documents_sha256_fill (after 0003_enhance_documents): running, 12,000 of 50,000 rows (24%)`.
fn backfill_line(b: &BackfillStatus) -> String {
    let state = match (b.state, b.active, b.eligible) {
        (BackfillState::Pending, _, false) => "waits for its revision".to_owned(),
        (BackfillState::Running, false, _) => "interrupted (resumes on the next run)".to_owned(),
        (state, _, _) => state.as_str().to_owned(),
    };
    let rows = match (b.estimated_total, b.fraction) {
        (Some(total), Some(f)) => {
            format!("{} of {} rows ({:.0}%)", thousands(b.rows_done), thousands(total), f * 100.0)
        }
        (Some(total), None) => format!("{} of {} rows", thousands(b.rows_done), thousands(total)),
        (None, _) => format!("{} rows", thousands(b.rows_done)),
    };
    let error = b.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default();
    format!("{} (after {}): {state}, {rows}{error}", b.name, b.revision)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

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
            let all = backfills.status(&client).await?;
            ctx.ui.json(json!({ "backfills": all.iter().map(backfill_json).collect::<Vec<_>>() }));
            if all.is_empty() {
                ctx.ui.line("no backfills are declared");
            }
            for b in &all {
                ctx.ui.line(backfill_line(b));
            }
            let failed = all.iter().any(|b| b.state == BackfillState::Failed);
            Ok(if failed { exit::ATTENTION } else { exit::OK })
        }
        BackfillCommand::Run => {
            let report = backfills.run(&client).await?;
            drop(bars);
            ctx.ui.json(json!({
                "backfills": report.backfills.iter().map(|b| json!({
                    "name": b.name,
                    "outcome": outcome_name(b.outcome),
                    "rows": b.rows,
                    "batches": b.batches,
                    "duration_ms": super::ui::ms(b.duration),
                })).collect::<Vec<_>>(),
            }));
            if report.backfills.is_empty() {
                ctx.ui.line("no backfills are declared");
            }
            for b in &report.backfills {
                let what = match b.outcome {
                    BackfillOutcome::Done => {
                        format!(
                            "done: {} rows in {} batches, {}",
                            thousands(b.rows),
                            b.batches,
                            ms_text(b.duration)
                        )
                    }
                    other => outcome_name(other).replace('_', " "),
                };
                ctx.ui.line(format!("{}: {what}", b.name));
            }
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
            ctx.ui.json(json!({ "name": n.name, "state": state.as_str() }));
            let next = if pause {
                format!("no process runs it until `{} backfill resume {}`", ctx.ui.bin, n.name)
            } else {
                format!("the next run, or `{} backfill run`, continues it", ctx.ui.bin)
            };
            ctx.ui.line(format!("{}: {}; {next}", n.name, state.as_str()));
            Ok(exit::OK)
        }
        BackfillCommand::Reset(r) => {
            known_backfill(&set, &r.name)?;
            let now = backfills.status(&client).await?.into_iter().find(|b| b.name == r.name);
            let Some(now) = now.filter(|b| b.state != BackfillState::Pending) else {
                ctx.ui.json(json!({ "name": r.name, "reset_from": Value::Null, "state": "pending" }));
                ctx.ui.line(format!("{}: pending already; nothing to reset", r.name));
                return Ok(exit::OK);
            };
            let running = if now.active { ", and another session is running it now" } else { "" };
            let question = format!(
                "{} is {} with {} rows done{running}. Reset it in {}, so that the next run starts it over \
                 (its statement runs again on rows it already changed)?",
                r.name,
                now.state,
                thousands(now.rows_done),
                ctx.database()
            );
            ctx.ui.confirm(ctx.args.yes, &question)?;
            let mode = if r.force { Reset::EvenIfRunning } else { Reset::UnlessRunning };
            let from = backfills.reset(&client, &r.name, mode).await.map_err(|e| {
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
            ctx.ui.json(json!({
                "name": r.name,
                "reset_from": from.map(BackfillState::as_str),
                "state": "pending",
            }));
            match from {
                Some(was) => ctx.ui.line(format!(
                    "{}: reset from {was} to pending; the next run, or `{} backfill run`, starts it over",
                    r.name, ctx.ui.bin
                )),
                None => ctx.ui.line(format!("{}: pending already; nothing to reset", r.name)),
            }
            Ok(exit::OK)
        }
    }
}

fn outcome_name(o: BackfillOutcome) -> &'static str {
    match o {
        BackfillOutcome::Done => "done",
        BackfillOutcome::AlreadyDone => "already_done",
        BackfillOutcome::Paused => "paused",
        BackfillOutcome::NotEligible => "not_eligible",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: BackfillState, rows_done: u64, total: Option<u64>) -> BackfillStatus {
        BackfillStatus {
            name: "documents_sha256_fill".into(),
            revision: "0003_enhance_documents".into(),
            eligible: true,
            state,
            active: false,
            rows_done,
            estimated_total: total,
            fraction: total.map(|t| rows_done as f64 / t as f64),
            key_range: None,
            cursor: None,
            batch_size: None,
            batches: 3,
            last_error: None,
            started_at: None,
            updated_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn backfill_lines_give_state_and_rows_with_thousands_separators() {
        let b = status(BackfillState::Running, 12_000, Some(50_000));
        assert_eq!(
            backfill_line(&b),
            "documents_sha256_fill (after 0003_enhance_documents): interrupted (resumes on the next run), \
             12,000 of 50,000 rows (24%)"
        );
        let done = status(BackfillState::Done, 1_234_567, None);
        assert_eq!(
            backfill_line(&done),
            "documents_sha256_fill (after 0003_enhance_documents): done, 1,234,567 rows"
        );
    }

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(16_618_000), "16,618,000");
    }
}
