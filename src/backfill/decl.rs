//! Backfill declarations: what a backfill is and how it is throttled, the
//! traits of Rust-coded steps and health checks, and the vocabulary of their
//! states, progress and reports. Pure: validated when the set is built; the
//! engine and the operations (`backfill`) run them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio_postgres::Client;

use crate::error::Error;
use crate::id::RevisionId;
use crate::rust::{BoxError, Conn};

/// A named, batched data change attached to a revision.
///
/// It becomes eligible once its revision is applied, and runs in batches, each
/// committed together with its checkpoint in the `backfills` table of the
/// bookkeeping schema. Declare it on the set with
/// [`SetBuilder::backfill`](crate::SetBuilder::backfill); run it with
/// [`Backfills::run`](crate::backfill::Backfills::run) (inline) or
/// [`Backfills::spawn`](crate::backfill::Backfills::spawn) (deferred), from
/// [`Migrator::backfills`](crate::Migrator::backfills).
///
/// Two kinds:
/// - [`Backfill::sql`]: one statement over a half-open range of an integer key,
///   `$1 <= key < $2`, given with [`table`](Backfill::table), [`key`](Backfill::key)
///   and [`statement`](Backfill::statement); pgskein walks the key range it
///   finds when the backfill starts;
/// - [`Backfill::rust`]: a [`BackfillStep`] given the last cursor and a batch size.
///
/// Every option has a default; the builder methods change them.
///
/// ```
/// use std::time::Duration;
/// use pgskein::backfill::Backfill;
///
/// let fill = Backfill::sql("documents_sha256", "0003_enhance_documents")
///     .table("documents")
///     .key("id")
///     .statement("UPDATE documents SET sha256 = encode(sha256(body::bytea), 'hex') WHERE id >= $1 AND id < $2")
///     .target_batch_duration(Duration::from_millis(50))
/// .rows_per_second(20_000)
/// .on_progress(|p| eprintln!("{}: {} rows, eta {:?}", p.name, p.rows_done, p.eta));
/// assert_eq!(fill.after_revision(), "0003_enhance_documents");
/// ```
#[derive(Clone)]
pub struct Backfill {
    pub(crate) name: String,
    pub(crate) after: String,
    pub(crate) kind: Kind,
    pub(crate) table: Option<String>,
    pub(crate) opts: Options,
    /// The first SQL-only builder method called on a Rust backfill, reported
    /// when the set is built.
    pub(crate) sql_only: Option<&'static str>,
}

#[derive(Clone)]
pub(crate) enum Kind {
    Sql { key: String, sql: String },
    Rust(Arc<dyn BackfillStep>),
}

type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) target: Duration,
    pub(crate) initial: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) growth: f64,
    pub(crate) rows_per_second: Option<u64>,
    pub(crate) pause: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) lock_timeout: Option<Duration>,
    pub(crate) max_replica_lag: Option<Duration>,
    pub(crate) autovacuum: bool,
    pub(crate) checks: Vec<Arc<dyn HealthCheck>>,
    pub(crate) health_interval: Duration,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) progress_interval: Duration,
    pub(crate) estimated_total: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(100),
            initial: 1_000,
            min: 1,
            max: 10_000_000,
            growth: 2.0,
            rows_per_second: None,
            pause: Duration::ZERO,
            max_retries: 5,
            retry_backoff: Duration::from_millis(200),
            statement_timeout: Some(Duration::from_secs(30)),
            lock_timeout: Some(Duration::from_secs(2)),
            max_replica_lag: Some(Duration::from_secs(10)),
            autovacuum: false,
            checks: Vec::new(),
            health_interval: Duration::from_secs(1),
            progress: None,
            progress_interval: Duration::from_secs(10),
            estimated_total: None,
        }
    }
}

