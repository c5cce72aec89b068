//! The `Migrator` trait and its configuration: orchestration only. Each
//! operation takes a connection, runs the fast path, takes the lock, reads
//! the ledger, asks `plan` what to do and `executor` to do it.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_postgres::Client;

use std::sync::Arc;

use crate::backfill::{BackfillHandle, BackfillReport, BackfillState, BackfillStatus};
use crate::error::Error;
use crate::executor::{Executor, Report, Timeouts, TransactionMode, Warning};
use crate::graph::Graph;
use crate::hooks::{Hooks, Installed};
use crate::id::RevisionId;
use crate::ledger::{Ledger, Meta};
use crate::lock::{Acquired, Conn, LockGuard, LockMode, Settled};
use crate::offline::SqlStyle;
use crate::plan::{self, Direction, DriftPolicy, Mode, Plan, Policy, Reconciled, Step, Target};
use crate::preflight::Preflight;
use crate::source::MigrationSet;

/// Settings of a [`Migrator`]. Every setting has a default; change them with the
/// builder methods.
///
/// ```
/// use std::time::Duration;
/// let config = pgskein::Config::default()
///     .schema("migrations_ledger")
///     .lock_wait_timeout(Some(Duration::from_secs(60)))
///     .application_name("billing-service");
/// assert_eq!(config.schema_name(), "migrations_ledger");
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    schema: String,
    lock_wait_timeout: Option<Duration>,
    transaction_mode: TransactionMode,
    drift: DriftPolicy,
    application_name: Option<String>,
    app_version: Option<String>,
    lock_mode: LockMode,
    hooks: Installed,
    timeouts: Timeouts,
    inline_backfills: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            schema: "pgskein".into(),
            lock_wait_timeout: Some(Duration::from_secs(600)),
            transaction_mode: TransactionMode::default(),
            drift: DriftPolicy::default(),
            application_name: None,
            app_version: None,
            lock_mode: LockMode::default(),
            hooks: Installed::default(),
            timeouts: Timeouts::default(),
            inline_backfills: false,
        }
    }
}

impl Config {
    /// The schema of the bookkeeping tables (default `pgskein`). It also keys the
    /// migration lock, so two sets with different schemas migrate independently.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
    /// The configured schema name.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }
    /// The advisory-lock key of this configuration: the first 8 bytes of
    /// SHA-256(`"pgskein:" + schema`), big-endian. Find the holder, in the
    /// migrated database (advisory locks are per database), with:
    ///
    /// ```sql
    /// SELECT pid FROM pg_locks
    /// WHERE locktype = 'advisory' AND objsubid = 1 AND granted
    ///   AND classid::bigint = (<key> >> 32) & 4294967295
    ///   AND objid::bigint = <key> & 4294967295
    ///   AND database = (SELECT oid FROM pg_database WHERE datname = current_database());
    /// ```
    ///
    /// ```
    /// assert_eq!(pgskein::Config::default().lock_key(), pgskein::Config::default().lock_key());
    /// assert_ne!(pgskein::Config::default().lock_key(), pgskein::Config::default().schema("x").lock_key());
    /// ```
    pub fn lock_key(&self) -> i64 {
        crate::lock::key(&self.schema)
    }
    /// How long to wait for another migrator's lock (default 10 minutes; `None` waits forever).
    pub fn lock_wait_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_wait_timeout = timeout;
        self
    }
    /// Per-revision transactions (default) or one transaction for the whole plan.
    pub fn transaction_mode(mut self, mode: TransactionMode) -> Self {
        self.transaction_mode = mode;
        self
    }
    /// What to do about drift between the ledger and the code.
    pub fn drift(mut self, drift: DriftPolicy) -> Self {
        self.drift = drift;
        self
    }
    /// The `application_name` the migration session shows in `pg_stat_activity`
    /// while it holds the lock (default: unchanged). Reset when the run ends.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }
    /// A version string of the service, recorded with each applied revision.
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = Some(version.into());
        self
    }
    /// How concurrent runs are kept apart (default: an advisory lock).
    pub fn lock_mode(mut self, mode: LockMode) -> Self {
        self.lock_mode = mode;
        self
    }

    /// How long each statement of a transactional revision may wait for a lock
    /// (`lock_timeout`, default 5 s; a revision's `-- pgskein: lock-timeout`
    /// overrides it, and is the only lock timeout a `transaction none` revision
    /// gets). A migration that queues for a lock behind a long transaction makes
    /// every query of the application queue behind it; a short timeout with
    /// retries keeps that wait bounded. `None` leaves the session's setting.
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.lock = timeout;
        self
    }
    /// How long each statement may run (`statement_timeout`, default: the
    /// session's setting; a revision's `-- pgskein: statement-timeout` overrides it).
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.statement = timeout;
        self
    }
    /// How many times a step that failed on its lock timeout is tried in all
    /// (default 5), and the wait before the first retry (default 500 ms,
    /// doubling each time, at most 30 s). Every attempt runs with the lock
    /// timeout: there is no final attempt that waits forever.
    pub fn lock_retries(mut self, attempts: u32, first_wait: Duration) -> Self {
        self.timeouts.attempts = attempts.max(1);
        self.timeouts.first_wait = first_wait;
        self
    }
    /// Runs backfills inline (default: off): after an upgrade that applied
    /// something, or that stopped at a revision waiting for a backfill, the
    /// eligible backfills run to completion (the run waits, the lock stays
    /// free for other replicas), and the upgrade goes on past the revisions
    /// they unblock. Off, backfills run only through
    /// [`Migrator::run_backfills`] or [`Migrator::spawn_backfills`].
    pub fn inline_backfills(mut self, inline: bool) -> Self {
        self.inline_backfills = inline;
        self
    }
    /// Callbacks around runs and steps: backups, metrics, notifications.
    /// Replaces hooks installed before; see [`add_hooks`](Config::add_hooks) to keep them.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = Installed(Some(Arc::new(hooks)));
        self
    }

    /// Installs more hooks after those already installed: each `before_*`
    /// callback runs in installation order and the first error stops the run;
    /// every `after_*` callback runs.
    pub fn add_hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = std::mem::take(&mut self.hooks).and(Arc::new(hooks));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |reason| Err(Error::InvalidSchema { schema: self.schema.clone(), reason });
        if self.schema.is_empty() {
            return bad("it is empty");
        }
        if self.schema.len() > 63 {
            return bad("it is longer than PostgreSQL's 63-byte identifier limit");
        }
        if self.schema.contains('\0') {
            return bad("it contains a NUL character");
        }
        Ok(())
    }
}

