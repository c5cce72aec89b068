//! The `Migrator` trait: orchestration only. Each operation opens a
//! [`Session`] (read-only, or locked), asks `plan` what to do and the
//! executor to do it, and closes the session, which releases the lock.

use std::time::Instant;

use async_trait::async_trait;
use tokio_postgres::Client;

use std::borrow::Cow;

use crate::backfill::Backfills;
use crate::config::{Config, TransactionMode};
use crate::error::Error;
use crate::executor::Executor;
use crate::graph::Graph;
use crate::id::RevisionId;
use crate::ledger::{Ledger, Resolved};
use crate::lock::Settled;
use crate::plan::{self, DriftPolicy, Mode, Plan, Policy, Reconciled, Target};
use crate::preflight::Preflight;
use crate::report::{Report, Warning};
use crate::session::{Db, Opened, Session};
use crate::source::MigrationSet;
use crate::state::{LockHolder, Meta, Record, RowState};
use crate::status::{Blocked, Resolution, Status, VerifyReport};

/// Runs migrations. Implement [`migrations`](Migrator::migrations); everything else is provided.
///
/// [`MigrationSet`], [`Embedded`](crate::Embedded) (from
/// [`embed_migrations!`](crate::embed_migrations)) and [`LazySet`](crate::LazySet)
/// implement it with the default [`Config`]; use
/// [`with_config`](Migrator::with_config) to change settings.
///
/// ```no_run
/// use pgskein::Migrator;
///
/// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
///
/// # async fn start(pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
/// let report = MIGRATIONS.run(&pool).await?;
/// println!("applied {} revisions", report.steps.len());
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Migrator: Send + Sync {
    /// The revisions to migrate with, validated. A source that loads them
    /// when first needed ([`Embedded`](crate::Embedded), [`LazySet`](crate::LazySet))
    /// parses them on the first call, reports what does not load, and keeps
    /// the set.
    fn migrations(&self) -> Result<&MigrationSet, Error>;

    /// The [fingerprint](MigrationSet::fingerprint) of the set
    /// [`migrations`](Migrator::migrations) gives, when it is known without
    /// loading the set. A run towards every head compares it with the
    /// database's first and returns when they are equal, so a database at
    /// head costs one query and no parsing. The default, `None`, loads the
    /// set to learn it; a type wrapping another migrator forwards it.
    ///
    /// # Warning
    /// A value other than the set's fingerprint makes runs return without
    /// applying what is pending, or always load the set.
    fn known_fingerprint(&self) -> Option<&str> {
        None
    }

    /// Settings; the default is [`Config::default`]. Borrowed when the
    /// migrator holds them (as [`Configured`] does), so a call copies nothing.
    fn config(&self) -> Cow<'_, Config> {
        Cow::Owned(Config::default())
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
        execute(self, &self.config(), db.into(), &Target::Heads, Mode::Upgrade, FastPath::Ask).await
    }

    /// Applies what `target` needs. Never removes anything.
    async fn upgrade<'a>(&self, db: impl Into<Db<'a>> + Send + 'a, target: &Target) -> Result<Report, Error> {
        execute(self, &self.config(), db.into(), target, Mode::Upgrade, FastPath::Ask).await
    }

    /// Reverts revisions down to `target` (`base`, `-N`, or a revision that stays applied).
    async fn downgrade<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        target: &Target,
    ) -> Result<Report, Error> {
        execute(self, &self.config(), db.into(), target, Mode::Downgrade, FastPath::Ask).await
    }

    /// Records the database as being at `target` without running any body.
    ///
    /// # Warning
    /// The ledger then says what the schema does not necessarily contain; use it
    /// to adopt a database migrated by other means, or after repairing by hand.
    async fn stamp<'a>(&self, db: impl Into<Db<'a>> + Send + 'a, target: &Target) -> Result<Report, Error> {
        execute(self, &self.config(), db.into(), target, Mode::Stamp, FastPath::Ask).await
    }

    /// What is applied, pending, blocked or unknown. Read-only; takes no lock.
    async fn status<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<Status, Error> {
        let graph = &self.migrations()?.graph;
        let session = Session::read(db.into().conn().await?, &self.config()).await?;
        let status = status_of(graph, &session.state);
        session.close(Ok(status)).await
    }

    /// The steps an upgrade (or, for `base`, `-N` and applied revisions, a
    /// downgrade) to `target` would run now. Read-only; takes no lock.
    async fn plan<'a>(&self, db: impl Into<Db<'a>> + Send + 'a, target: &Target) -> Result<Plan, Error> {
        let graph = &self.migrations()?.graph;
        let session = Session::read(db.into().conn().await?, &self.config()).await?;
        let plan = plan::either_way(graph, &plan::reconcile(graph, &session.state.records), target)
            .map(|steps| Plan::of(graph, &steps));
        session.close(plan).await
    }

    /// The script an upgrade (or downgrade, as [`plan`](Migrator::plan) decides)
    /// to `target` would run now, with its bookkeeping statements, as SQL to
    /// review or to run with psql. Rust-coded steps appear as marked comments.
    /// Read-only; takes no lock.
    async fn sql<'a>(
        &self,
        db: impl Into<Db<'a>> + Send + 'a,
        target: &Target,
        style: TransactionMode,
    ) -> Result<String, Error> {
        let config = self.config();
        let set = self.migrations()?;
        let session = Session::read(db.into().conn().await?, &config).await?;
        let rec = plan::reconcile(&set.graph, &session.state.records);
        let sql = plan::either_way(&set.graph, &rec, target)
            .and_then(|steps| crate::offline::render(&set.graph, &steps, config.schema_name(), style));
        session.close(sql).await
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
        let set = self.migrations()?;
        let session = Session::read(db.into().conn().await?, &config).await?;
        let rec = plan::reconcile(&set.graph, &session.state.records);
        let steps = plan::either_way(&set.graph, &rec, target)?;
        let fresh = session.state.meta == Meta::Missing;
        let result = crate::preflight::check(&set.graph, &steps, session.client(), fresh).await;
        session.close(result).await
    }

    /// Re-runs the verify section of every applied revision, each in a
    /// transaction that is rolled back, and records the outcome in `events`.
    async fn verify<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<VerifyReport, Error> {
        verify(self.migrations()?, &self.config(), db.into()).await
    }

    /// Records the current checksums of applied revisions whose file changed,
    /// after an intentional edit (each logged as a `repair` event). Returns them.
    ///
    /// # Warning
    /// The ledger then vouches for SQL that never ran as written: make sure the
    /// database really matches the edited files.
    async fn repair<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<Vec<RevisionId>, Error> {
        repair(self.migrations()?, &self.config(), db.into()).await
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
        resolve(self.migrations()?, &self.config(), db.into(), id, resolution).await
    }

    /// The backfill operations of this migration set, with this migrator's configuration:
    /// run them inline or on a background task, read their status, pause,
    /// resume or reset one. See [`Backfills`] and `docs/backfills.md`.
    ///
    /// ```no_run
    /// # use pgskein::Migrator;
    /// # async fn f(set: pgskein::MigrationSet, pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
    /// set.run(&pool).await?;
    /// let backfills = set.backfills()?.spawn(&pool);
    /// # Ok(()) }
    /// ```
    fn backfills(&self) -> Result<Backfills<'_>, Error> {
        Ok(Backfills::new(self.migrations()?, self.config()))
    }
}