impl Backfill {
    /// A backfill written as one SQL statement over a half-open key range of
    /// a table: name the table with [`table`](Backfill::table), its key column
    /// with [`key`](Backfill::key) and the statement with
    /// [`statement`](Backfill::statement). Building the set fails with
    /// [`Error::InvalidBackfill`] when one of the three is missing.
    ///
    /// When the backfill starts, pgskein reads `min(key)` and `max(key)` once
    /// and walks that range; the batch size is a number of keys.
    ///
    /// ```
    /// use pgskein::backfill::Backfill;
    ///
    /// let fill = Backfill::sql("documents_sha256_fill", "0003_enhance_documents")
    ///     .table("documents")
    ///     .key("id")
    ///     .statement("UPDATE documents SET sha256 = encode(sha256(body::bytea), 'hex') WHERE id >= $1 AND id < $2");
    /// assert_eq!(fill.table_name(), Some("documents"));
    /// ```
    pub fn sql(name: impl Into<String>, after_revision: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            after: after_revision.into(),
            kind: Kind::Sql { key: String::new(), sql: String::new() },
            table: None,
            opts: Options::default(),
            sql_only: None,
        }
    }

    /// A backfill written in Rust: `step` processes one batch per call, given
    /// the cursor its previous batch returned. See [`BackfillStep`].
    pub fn rust(name: impl Into<String>, after_revision: impl Into<String>, step: impl BackfillStep) -> Self {
        Self {
            name: name.into(),
            after: after_revision.into(),
            kind: Kind::Rust(Arc::new(step)),
            table: None,
            opts: Options::default(),
            sql_only: None,
        }
    }

    /// The backfill's name: unique in the set, and what `depends-on` names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The revision after which the backfill becomes eligible.
    pub fn after_revision(&self) -> &str {
        &self.after
    }

    /// The table it works on, if known (always for SQL backfills).
    pub fn table_name(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// `sql` or `rust`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Sql { .. } => "sql",
            Kind::Rust(_) => "rust",
        }
    }

    /// The table the backfill works on: a table name, optionally
    /// `schema.table`; each part is quoted as given.
    ///
    /// A SQL backfill needs it: its key range is read from it. For a Rust
    /// backfill it is optional, and used for the row estimate
    /// (`pg_class.reltuples`) and the autovacuum check.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// For SQL backfills: the key column of the [`table`](Backfill::table),
    /// an integer column (`smallint`, `integer`, `bigint`), preferably indexed.
    ///
    /// A Rust backfill has no key column: building a set with one that calls
    /// `key` fails with [`Error::InvalidBackfill`].
    pub fn key(mut self, column: impl Into<String>) -> Self {
        match &mut self.kind {
            Kind::Sql { key, .. } => *key = column.into(),
            Kind::Rust(_) => self.sql_only = self.sql_only.or(Some("key")),
        }
        self
    }

    /// For SQL backfills: the statement each batch runs, over a half-open key
    /// range: `$1` is the first key of a batch, `$2` the first key after it,
    /// for example `UPDATE documents SET sha256 = ... WHERE id >= $1 AND id < $2`.
    /// `$1` and `$2` take the type PostgreSQL infers for them (`integer` next
    /// to an `integer` column); write `$1::bigint` to force one.
    ///
    /// A Rust backfill's batches are its [`BackfillStep`]: building a set with
    /// one that calls `statement` fails with [`Error::InvalidBackfill`].
    pub fn statement(mut self, statement: impl Into<String>) -> Self {
        match &mut self.kind {
            Kind::Sql { sql, .. } => *sql = statement.into(),
            Kind::Rust(_) => self.sql_only = self.sql_only.or(Some("statement")),
        }
        self
    }

    /// The duration each batch should take (default 100 ms). Batch sizes adapt
    /// towards it: short batches waste round trips and commits, long ones hold
    /// row locks the application may be waiting for.
    pub fn target_batch_duration(mut self, target: Duration) -> Self {
        self.opts.target = target.max(Duration::from_millis(1));
        self
    }

    /// The size of the first batch (default 1,000 rows or keys).
    pub fn initial_batch_size(mut self, size: u64) -> Self {
        self.opts.initial = size.max(1);
        self
    }

    /// The smallest and largest batch sizes (default 1 and 10,000,000).
    pub fn batch_size_limits(mut self, min: u64, max: u64) -> Self {
        self.opts.min = min.max(1);
        self.opts.max = max.max(self.opts.min);
        self
    }

    /// How much a batch may grow over the previous one (default 2.0, at least 1.1).
    /// Shrinking after a slow batch is not bounded.
    pub fn max_growth(mut self, factor: f64) -> Self {
        self.opts.growth = if factor.is_finite() { factor.max(1.1) } else { 2.0 };
        self
    }

    /// An upper bound on the rows processed per second (default: none).
    pub fn rows_per_second(mut self, limit: u64) -> Self {
        self.opts.rows_per_second = Some(limit.max(1));
        self
    }

    /// A pause after every batch (default: none).
    pub fn pause_between_batches(mut self, pause: Duration) -> Self {
        self.opts.pause = pause;
        self
    }

    /// How many times a failed batch is retried before the backfill stops as
    /// `failed` (default 5). A batch that hits `statement_timeout` is retried at half the size.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.opts.max_retries = retries;
        self
    }

    /// The wait before the first retry of a failed batch (default 200 ms); it
    /// doubles on each further retry, up to 10 s.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.opts.retry_backoff = backoff;
        self
    }

    /// `statement_timeout` inside each batch (default 30 s; `None`: the server's).
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.opts.statement_timeout = timeout;
        self
    }

    /// `lock_timeout` inside each batch (default 2 s; `None`: the server's), so
    /// a batch never queues for long behind the application's locks.
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.opts.lock_timeout = timeout;
        self
    }

    /// Wait while a replica's replay lag (`pg_stat_replication.replay_lag`) is
    /// above `bound` (default 10 s; `None` turns the check off). The role needs
    /// `pg_monitor` (or to be a superuser) to see the lag; otherwise the check sees none.
    pub fn max_replica_lag(mut self, bound: Option<Duration>) -> Self {
        self.opts.max_replica_lag = bound;
        self
    }

    /// Wait while autovacuum works on the backfill's table
    /// (`pg_stat_progress_vacuum`; default off).
    pub fn pause_during_autovacuum(mut self, pause: bool) -> Self {
        self.opts.autovacuum = pause;
        self
    }

    /// Adds a health check of your own; the backfill waits while any check says so.
    pub fn health_check(mut self, check: impl HealthCheck) -> Self {
        self.opts.checks.push(Arc::new(check));
        self
    }

    /// How often the health checks run (default every second, before a batch).
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.opts.health_interval = interval;
        self
    }

    /// A callback after every batch (and while a health check holds the backfill).
    /// It runs on the backfill's task: keep it quick.
    pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.opts.progress = Some(Arc::new(f));
        self
    }

    /// How often progress is logged at `info` and recorded as a
    /// `backfill_progress` event (default every 10 s).
    pub fn progress_interval(mut self, interval: Duration) -> Self {
        self.opts.progress_interval = interval;
        self
    }

    /// The number of rows a Rust backfill will process, for progress and ETA
    /// (default: the table's `pg_class.reltuples`, when [`table`](Backfill::table) is set).
    pub fn estimated_total(mut self, rows: u64) -> Self {
        self.opts.estimated_total = Some(rows);
        self
    }
}