/// A database to migrate: a borrowed client, or a pool to take a connection from.
///
/// Every [`Migrator`] method accepts `&tokio_postgres::Client`,
/// `&deadpool_postgres::Pool` or `&deadpool_postgres::Object`.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Db<'a> {
    /// A connected client, used as is.
    Client(&'a Client),
    /// A pool: the run takes one connection for its whole duration.
    Pool(&'a deadpool_postgres::Pool),
}

impl<'a> From<&'a Client> for Db<'a> {
    fn from(c: &'a Client) -> Self {
        Db::Client(c)
    }
}
impl<'a> From<&'a deadpool_postgres::Pool> for Db<'a> {
    fn from(p: &'a deadpool_postgres::Pool) -> Self {
        Db::Pool(p)
    }
}
impl<'a> From<&'a deadpool_postgres::Object> for Db<'a> {
    fn from(o: &'a deadpool_postgres::Object) -> Self {
        Db::Client(o)
    }
}

impl<'a> Db<'a> {
    pub(crate) async fn conn(self) -> Result<Conn<'a>, Error> {
        Ok(match self {
            Db::Client(c) => Conn::Borrowed(c),
            Db::Pool(p) => Conn::Pooled(Box::new(p.get().await.map_err(|source| Error::Pool { source })?)),
        })
    }
}

/// What `status` reports.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Status {
    /// Applied revisions known to the code, in canonical order.
    pub applied: Vec<RevisionId>,
    /// The applied revisions that no applied revision builds on (Alembic's "current").
    pub current: Vec<RevisionId>,
    /// The code's heads.
    pub heads: Vec<RevisionId>,
    /// Revisions not yet applied, in the order `run` would apply them.
    pub pending: Vec<RevisionId>,
    /// `transaction none` revisions recorded as failed or running.
    pub blocked: Vec<Blocked>,
    /// Applied revisions unknown to the code.
    pub unknown: Vec<String>,
    /// Whether the unknown revisions descend from the code's heads.
    pub ahead: bool,
    /// Applied revisions whose file changed since.
    pub changed: Vec<RevisionId>,
    /// The newest release whose revisions are all applied, if the set declares releases.
    pub release: Option<semver::Version>,
}