impl Migrator for MigrationSet {
    fn migrations(&self) -> Result<&MigrationSet, Error> {
        Ok(self)
    }
    fn known_fingerprint(&self) -> Option<&str> {
        Some(&self.digest)
    }
}

/// A borrowed migrator is one: `(&MIGRATIONS).with_config(..)` on a `static`.
impl<M: Migrator> Migrator for &M {
    fn migrations(&self) -> Result<&MigrationSet, Error> {
        (**self).migrations()
    }
    fn known_fingerprint(&self) -> Option<&str> {
        (**self).known_fingerprint()
    }
    fn config(&self) -> Cow<'_, Config> {
        (**self).config()
    }
}

// ----- the sources that load their set when first needed -----

#[cfg(feature = "macros")]
impl Migrator for crate::Embedded {
    fn migrations(&self) -> Result<&MigrationSet, Error> {
        self.set()
    }

    /// The digest computed at compile time. In debug builds, the first call
    /// also warns when the files on disk differ from the embedded ones.
    fn known_fingerprint(&self) -> Option<&str> {
        self.check_source();
        Some(self.digest())
    }
}

#[cfg(feature = "macros")]
impl crate::Embedded {
    /// Upgrades to every head with the default [`Config`]: [`Migrator::run`],
    /// callable without importing the trait. At head it costs one query,
    /// takes no lock and parses nothing.
    ///
    /// ```no_run
    /// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
    ///
    /// # async fn start(client: tokio_postgres::Client) -> Result<(), pgskein::Error> {
    /// let report = MIGRATIONS.run(&client).await?;
    /// println!("applied {} revisions", report.steps.len());
    /// # Ok(()) }
    /// ```
    pub async fn run<'a>(&self, db: impl Into<Db<'a>> + Send + 'a) -> Result<Report, Error> {
        Migrator::run(self, db).await
    }
}