impl fmt::Debug for Backfill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backfill")
            .field("name", &self.name)
            .field("after_revision", &self.after)
            .field("kind", &self.kind())
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// One batch of a Rust backfill.
///
/// `batch` runs inside the batch's transaction, through the same
/// [`Conn`] handle Rust-coded revisions get (never `COMMIT` through it);
/// pgskein commits it together
/// with the returned cursor, so the next call (in this process or, after a
/// crash, in another) starts exactly where this one ended. Return an error to
/// roll the batch back; it is retried, then the backfill stops as `failed`.
///
/// The cursor is text so that any key shape fits (a number, a JSON object of
/// a compound key). To keep the "fixed range" guarantee of SQL backfills, fix
/// the upper bound on the first call (cursor `None`) and carry it in the cursor.
///
/// ```
/// use pgskein::backfill::{BackfillStep, Batch};
/// use pgskein::error::BoxError;
/// use pgskein::rust::Conn;
///
/// struct LowercaseEmails;
///
/// #[async_trait::async_trait]
/// impl BackfillStep for LowercaseEmails {
///     async fn batch(
///         &self,
///         tx: &Conn<'_>,
///         cursor: Option<&str>,
///         limit: u64,
///     ) -> Result<Batch, BoxError> {
///         let after: i64 = cursor.map(str::parse).transpose()?.unwrap_or(0);
///         let row = tx
///             .query_one(
///                 "WITH b AS (SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2),
///                       u AS (UPDATE users SET email = lower(email) FROM b WHERE users.id = b.id RETURNING users.id)
///                  SELECT count(*), max(id) FROM u",
///                 &[&after, &(limit as i64)],
///             )
///             .await?;
///         let (rows, last): (i64, Option<i64>) = (row.get(0), row.get(1));
///         Ok(match last {
///             Some(last) if rows as u64 == limit => Batch::more(rows as u64, last.to_string()),
///             _ => Batch::done(rows as u64),
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait BackfillStep: Send + Sync + 'static {
    /// Processes at most about `limit` rows after `cursor` (`None`: from the
    /// start) in `tx`, and says where the next batch starts.
    async fn batch(&self, tx: &Conn<'_>, cursor: Option<&str>, limit: u64) -> Result<Batch, BoxError>;
}