/// A revision that blocks runs until resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blocked {
    /// Its id.
    pub id: String,
    /// `failed` or `running`.
    pub state: String,
    /// The 1-based statement that failed, if recorded.
    pub statement: Option<usize>,
    /// The recorded error.
    pub error: Option<String>,
}

/// How an operator settles a failed or interrupted `transaction none` revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// Run it again from the statement that failed (after dropping an invalid
    /// index that statement left behind), then record it.
    Retry,
    /// The remaining statements were completed by hand: record it as applied.
    MarkApplied,
    /// What it did was undone by hand: forget it, so the next run applies it again.
    MarkReverted,
}

/// What [`Migrator::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Applied revisions whose verify section ran, in canonical order.
    pub checked: Vec<RevisionId>,
    /// Those whose verify section failed: the revision and why.
    pub failed: Vec<(RevisionId, String)>,
}

/// Runs migrations. Implement [`migrations`](Migrator::migrations); everything else is provided.
///
/// [`MigrationSet`] implements it with the default [`Config`]; use
/// [`with_config`](Migrator::with_config) to change settings.
///
/// ```no_run
/// use include_dir::{include_dir, Dir};
/// use pgskein::Migrator;
///
/// static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
///
/// # async fn start(pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
/// let migrator = pgskein::MigrationSet::from_embedded(&MIGRATIONS)?;
/// let report = migrator.run(&pool).await?;
/// println!("applied {} revisions", report.steps.len());
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Migrator: Send + Sync {
    /// The revisions to migrate with.
    fn migrations(&self) -> &MigrationSet;

    /// Settings; the default is [`Config::default`].
    fn config(&self) -> Config {
        Config::default()
    }

    /// Wraps this migrator with other settings.
    fn with_config(self, config: Config) -> Configured<Self>
    where
        Self: Sized,
    {
        Configured { inner: self, config }
    }

    /// Upgrades to every head. At head this costs one query and takes no lock.
    async fn run<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<Report, Error> {
        execute(self.migrations(), &self.config(), db.into(), &Target::Heads, Mode::Upgrade).await
    }

    /// Applies what `target` needs. Never removes anything.
    async fn upgrade<'a>(&self, db: impl Into<Db<'a>> + Send + 'a, target: &Target) -> Result<Report, Error> {
        execute(self.migrations(), &self.config(), db.into(), target, Mode::Upgrade).await
    }

    /// Reverts revisions down to `target` (`base`, `-N`, or a revision that stays applied).
    async fn downgrade<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        target: &Target,
    ) -> Result<Report, Error> {
        execute(self.migrations(), &self.config(), db.into(), target, Mode::Downgrade).await
    }

    /// Records the database as being at `target` without running any body.
    ///
    /// # Warning
    /// The ledger then says what the schema does not necessarily contain; use it
    /// to adopt a database migrated by other means, or after repairing by hand.
    async fn stamp<'a>(&self, db: impl Into<Db<'a>> + Send + 'a, target: &Target) -> Result<Report, Error> {
        execute(self.migrations(), &self.config(), db.into(), target, Mode::Stamp).await
    }

    /// What is applied, pending, blocked or unknown. Read-only; takes no lock.
    async fn status<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<Status, Error> {
        let (graph, rec) = read(self.migrations(), &self.config(), db.into()).await?;
        Ok(status_of(graph, &rec))
    }

    /// The steps an upgrade (or, for `base`, `-N` and applied revisions, a
    /// downgrade) to `target` would run now. Read-only; takes no lock.
    async fn plan<'a>(&self, db: impl Into<Db<'a>> + Send + 'a, target: &Target) -> Result<Plan, Error> {
        let (graph, rec) = read(self.migrations(), &self.config(), db.into()).await?;
        plan::either_way(graph, &rec, target)
    }

    /// The script an upgrade (or downgrade, as [`plan`](Migrator::plan) decides)
    /// to `target` would run now, with its bookkeeping statements, as SQL to
    /// review or to run with psql. Rust-coded steps appear as marked comments.
    /// Read-only; takes no lock.
    async fn sql<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        target: &Target,
        style: SqlStyle,
    ) -> Result<String, Error> {
        let config = self.config();
        let (graph, rec) = read(self.migrations(), &config, db.into()).await?;
        let plan = plan::either_way(graph, &rec, target)?;
        crate::offline::render(self.migrations(), config.schema_name(), &rec, &plan, style)
    }

    /// Checks, before anything is touched, what the plan towards `target` needs:
    /// privileges (CREATE on the schemas it creates objects in, on the database
    /// for new schemas and the bookkeeping tables), extensions it creates
    /// (available, and creatable by this role), and sessions holding locks on
    /// the tables it alters or long transactions. Read-only; takes no lock.
    async fn preflight<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        target: &Target,
    ) -> Result<Preflight, Error> {
        let config = self.config();
        config.validate()?;
        let ledger = Ledger::new(&config.schema);
        let conn = db.into().conn().await?;
        let client = conn.client();
        let meta = ledger.meta(client).await?;
        let rows = match &meta {
            Meta::Missing => Vec::new(),
            Meta::Present { .. } => ledger.read(client).await?,
        };
        let rec = plan::reconcile(&self.migrations().graph, &rows);
        let plan = plan::either_way(&self.migrations().graph, &rec, target)?;
        crate::preflight::check(self.migrations(), client, plan, meta == Meta::Missing).await
    }

    /// Re-runs the verify section of every applied revision, each in a
    /// transaction that is rolled back, and records the outcome in `events`.
    async fn verify<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<VerifyReport, Error> {
        verify(self.migrations(), &self.config(), db.into()).await
    }

    /// Records the current checksums of applied revisions whose file changed,
    /// after an intentional edit (each logged as a `repair` event). Returns them.
    ///
    /// # Warning
    /// The ledger then vouches for SQL that never ran as written: make sure the
    /// database really matches the edited files.
    async fn repair<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<Vec<RevisionId>, Error> {
        repair(self.migrations(), &self.config(), db.into()).await
    }

    /// Fails unless the newest release fully applied satisfies `requirement`
    /// (a semver requirement such as `">=2.0"`): a service can refuse to start
    /// on a schema that is too old.
    async fn require_release<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        requirement: &str,
    ) -> Result<semver::Version, Error> {
        let req = semver::VersionReq::parse(requirement).map_err(|e| Error::BadRequirement {
            requirement: requirement.to_owned(),
            reason: e.to_string(),
        })?;
        let status = self.status(db).await?;
        match status.release {
            Some(v) if req.matches(&v) => Ok(v),
            found => Err(Error::ReleaseRequired { requirement: requirement.to_owned(), found }),
        }
    }

    /// Settles a `transaction none` revision recorded as failed or running.
    async fn resolve<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        id: &str,
        resolution: Resolution,
    ) -> Result<(), Error> {
        resolve(self.migrations(), &self.config(), db.into(), id, resolution).await
    }

    // ----- backfills (see `docs/backfills.md`) -----

    /// Runs every eligible backfill (its revision is applied) to completion,
    /// inline, in declaration order, on one connection. A backfill that another
    /// process is running is waited for; a paused one is skipped (its outcome
    /// says so). Stops at the first backfill that fails for good.
    async fn run_backfills<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<BackfillReport, Error> {
        crate::backfill::run(self.migrations(), &self.config(), db.into()).await
    }

    /// Starts every eligible backfill on a background task that takes its
    /// connections from `pool`, and returns at once. Call it within a tokio runtime.
    ///
    /// ```no_run
    /// # use pgskein::Migrator;
    /// # async fn f(set: pgskein::MigrationSet, pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
    /// set.run(&pool).await?;
    /// let backfills = set.spawn_backfills(&pool);
    /// // ... serve; later, on shutdown or in a job:
    /// let report = backfills.wait().await?;
    /// # Ok(()) }
    /// ```
    fn spawn_backfills(&self, pool: &deadpool_postgres::Pool) -> BackfillHandle {
        crate::backfill::spawn(self.migrations(), &self.config(), pool)
    }

    /// Every declared backfill with its recorded state and progress. Read-only.
    async fn backfill_status<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
    ) -> Result<Vec<BackfillStatus>, Error> {
        crate::backfill::status(self.migrations(), &self.config(), db.into()).await
    }

    /// Pauses a backfill: records `paused`, so no process runs it until it is
    /// resumed; a process running it stops after its current batch. Returns
    /// the state afterwards (a done backfill stays done).
    async fn pause_backfill<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        name: &str,
    ) -> Result<BackfillState, Error> {
        crate::backfill::pause_or_resume(self.migrations(), &self.config(), db.into(), name, true).await
    }

    /// Resumes a paused backfill: the next run (or a waiting deferred task) carries on
    /// from its checkpoint. Returns the state afterwards.
    async fn resume_backfill<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        name: &str,
    ) -> Result<BackfillState, Error> {
        crate::backfill::pause_or_resume(self.migrations(), &self.config(), db.into(), name, false).await
    }
}