impl Migrator for crate::LazySet {
    fn migrations(&self) -> Result<&MigrationSet, Error> {
        self.set()
    }

    fn known_fingerprint(&self) -> Option<&str> {
        self.fingerprint_if_known()
    }
}

/// A migrator with its own [`Config`], from [`Migrator::with_config`].
#[derive(Debug, Clone)]
pub struct Configured<M> {
    inner: M,
    config: Config,
}

impl<M: Migrator> Migrator for Configured<M> {
    fn migrations(&self) -> Result<&MigrationSet, Error> {
        self.inner.migrations()
    }
    fn known_fingerprint(&self) -> Option<&str> {
        self.inner.known_fingerprint()
    }
    fn config(&self) -> Cow<'_, Config> {
        Cow::Borrowed(&self.config)
    }
}

/// A run's state across its rounds (with inline backfills, a run goes on
/// past the revisions a finished backfill unblocks): one report, and hooks
/// that see one `before_run` and one `after_run`.
struct Run {
    report: Report,
    /// Set once `before_run` has been called.
    announced: bool,
}

/// How one round of a run ended.
enum Round {
    /// Nothing was pending (or another run did it while we waited).
    Fast,
    /// The round applied what it could.
    Done,
}

/// Whether a run's first round asks the fast path's query.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FastPath {
    Ask,
    /// The caller has just asked it and found work.
    Asked,
}

/// An upgrade for a caller that has just read the fast path's answer and
/// found work (the CLI, which reads it while it reads the files): the same
/// query is not sent again.
pub(crate) async fn upgrade_with_work<M: Migrator + ?Sized>(
    m: &M,
    db: Db<'_>,
    target: &Target,
) -> Result<Report, Error> {
    execute(m, &m.config(), db, target, Mode::Upgrade, FastPath::Asked).await
}

