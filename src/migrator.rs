//! The `Migrator` trait and its configuration: orchestration only. Each
//! operation takes a connection, runs the fast path, takes the lock, reads
//! the ledger, asks `plan` what to do and `executor` to do it.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_postgres::Client;

use crate::error::Error;
use crate::executor::{Executor, Report, TransactionMode, Warning};
use crate::graph::Graph;
use crate::id::RevisionId;
use crate::ledger::{Ledger, Meta};
use crate::lock::{Acquired, Conn, LockGuard, LockMode, Settled};
use crate::plan::{self, DriftPolicy, Mode, Plan, Policy, Reconciled, Target};
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
    /// SHA-256(`"pgskein:" + schema`), big-endian. Find the holder with
    /// `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND ((classid::bigint << 32) | objid::bigint) = <key>`.
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

    fn validate(&self) -> Result<(), Error> {
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
    async fn conn(self) -> Result<Conn<'a>, Error> {
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
    /// The remaining statements were completed by hand: record it as applied.
    MarkApplied,
    /// What it did was undone by hand: forget it, so the next run applies it again.
    MarkReverted,
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

    /// Settles a `transaction none` revision recorded as failed or running.
    async fn resolve<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        id: &str,
        resolution: Resolution,
    ) -> Result<(), Error> {
        resolve(self.migrations(), &self.config(), db.into(), id, resolution).await
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
    let started = Instant::now();
    cfg.validate()?;
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
    let (guard, lock_wait) = match cfg.lock_mode {
        LockMode::DangerousNone => (LockGuard::unlocked(conn), Duration::ZERO),
        _ => {
            // While we wait, the holder may bring the database to where we are
            // going: then the fast path holds, and we return as if we had
            // started after it, instead of queueing for the lock to learn it.
            let at_head = AtHead { ledger: &ledger, digest: &set.digest };
            let settled = (mode == Mode::Upgrade).then_some(&at_head as &dyn Settled);
            let app = cfg.application_name.as_deref();
            match LockGuard::acquire(conn, &cfg.schema, cfg.lock_wait_timeout, app, settled).await? {
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
            }
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
    if *meta == Meta::Missing {
        ledger.bootstrap(client).await?;
    }
    let graph = &set.graph;
    let rows = ledger.read(client).await?;
    let rec = plan::reconcile(graph, &rows);
    report.warnings = check_drift(graph, &rec, &cfg.drift)?;
    let steps = plan::plan(graph, &rec.applied, target, mode)?;
    plan::check_pinned(graph, &rec, &steps)?;
    if steps.is_empty() {
        if mode == Mode::Upgrade
            && matches!(meta, Meta::Present { digest, .. } if *digest != rec.digest.to_string())
        {
            ledger.write_digest(client, &rec.digest.to_string()).await?;
        }
        return Ok(());
    }
    let stmts = ledger.prepare(client).await?;
    let mut exec = Executor {
        client,
        stmts,
        digest: rec.digest,
        app_version: cfg.app_version.clone(),
        report: std::mem::take(report),
    };
    let result = match mode {
        Mode::Stamp => exec.stamp(graph, &steps).await,
        _ => exec.run(graph, &steps, cfg.transaction_mode).await,
    };
    *report = exec.report;
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
    }
}

async fn resolve(
    set: &MigrationSet,
    cfg: &Config,
    db: Db<'_>,
    id: &str,
    resolution: Resolution,
) -> Result<(), Error> {
    cfg.validate()?;
    let ledger = Ledger::new(&cfg.schema);
    let conn = db.conn().await?;
    let app = cfg.application_name.as_deref();
    let guard = match LockGuard::acquire(conn, &cfg.schema, cfg.lock_wait_timeout, app, None).await? {
        Acquired::Locked(guard, _) => guard,
        Acquired::NotNeeded(..) => unreachable!("a resolution always needs the lock"),
    };
    let result = async {
        let client = guard.client();
        let rows = ledger.read(client).await?;
        let rec = plan::reconcile(&set.graph, &rows);
        let rid = RevisionId::new(id).map_err(|_| Error::UnknownTarget { target: id.to_owned() })?;
        let Some(row) = rec.blocked.iter().find(|r| r.id == id) else {
            return Err(Error::NothingToResolve { id: rid });
        };
        let mut digest = rec.digest.clone();
        let outcome = match resolution {
            Resolution::MarkApplied => {
                digest.add(&row.id, &row.checksum);
                "applied"
            }
            Resolution::MarkReverted => "reverted",
        };
        ledger.resolve(client, id, outcome, &digest.to_string()).await?;
        Ok(())
    }
    .await;
    guard.release().await;
    result
}