impl Migrator for MigrationSet {
    fn migrations(&self) -> &MigrationSet {
        self
    }
}

/// A migrator with its own [`Config`], from [`Migrator::with_config`].
#[derive(Debug, Clone)]
pub struct Configured<M> {
    inner: M,
    config: Config,
}

impl<M: Migrator> Migrator for Configured<M> {
    fn migrations(&self) -> &MigrationSet {
        self.inner.migrations()
    }
    fn config(&self) -> Config {
        self.config.clone()
    }
}

async fn execute(
    set: &MigrationSet,
    cfg: &Config,
    db: Db<'_>,
    target: &Target,
    mode: Mode,
) -> Result<Report, Error> {
    if !(cfg.inline_backfills && mode == Mode::Upgrade && !set.backfills.is_empty()) {
        return execute_once(set, cfg, db, target, mode).await;
    }
    // Inline backfills: after a run that did something, or stopped at a
    // revision waiting for a backfill, run the eligible backfills, and go on
    // while they unblock revisions.
    let mut steps = Vec::new();
    loop {
        let result = execute_once(set, cfg, db, target, mode).await;
        match &result {
            Ok(r) if r.fast_path => return result,
            Ok(_) | Err(Error::BackfillIncomplete { .. }) => {}
            Err(_) => return result,
        }
        match result {
            Ok(mut r) => {
                steps.append(&mut r.steps);
                crate::backfill::run(set, cfg, db).await?;
                r.steps = steps;
                return Ok(r);
            }
            Err(Error::BackfillIncomplete { mut report, revision, backfill }) => {
                steps.append(&mut report.steps);
                let done = crate::backfill::run(set, cfg, db).await?;
                let finished = done.get(&backfill).is_some_and(|b| b.outcome == crate::BackfillOutcome::Done);
                if !finished {
                    report.steps = steps;
                    return Err(Error::BackfillIncomplete { revision, backfill, report });
                }
                tracing::info!(%backfill, "inline backfill finished; continuing the run");
            }
            Err(e) => return Err(e),
        }
    }
}