async fn execute<M: Migrator + ?Sized>(
    m: &M,
    cfg: &Config,
    db: Db<'_>,
    target: &Target,
    mode: Mode,
    mut fast: FastPath,
) -> Result<Report, Error> {
    let started = Instant::now();
    cfg.validate()?;
    // A run towards every head needs no graph to check its target, so it
    // reaches the fast path without loading the set; other targets are
    // checked first, so a target that names nothing is an error even when
    // there is nothing to do.
    if !(mode == Mode::Upgrade && *target == Target::Heads) {
        plan::check_target(&m.migrations()?.graph, target, mode)?;
    }
    // Inline backfills are looked for only once a round had work, when the set is loaded.
    let inline = || -> Result<bool, Error> {
        Ok(cfg.inline_backfills && mode == Mode::Upgrade && !m.migrations()?.backfills.is_empty())
    };
    let hooks = if mode == Mode::Stamp { None } else { cfg.hooks.0.clone() };
    let mut run = Run { report: Report::default(), announced: false };
    let mut first = true;
    let result = loop {
        let round = execute_once(m, cfg, db, target, mode, fast, &mut run).await;
        fast = FastPath::Ask;
        let inline = match &round {
            Ok(Round::Done) | Err(Error::BackfillIncomplete { .. }) => match inline() {
                Ok(inline) => inline,
                Err(e) => break Err(e),
            },
            _ => false,
        };
        match round {
            Ok(Round::Fast) => {
                run.report.fast_path = first;
                break Ok(());
            }
            Ok(Round::Done) if inline => break run_backfills(m, cfg, db).await.map(drop),
            Ok(Round::Done) => break Ok(()),
            Err(Error::BackfillIncomplete { revision, backfill, .. }) if inline => {
                // Run the eligible backfills; go on while they unblock revisions.
                let done = match run_backfills(m, cfg, db).await {
                    Ok(done) => done,
                    Err(e) => break Err(e),
                };
                // Finished here, or by another replica while this one waited.
                let finished = |b: &crate::backfill::BackfillRun| {
                    matches!(
                        b.outcome,
                        crate::backfill::BackfillOutcome::Done
                            | crate::backfill::BackfillOutcome::AlreadyDone
                    )
                };
                if !done.get(&backfill).is_some_and(finished) {
                    break Err(Error::BackfillIncomplete {
                        revision,
                        backfill,
                        report: Box::new(run.report.clone()),
                    });
                }
                tracing::info!(%backfill, "inline backfill finished; continuing the run");
            }
            Err(Error::BackfillIncomplete { revision, backfill, .. }) => {
                break Err(Error::BackfillIncomplete {
                    revision,
                    backfill,
                    report: Box::new(run.report.clone()),
                });
            }
            Err(e) => break Err(e),
        }
        first = false;
    };
    run.report.duration = started.elapsed();
    if let (Some(h), true) = (&hooks, run.announced) {
        h.after_run(result.as_ref().map(|()| &run.report)).await;
    }
    result.map(|()| run.report)
}

async fn run_backfills<M: Migrator + ?Sized>(
    m: &M,
    cfg: &Config,
    db: Db<'_>,
) -> Result<crate::backfill::BackfillReport, Error> {
    crate::backfill::run(m.migrations()?, cfg, db).await
}

/// The fast path's one query: what `meta` holds, refused when a newer
/// pgskein made it unreadable. [`Meta::at`] then says whether the database
/// holds exactly the applied set of a fingerprint. `execute_once` decides
/// with it, and the CLI asks it (while it reads the files) before loading
/// anything for a run that may have nothing to do.
pub(crate) async fn fast_path_meta(ledger: &Ledger, client: &Client) -> Result<Meta, Error> {
    let meta = ledger.meta(client).await?;
    ledger.check_format(&meta)?;
    Ok(meta)
}

/// One round: the fast path, else the lock, the ledger, the plan, the steps.
///
/// The fast path is decided on the set's fingerprint alone: when the source
/// knows it without loading the set ([`Migrator::known_fingerprint`]), a
/// database at head costs one query and nothing is parsed. Otherwise, or
/// when there is work, the set is loaded (and validated) here.
async fn execute_once<M: Migrator + ?Sized>(
    m: &M,
    cfg: &Config,
    db: Db<'_>,
    target: &Target,
    mode: Mode,
    fast: FastPath,
    run: &mut Run,
) -> Result<Round, Error> {
    let ledger = Ledger::new(&cfg.schema);
    let conn = db.conn().await?;
    // Only an upgrade can find nothing to do from the digest alone; the
    // other modes go to the lock without spending a query on it.
    if mode == Mode::Upgrade && fast == FastPath::Ask {
        let digest = match m.known_fingerprint() {
            Some(digest) => digest,
            None => m.migrations()?.fingerprint(),
        };
        if fast_path_meta(&ledger, conn.client()).await?.at(digest) {
            tracing::debug!("nothing pending");
            return Ok(Round::Fast);
        }
    }
    let set = m.migrations()?;
    // While we wait, the holder may bring the database to where we are
    // going: then the fast path holds, and we return as if we had started
    // after it, instead of queueing for the lock to learn it.
    let at_head = AtHead { ledger: &ledger, digest: &set.digest };
    let settled = (mode == Mode::Upgrade).then_some(&at_head as &dyn Settled);
    let session = match Session::lock(conn, cfg, settled).await? {
        Opened::Locked(session, waited) => {
            run.report.lock_wait += waited;
            session
        }
        Opened::NotNeeded(waited) => {
            tracing::debug!("nothing pending after waiting for the lock");
            run.report.lock_wait += waited;
            return Ok(Round::Fast);
        }
    };
    let result = locked(set, cfg, &session, target, mode, run).await;
    (*session).close(result).await
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
        Box::pin(async move { Ok(self.ledger.meta(client).await?.at(self.digest)) })
    }
}