/// What one batch of a Rust backfill did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The rows it processed (for progress and the rows-per-second limit).
    pub rows: u64,
    /// Where the next batch starts; `None` when the backfill is done.
    pub next: Option<String>,
}

impl Batch {
    /// `rows` processed, and more to do from `next`.
    pub fn more(rows: u64, next: impl Into<String>) -> Self {
        Self { rows, next: Some(next.into()) }
    }
    /// `rows` processed, and nothing left.
    pub fn done(rows: u64) -> Self {
        Self { rows, next: None }
    }
}

/// What a health check says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Run the next batch.
    Proceed,
    /// Hold the backfill, for the given reason (it is logged), and ask again later.
    Wait(String),
}

/// A check consulted before batches; the backfill waits while it says [`Health::Wait`].
///
/// ```
/// use pgskein::backfill::{Health, HealthCheck};
/// use pgskein::error::BoxError;
///
/// /// Waits while more than 50 sessions are active.
/// struct NotTooBusy;
///
/// #[async_trait::async_trait]
/// impl HealthCheck for NotTooBusy {
///     async fn check(
///         &self,
///         client: &tokio_postgres::Client,
///     ) -> Result<Health, BoxError> {
///         let row = client.query_one("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'", &[]).await?;
///         let active: i64 = row.get(0);
///         Ok(if active > 50 { Health::Wait(format!("{active} active sessions")) } else { Health::Proceed })
///     }
/// }
/// ```
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// Looks at the server (through the backfill's own connection, outside any
    /// transaction). An error is logged and counts as "wait".
    async fn check(&self, client: &Client) -> Result<Health, BoxError>;
}

/// Where a backfill stands, as passed to the [`on_progress`](Backfill::on_progress) callback.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Progress {
    /// The backfill.
    pub name: String,
    /// Rows processed so far, over every run.
    pub rows_done: u64,
    /// The expected number of rows: the key range of a SQL backfill, else the
    /// declared estimate or the table's `reltuples`.
    pub estimated_total: Option<u64>,
    /// Done fraction (by key range for SQL backfills), 0.0 to 1.0.
    pub fraction: Option<f64>,
    /// Rows per second in this run.
    pub rows_per_second: f64,
    /// Estimated time to completion at the current rate.
    pub eta: Option<Duration>,
    /// Batches committed so far, over every run.
    pub batches: u64,
    /// The size of the last batch (keys for SQL backfills, the limit given to a Rust step).
    pub batch_size: u64,
    /// Rows the last batch processed.
    pub batch_rows: u64,
    /// How long the last batch took, from BEGIN to COMMIT.
    pub batch_duration: Duration,
    /// The size chosen for the next batch.
    pub next_batch_size: u64,
    /// Set while a health check holds the backfill: why.
    pub waiting: Option<String>,
}

/// The state of a backfill, as recorded in the `backfills` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackfillState {
    /// Not started yet.
    Pending,
    /// Started and not finished: running now, or interrupted and waiting to be resumed
    /// ([`BackfillStatus::active`] tells which).
    Running,
    /// Paused through the API: no process runs it until it is resumed.
    Paused,
    /// Finished.
    Done,
    /// Stopped after a batch failed on every retry; the next run resumes it.
    Failed,
}