async fn execute_once(
    set: &MigrationSet,
    cfg: &Config,
    db: Db<'_>,
    target: &Target,
    mode: Mode,
) -> Result<Report, Error> {
    let started = Instant::now();
    cfg.validate()?;
    plan::check_target(&set.graph, target, mode)?;
    let ledger = Ledger::new(&cfg.schema);
    let conn = db.conn().await?;
    let meta = ledger.meta(conn.client()).await?;
    if let Meta::Present { format, digest } = &meta {
        ledger.check_format(*format)?;
        if mode == Mode::Upgrade && *digest == set.digest {
            tracing::debug!("nothing pending");
            return Ok(Report { fast_path: true, duration: started.elapsed(), ..Report::default() });
        }
    }
    // While we wait, the holder may bring the database to where we are
    // going: then the fast path holds, and we return as if we had started
    // after it, instead of queueing for the lock to learn it.
    let at_head = AtHead { ledger: &ledger, digest: &set.digest };
    let settled = (mode == Mode::Upgrade).then_some(&at_head as &dyn Settled);
    let (guard, lock_wait) = match lock(conn, cfg, settled).await? {
        Acquired::Locked(guard, waited) => (guard, waited),
        Acquired::NotNeeded(waited) => {
            tracing::debug!("nothing pending after waiting for the lock");
            return Ok(Report {
                fast_path: true,
                lock_wait: waited,
                duration: started.elapsed(),
                ..Report::default()
            });
        }
    };
    let mut report = Report { lock_wait, ..Report::default() };
    let result = locked(set, cfg, &ledger, guard.client(), &meta, target, mode, &mut report).await;
    guard.release().await;
    report.duration = started.elapsed();
    result.map(|()| report)
}