async fn locked(
    set: &MigrationSet,
    cfg: &Config,
    session: &Session<'_>,
    target: &Target,
    mode: Mode,
    run: &mut Run,
) -> Result<Round, Error> {
    let graph = &set.graph;
    let rec = plan::reconcile(graph, &session.state.records);
    let warnings = match check_drift(graph, &rec, &cfg.drift, &session.ledger.schema) {
        Err(Error::Blocked { id, state, direction, statement, error, .. }) => {
            let invalid_indexes = session.ledger.invalid_indexes(session.client()).await?;
            return Err(Error::Blocked { id, state, direction, statement, error, invalid_indexes });
        }
        other => other?,
    };
    run.report.warnings.extend(warnings);
    let steps = plan::plan(graph, &rec.applied, target, mode)?;
    plan::check_pinned(graph, &rec, &steps)?;
    if session.lease().is_some() && mode != Mode::Stamp {
        crate::executor::check_pooled(graph, &steps, &cfg.timeouts)?;
    }
    // A revision that depends on an unfinished backfill is not applied: the
    // run applies what comes before it, then says which backfill blocks it.
    let blocked = match mode {
        Mode::Upgrade => {
            crate::backfill::first_blocked(session.client(), &session.ledger, graph, &steps).await?
        }
        _ => None,
    };
    let blocked_error = |at: usize, backfill: String| Error::BackfillIncomplete {
        revision: graph.revs[steps[at].0].id.clone(),
        backfill,
        report: Box::default(),
    };
    let steps = match &blocked {
        Some((0, backfill)) => return Err(blocked_error(0, backfill.clone())),
        Some((at, _)) => &steps[..*at],
        None => &steps[..],
    };
    if steps.is_empty() {
        return Ok(Round::Done);
    }
    let hooks = if mode == Mode::Stamp { None } else { cfg.hooks.0.clone() };
    if let (Some(h), false) = (&hooks, run.announced) {
        let plan = Plan::of(graph, steps);
        if let Err(source) = h.before_run(&plan).await {
            let error = Error::Hook {
                stage: crate::error::HookStage::BeforeRun,
                step: None,
                report: Box::default(),
                source,
            };
            h.after_run(Err(&error)).await;
            return Err(error);
        }
        run.announced = true;
    }
    let mut exec = Executor::new(session, cfg, hooks);
    exec.report = std::mem::take(&mut run.report);
    let result = match mode {
        Mode::Stamp => exec.stamp(graph, steps).await,
        _ => exec.run(graph, steps, cfg.transaction_mode).await,
    };
    run.report = exec.report;
    result?;
    match blocked {
        Some((at, backfill)) => Err(blocked_error(at, backfill)),
        None => Ok(Round::Done),
    }
}

fn blocked_of(row: &Record, holder: Option<&LockHolder>) -> Option<Blocked> {
    let RowState::Blocked(state, direction) = row.state else { return None };
    Some(Blocked {
        id: row.id.clone(),
        state,
        direction,
        statement: row.statement,
        error: row.last_error.clone(),
        holder: holder.cloned(),
    })
}