impl BackfillState {
    /// The word stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillState::Pending => "pending",
            BackfillState::Running => "running",
            BackfillState::Paused => "paused",
            BackfillState::Done => "done",
            BackfillState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => BackfillState::Pending,
            "running" => BackfillState::Running,
            "paused" => BackfillState::Paused,
            "done" => BackfillState::Done,
            "failed" => BackfillState::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for BackfillState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One backfill, as [`Backfills::status`](crate::backfill::Backfills::status) reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackfillStatus {
    /// The backfill.
    pub name: String,
    /// The revision it runs after.
    pub revision: String,
    /// Whether that revision is applied.
    pub eligible: bool,
    /// Its recorded state (`Pending` when it has no row yet).
    pub state: BackfillState,
    /// Whether a session holds its lock, i.e. some process is running it now.
    pub active: bool,
    /// Rows processed.
    pub rows_done: u64,
    /// Expected rows, when known.
    pub estimated_total: Option<u64>,
    /// Done fraction, when known.
    pub fraction: Option<f64>,
    /// The half-open key range of a SQL backfill, fixed when it started.
    pub key_range: Option<(i64, i64)>,
    /// Where the next batch starts.
    pub cursor: Option<String>,
    /// The last batch size.
    pub batch_size: Option<u64>,
    /// Batches committed.
    pub batches: u64,
    /// The last recorded error.
    pub last_error: Option<String>,
    /// When it started.
    pub started_at: Option<SystemTime>,
    /// When its row last changed.
    pub updated_at: Option<SystemTime>,
    /// When it finished.
    pub finished_at: Option<SystemTime>,
}

/// What a call that runs backfills did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BackfillReport {
    /// One entry per declared backfill, in declaration order.
    pub backfills: Vec<BackfillRun>,
}

impl BackfillReport {
    /// The entry of one backfill.
    pub fn get(&self, name: &str) -> Option<&BackfillRun> {
        self.backfills.iter().find(|b| b.name == name)
    }
}

/// One backfill of a [`BackfillReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackfillRun {
    /// The backfill.
    pub name: String,
    /// How it ended.
    pub outcome: BackfillOutcome,
    /// Rows processed by this call.
    pub rows: u64,
    /// Batches committed by this call.
    pub batches: u64,
    /// Time spent on it by this call.
    pub duration: Duration,
}

/// How a backfill ended in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackfillOutcome {
    /// It finished in this call (possibly after another process did part of it).
    Done,
    /// It was already done.
    AlreadyDone,
    /// It is paused, so this call did not run it (or stopped at a pause).
    Paused,
    /// Its revision is not applied yet.
    NotEligible,
}

// ----- declaration checks (pure) -----

/// Checks the declared backfills against the revisions; returns name -> revision
/// for the graph, which lets `depends-on` name a backfill.
pub(crate) fn validate(
    backfills: &[Backfill],
    ids: &HashSet<&str>,
) -> Result<HashMap<RevisionId, RevisionId>, Error> {
    let mut out = HashMap::with_capacity(backfills.len());
    for b in backfills {
        let invalid = |reason: String| Error::InvalidBackfill { name: b.name.clone(), reason };
        let name = RevisionId::new(b.name.as_str()).map_err(|m| {
            invalid(format!(
                "{} (a backfill name follows the rules of revision ids)",
                m.replace("revision id", "name")
            ))
        })?;
        if ids.contains(b.name.as_str()) {
            return Err(invalid(
                "a revision has the same id, so `depends-on` could not tell them apart; rename the backfill"
                    .into(),
            ));
        }
        if let Some(method) = b.sql_only {
            return Err(invalid(format!(
                "a Rust backfill has no {method}: .{method}(..) applies to SQL backfills only (Backfill::sql)"
            )));
        }
        if let Kind::Sql { key, sql } = &b.kind {
            if b.table.as_deref().is_none_or(|t| t.trim().is_empty()) {
                return Err(invalid("the SQL backfill has no table: call .table(\"...\")".into()));
            }
            if key.trim().is_empty() {
                return Err(invalid("the SQL backfill has no key column: call .key(\"...\")".into()));
            }
            if sql.trim().is_empty() {
                return Err(invalid("the SQL backfill has no statement: call .statement(\"...\")".into()));
            }
            if !(sql.contains("$1") && sql.contains("$2")) {
                return Err(invalid(
                    "the statement must use $1 and $2 as the key range (`WHERE key >= $1 AND key < $2`)"
                        .into(),
                ));
            }
        }
        if !ids.contains(b.after.as_str()) {
            return Err(Error::BackfillUnknownRevision { name: b.name.clone(), revision: b.after.clone() });
        }
        let after = RevisionId::new(b.after.as_str()).expect("a known revision id is valid");
        if out.insert(name, after).is_some() {
            return Err(Error::DuplicateBackfill { name: b.name.clone() });
        }
    }
    Ok(out)
}