/// The fast path's test, repeated while waiting for the lock: the ledger's
/// digest of the applied set equals the code's.
struct AtHead<'s> {
    ledger: &'s Ledger,
    digest: &'s str,
}

impl Settled for AtHead<'_> {
    fn settled<'c>(
        &'c self,
        client: &'c Client,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, Error>> + Send + 'c>> {
        Box::pin(async move {
            Ok(
                matches!(self.ledger.meta(client).await?, Meta::Present { digest, .. } if digest == self.digest),
            )
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn locked(
    set: &MigrationSet,
    cfg: &Config,
    ledger: &Ledger,
    client: &Client,
    meta: &Meta,
    target: &Target,
    mode: Mode,
    report: &mut Report,
) -> Result<(), Error> {
    match meta {
        Meta::Missing => ledger.bootstrap(client).await?,
        Meta::Present { format, .. } => ledger.upgrade(client, *format).await?,
    }
    let graph = &set.graph;
    let rows = ledger.read(client).await?;
    let rec = plan::reconcile(graph, &rows);
    report.warnings = match check_drift(graph, &rec, &cfg.drift) {
        Err(Error::Blocked { id, state, statement, error, .. }) => {
            let invalid_indexes = ledger.invalid_indexes(client).await?;
            return Err(Error::Blocked { id, state, statement, error, invalid_indexes });
        }
        other => other?,
    };
    let steps = plan::plan(graph, &rec.applied, target, mode)?;
    plan::check_pinned(graph, &rec, &steps)?;
    // A revision that depends on an unfinished backfill is not applied: the
    // run applies what comes before it, then says which backfill blocks it.
    let blocked = match mode {
        Mode::Upgrade => crate::backfill::first_blocked(client, ledger, graph, &steps).await?,
        _ => None,
    };
    let blocked_error = |at: usize, backfill: String, report: &Report| Error::BackfillIncomplete {
        revision: graph.revs[steps[at].0].id.clone(),
        backfill,
        report: Box::new(report.clone()),
    };
    let steps = match &blocked {
        Some((0, backfill)) => return Err(blocked_error(0, backfill.clone(), report)),
        Some((at, _)) => &steps[..*at],
        None => &steps[..],
    };
    if steps.is_empty() {
        if mode == Mode::Upgrade
            && matches!(meta, Meta::Present { digest, .. } if *digest != rec.digest.to_string())
        {
            ledger.write_digest(client, &rec.digest.to_string()).await?;
        }
        return Ok(());
    }
    let hooks = if mode == Mode::Stamp { None } else { cfg.hooks.0.clone() };
    if let Some(h) = &hooks {
        let plan = Plan {
            steps: steps
                .iter()
                .map(|&(i, direction)| Step { id: graph.revs[i].id.clone(), direction })
                .collect(),
        };
        if let Err(source) = h.before_run(&plan).await {
            let error = Error::Hook { stage: "before_run", step: None, report: Box::default(), source };
            h.after_run(Err(&error)).await;
            return Err(error);
        }
    }
    let stmts = ledger.prepare(client).await?;
    let mut exec = Executor {
        client,
        stmts,
        digest: rec.digest,
        app_version: cfg.app_version.clone(),
        report: std::mem::take(report),
        hooks: hooks.clone(),
        timeouts: cfg.timeouts,
    };
    let result = match mode {
        Mode::Stamp => exec.stamp(graph, steps).await,
        _ => exec.run(graph, steps, cfg.transaction_mode).await,
    };
    *report = exec.report;
    let result = result.and_then(|()| match blocked {
        Some((at, backfill)) => Err(blocked_error(at, backfill, report)),
        None => Ok(()),
    });
    if let Some(h) = &hooks {
        h.after_run(result.as_ref().map(|()| &*report)).await;
    }
    result
}

fn check_drift(graph: &Graph, rec: &Reconciled, policy: &DriftPolicy) -> Result<Vec<Warning>, Error> {
    if let Some(row) = rec.blocked.first() {
        return Err(Error::Blocked {
            id: RevisionId::new(row.id.clone()).map_err(|reason| Error::CorruptLedger {
                schema: String::new(),
                id: row.id.clone(),
                reason,
            })?,
            state: row.state.clone(),
            statement: row.failed_statement,
            error: row.last_error.clone(),
            invalid_indexes: Vec::new(),
        });
    }
    let mut warnings = Vec::new();
    let mut apply = |p: Policy, err: Error, warning: Warning| match p {
        Policy::Error => Err(err),
        Policy::Warn => {
            tracing::warn!(?warning, "{err}");
            warnings.push(warning);
            Ok(())
        }
        Policy::Ignore => Ok(()),
    };
    if !rec.changed.is_empty() {
        let changed: Vec<(RevisionId, String)> =
            rec.changed.iter().map(|&i| (graph.revs[i].id.clone(), graph.revs[i].origin.clone())).collect();
        let ids = changed.iter().map(|(i, _)| i.clone()).collect();
        apply(
            policy.changed_checksum,
            Error::ChecksumMismatch { changed },
            Warning::ChecksumChanged { changed: ids },
        )?;
    }
    if !rec.unknown.is_empty() {
        let unknown = rec.unknown.clone();
        if rec.ahead {
            apply(policy.ahead, Error::Ahead { unknown: unknown.clone() }, Warning::Ahead { unknown })?;
        } else {
            apply(
                policy.diverged,
                Error::Diverged { unknown: unknown.clone() },
                Warning::Diverged { unknown },
            )?;
        }
    }
    Ok(warnings)
}

async fn read<'s>(set: &'s MigrationSet, cfg: &Config, db: Db<'_>) -> Result<(&'s Graph, Reconciled), Error> {
    cfg.validate()?;
    let ledger = Ledger::new(&cfg.schema);
    let conn = db.conn().await?;
    let rows = match ledger.meta(conn.client()).await? {
        Meta::Missing => Vec::new(),
        Meta::Present { format, .. } => {
            ledger.check_format(format)?;
            ledger.read(conn.client()).await?
        }
    };
    Ok((&set.graph, plan::reconcile(&set.graph, &rows)))
}

fn status_of(graph: &Graph, rec: &Reconciled) -> Status {
    let ids = |f: &dyn Fn(usize) -> bool| {
        (0..graph.len()).filter(|&i| f(i)).map(|i| graph.revs[i].id.clone()).collect()
    };
    let applied = |i: usize| rec.applied[i];
    Status {
        applied: ids(&applied),
        current: ids(&|i| rec.applied[i] && !graph.children[i].iter().any(|&c| rec.applied[c])),
        heads: graph.heads.iter().map(|&h| graph.revs[h].id.clone()).collect(),
        pending: ids(&|i| !rec.applied[i]),
        blocked: rec
            .blocked
            .iter()
            .map(|r| Blocked {
                id: r.id.clone(),
                state: r.state.clone(),
                statement: r.failed_statement,
                error: r.last_error.clone(),
            })
            .collect(),
        unknown: rec.unknown.clone(),
        ahead: rec.ahead,
        changed: rec.changed.iter().map(|&i| graph.revs[i].id.clone()).collect(),
        release: plan::newest_release(graph, &rec.applied),
    }
}

/// Takes the migration lock as the configuration says: how long it waited.
async fn lock<'a>(
    conn: Conn<'a>,
    cfg: &Config,
    settled: Option<&(dyn Settled + '_)>,
) -> Result<Acquired<'a>, Error> {
    match cfg.lock_mode {
        LockMode::DangerousNone => Ok(Acquired::Locked(LockGuard::unlocked(conn), Duration::ZERO)),
        _ => {
            let app = cfg.application_name.as_deref();
            LockGuard::acquire(conn, &cfg.schema, cfg.lock_wait_timeout, app, settled).await
        }
    }
}

/// A connection holding the migration lock, with the ledger read.
struct Session<'a> {
    guard: LockGuard<'a>,
    ledger: Ledger,
    rec: Reconciled,
}