fn check_drift(
    graph: &Graph,
    rec: &Reconciled,
    policy: &DriftPolicy,
    schema: &str,
) -> Result<Vec<Warning>, Error> {
    if let Some(b) = rec.blocked.first().and_then(|r| blocked_of(r, None)) {
        return Err(Error::Blocked {
            id: RevisionId::new(b.id.clone()).map_err(|reason| Error::CorruptLedger {
                schema: schema.to_owned(),
                id: b.id.clone(),
                reason,
            })?,
            state: b.state,
            direction: b.direction,
            statement: b.statement,
            error: b.error,
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

fn status_of(graph: &Graph, state: &crate::state::LedgerState) -> Status {
    let rec = plan::reconcile(graph, &state.records);
    let ids = |f: &dyn Fn(usize) -> bool| {
        (0..graph.len()).filter(|&i| f(i)).map(|i| graph.revs[i].id.clone()).collect()
    };
    let applied = |i: usize| rec.applied[i];
    Status {
        applied: ids(&applied),
        current: ids(&|i| rec.applied[i] && !graph.children[i].iter().any(|&c| rec.applied[c])),
        heads: graph.heads.iter().map(|&h| graph.revs[h].id.clone()).collect(),
        pending: ids(&|i| !rec.applied[i]),
        blocked: rec.blocked.iter().filter_map(|r| blocked_of(r, state.holder.as_ref())).collect(),
        unknown: rec.unknown.clone(),
        ahead: rec.ahead,
        changed: rec.changed.iter().map(|&i| graph.revs[i].id.clone()).collect(),
        release: plan::newest_release(graph, &rec.applied),
    }
}

async fn resolve(
    set: &MigrationSet,
    cfg: &Config,
    db: Db<'_>,
    id: &str,
    resolution: Resolution,
) -> Result<(), Error> {
    let session = Session::locked(db.conn().await?, cfg).await?;
    let result = async {
        let rid = RevisionId::new(id).map_err(|_| Error::UnknownTarget { target: id.to_owned() })?;
        let Some(record) = session.state.records.iter().find(|r| r.id == id && !r.is_applied()) else {
            return Err(Error::NothingToResolve { id: rid });
        };
        let RowState::Blocked(_, direction) = record.state else {
            return Err(Error::NothingToResolve { id: rid });
        };
        let rev = set.get(id).ok_or_else(|| Error::UnknownTarget { target: id.to_owned() })?;
        if let (Resolution::Retry, Some(i), Some(_)) = (resolution, set.graph.get(id), session.lease()) {
            crate::executor::check_pooled(&set.graph, &[(i, direction)], &cfg.timeouts)?;
        }
        let mut exec = Executor::new(&session, cfg, None);
        match resolution {
            Resolution::Retry => exec.resume(rev, record, direction).await,
            Resolution::MarkApplied => exec.settle(rev, Resolved::Applied).await,
            Resolution::MarkReverted => exec.settle(rev, Resolved::Reverted).await,
        }
    }
    .await;
    session.close(result).await
}

async fn repair(set: &MigrationSet, cfg: &Config, db: Db<'_>) -> Result<Vec<RevisionId>, Error> {
    let session = Session::locked(db.conn().await?, cfg).await?;
    let result = async {
        let rec = plan::reconcile(&set.graph, &session.state.records);
        let exec = Executor::new(&session, cfg, None);
        let mut repaired = Vec::new();
        for &i in &rec.changed {
            let rev = &set.graph.revs[i];
            if exec.repair(rev).await? {
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
    let session = Session::read(db.conn().await?, cfg).await?;
    let result = async {
        let client = session.client();
        let rec = plan::reconcile(&set.graph, &session.state.records);
        let mut report = VerifyReport::default();
        for (i, rev) in set.graph.revs.iter().enumerate() {
            let Some(sql) = rev.verify.as_deref().filter(|_| rec.applied[i]) else { continue };
            report.checked.push(rev.id.clone());
            if let Some(why) = crate::executor::check_verify(client, sql).await {
                tracing::warn!(revision = %rev.id, %why, "verify failed");
                report.failed.push((rev.id.clone(), why));
            }
        }
        if !session.state.records.is_empty() {
            let (checked, failed) = (report.checked.len() as i64, report.failed.len() as i64);
            crate::executor::record_verify(client, &session.ledger, checked, failed).await?;
        }
        Ok(report)
    }
    .await;
    session.close(result).await
}