impl<'a> Session<'a> {
    async fn open(set: &MigrationSet, cfg: &Config, db: Db<'a>) -> Result<Session<'a>, Error> {
        cfg.validate()?;
        let ledger = Ledger::new(&cfg.schema);
        let conn = db.conn().await?;
        let guard = match lock(conn, cfg, None).await? {
            Acquired::Locked(guard, _) => guard,
            Acquired::NotNeeded(..) => unreachable!("without a settled check the lock is always taken"),
        };
        let rows = match ledger.meta(guard.client()).await {
            Ok(Meta::Present { format, .. }) => {
                ledger.check_format(format).and(Ok(ledger.read(guard.client()).await))
            }
            Ok(Meta::Missing) => Ok(Ok(Vec::new())),
            Err(e) => Err(e),
        };
        match rows {
            Ok(Ok(rows)) => Ok(Session { rec: plan::reconcile(&set.graph, &rows), guard, ledger }),
            Ok(Err(e)) | Err(e) => {
                guard.release().await;
                Err(e)
            }
        }
    }

    fn client(&self) -> &Client {
        self.guard.client()
    }

    fn executor(&self, stmts: crate::ledger::Prepared, cfg: &Config) -> Executor<'_> {
        Executor {
            client: self.client(),
            stmts,
            digest: self.rec.digest.clone(),
            app_version: cfg.app_version.clone(),
            report: Report::default(),
            hooks: None,
            timeouts: cfg.timeouts,
        }
    }

    async fn close<T>(self, result: Result<T, Error>) -> Result<T, Error> {
        self.guard.release().await;
        result
    }
}

async fn resolve(
    set: &MigrationSet,
    cfg: &Config,
    db: Db<'_>,
    id: &str,
    resolution: Resolution,
) -> Result<(), Error> {
    let session = Session::open(set, cfg, db).await?;
    let result = async {
        let (client, rec) = (session.client(), &session.rec);
        let rid = RevisionId::new(id).map_err(|_| Error::UnknownTarget { target: id.to_owned() })?;
        let Some(row) = rec.blocked.iter().find(|r| r.id == id) else {
            return Err(Error::NothingToResolve { id: rid });
        };
        let mut digest = rec.digest.clone();
        let outcome = match resolution {
            Resolution::Retry => {
                let rev = set.get(id).ok_or_else(|| Error::UnknownTarget { target: id.to_owned() })?;
                let dir =
                    if row.direction.as_deref() == Some("down") { Direction::Down } else { Direction::Up };
                let from = row.failed_statement.unwrap_or(1);
                session.ledger.restart(client, id, from as i32).await?;
                let stmts = session.ledger.prepare(client).await?;
                let mut exec = session.executor(stmts, cfg);
                return exec.resume(rev, dir, from).await;
            }
            Resolution::MarkApplied => {
                digest.add(&row.id, &row.checksum);
                "applied"
            }
            Resolution::MarkReverted => "reverted",
        };
        session.ledger.resolve(client, id, outcome, &digest.to_string()).await?;
        Ok(())
    }
    .await;
    session.close(result).await
}

async fn repair(set: &MigrationSet, cfg: &Config, db: Db<'_>) -> Result<Vec<RevisionId>, Error> {
    let session = Session::open(set, cfg, db).await?;
    let result = async {
        let mut digest = session.rec.digest.clone();
        let mut repaired = Vec::new();
        for (&i, old) in session.rec.changed.iter().zip(&session.rec.changed_from) {
            let rev = &set.graph.revs[i];
            digest.remove(rev.id.as_str(), old);
            digest.add(rev.id.as_str(), &rev.checksum.to_hex());
            if session
                .ledger
                .repair(session.client(), rev.id.as_str(), &rev.checksum.to_hex(), &digest.to_string())
                .await?
            {
                tracing::info!(revision = %rev.id, "recorded the current checksum");
                repaired.push(rev.id.clone());
            }
        }
        Ok(repaired)
    }
    .await;
    session.close(result).await
}

async fn verify(set: &MigrationSet, cfg: &Config, db: Db<'_>) -> Result<VerifyReport, Error> {
    cfg.validate()?;
    let ledger = Ledger::new(&cfg.schema);
    let conn = db.conn().await?;
    let client = conn.client();
    let rows = match ledger.meta(client).await? {
        Meta::Missing => Vec::new(),
        Meta::Present { format, .. } => {
            ledger.check_format(format)?;
            ledger.read(client).await?
        }
    };
    let rec = plan::reconcile(&set.graph, &rows);
    let mut report = VerifyReport::default();
    for (i, rev) in set.graph.revs.iter().enumerate() {
        let Some(sql) = rev.verify.as_deref().filter(|_| rec.applied[i]) else { continue };
        report.checked.push(rev.id.clone());
        if let Some(why) = crate::executor::check_verify(client, sql).await {
            tracing::warn!(revision = %rev.id, %why, "verify failed");
            report.failed.push((rev.id.clone(), why));
        }
    }
    if !rows.is_empty() {
        ledger.record_verify(client, report.checked.len() as i64, report.failed.len() as i64).await?;
    }
    Ok(report)
}
