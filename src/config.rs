//! The settings of a run, shared vocabulary of the orchestrator, the
//! executor and the edges: which schema, how to lock, how to wrap revisions
//! in transactions, timeouts, drift policies and hooks.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::hooks::{Hooks, Installed};
use crate::migration::Revision;
pub use crate::plan::{DriftPolicy, Policy};

/// Settings of a [`Migrator`](crate::Migrator). Every setting has a default; change them with the
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
    pub(crate) schema: String,
    pub(crate) lock_wait_timeout: Option<Duration>,
    pub(crate) transaction_mode: TransactionMode,
    pub(crate) drift: DriftPolicy,
    pub(crate) application_name: Option<String>,
    pub(crate) app_version: Option<String>,
    pub(crate) lock_mode: LockMode,
    pub(crate) lease_duration: Duration,
    pub(crate) hooks: Installed,
    pub(crate) timeouts: Timeouts,
    pub(crate) inline_backfills: bool,
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
            lease_duration: Duration::from_secs(30),
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
        lock_key(&self.schema)
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
    /// How concurrent runs are kept apart (default [`LockMode::Auto`]: the
    /// advisory lock on a direct connection, the lease through a connection pooler).
    pub fn lock_mode(mut self, mode: LockMode) -> Self {
        self.lock_mode = mode;
        self
    }
    /// How long the migration lease lasts without being renewed (default 30
    /// s, at least 100 ms); it is renewed every third of that while held. A
    /// run killed while holding it is taken over this long after its last
    /// renewal; a run that stalls longer than this (a paused process, a
    /// starved machine) loses the lease and records nothing more. Only the
    /// lease uses it: see [`LockMode::Lease`].
    pub fn lease_duration(mut self, duration: Duration) -> Self {
        self.lease_duration = duration.max(Duration::from_millis(100));
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
    /// [`Backfills::run`](crate::backfill::Backfills::run) or [`Backfills::spawn`](crate::backfill::Backfills::spawn)
    /// (see [`Migrator::backfills`](crate::Migrator::backfills)).
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

/// How the steps of a run are wrapped in transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransactionMode {
    /// Each revision commits with its ledger row (the default).
    #[default]
    PerRevision,
    /// The whole plan commits, or nothing does. `transaction none` revisions are refused.
    Single,
}

/// Lock and statement timeouts, and the retries of steps that hit the lock timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) lock: Option<Duration>,
    pub(crate) statement: Option<Duration>,
    pub(crate) attempts: u32,
    pub(crate) first_wait: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            lock: Some(Duration::from_secs(5)),
            statement: None,
            attempts: 5,
            first_wait: Duration::from_millis(500),
        }
    }
}

impl Timeouts {
    /// `SET LOCAL` or `SET` statements for these timeouts, each followed by
    /// `;` (milliseconds: no user text).
    pub(crate) fn sql(lock: Option<Duration>, statement: Option<Duration>, scope: Scope) -> String {
        let scope = match scope {
            Scope::Local => "SET LOCAL",
            Scope::Session => "SET",
        };
        let mut sql = String::new();
        for (name, value) in [("lock_timeout", lock), ("statement_timeout", statement)] {
            if let Some(d) = value {
                sql.push_str(&format!(" {scope} {name} = {};", d.as_millis()));
            }
        }
        sql
    }

    /// The lock and statement timeouts of a transactional revision: its own,
    /// else the run's.
    pub(crate) fn transactional(&self, rev: &Revision) -> (Option<Duration>, Option<Duration>) {
        (rev.lock_timeout.or(self.lock), rev.statement_timeout.or(self.statement))
    }

    /// The timeouts of a `transaction none` revision. The run's lock timeout
    /// applies to transactional revisions only: a `transaction none` revision
    /// is there for `CONCURRENTLY` operations, which block no one while they
    /// wait for older transactions, so a timeout would only make them fail on
    /// a busy database. Such a revision can still declare one.
    pub(crate) fn non_transactional(&self, rev: &Revision) -> (Option<Duration>, Option<Duration>) {
        (rev.lock_timeout, rev.statement_timeout.or(self.statement))
    }
}

/// Where a setting holds: the transaction, or the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Local,
    Session,
}

/// Attempts of a step that may fail on its lock timeout: the one retry policy
/// of transactional steps, single-transaction runs and `transaction none`
/// statements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempts {
    attempts: u32,
    first_wait: Duration,
    /// The attempt under way, from 1.
    pub(crate) attempt: u32,
    pub(crate) started: std::time::Instant,
}

/// SQLSTATE lock_not_available: a lock timeout expired.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";

impl Attempts {
    pub(crate) fn new(t: &Timeouts) -> Self {
        Attempts {
            attempts: t.attempts,
            first_wait: t.first_wait,
            attempt: 1,
            started: std::time::Instant::now(),
        }
    }

    /// After a failure with SQLSTATE `code`: the wait before the next attempt,
    /// or `None` when the failure is not a lock timeout or attempts are used up.
    pub(crate) fn retry_after(&mut self, code: Option<&str>) -> Option<Duration> {
        if code != Some(LOCK_NOT_AVAILABLE) || self.attempt >= self.attempts {
            return None;
        }
        self.attempt += 1;
        let factor = 1u32 << (self.attempt - 2).min(16);
        Some((self.first_wait * factor).min(Duration::from_secs(30)))
    }
}

/// How a run keeps concurrent runs apart. See `docs/locking.md`.
///
/// ```
/// use pgskein::config::LockMode;
/// use pgskein::Config;
/// // The default: the advisory lock on a direct connection, the lease through a pooler.
/// assert_eq!(LockMode::default(), LockMode::Auto);
/// let always_the_lease = Config::default().lock_mode(LockMode::Lease);
/// # let _ = always_the_lease;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LockMode {
    /// A session advisory lock on a direct connection; the lease when the
    /// connection goes through a connection pooler or proxy. The pooler is
    /// recognised before anything is changed, in the lock request itself: a
    /// run with nothing pending, or on a direct connection, pays nothing for it.
    #[default]
    Auto,
    /// Always the session advisory lock, on the run's one connection. A
    /// connection through a pooler or proxy is refused with
    /// [`Error::PoolerDetected`] before anything is changed.
    Advisory,
    /// Always the lease: a row of the bookkeeping schema with an owner, an
    /// expiry and a fencing token, taken and renewed in short transactions
    /// and proved by every ledger write. It works through any pooler;
    /// `docs/locking.md` says what a transaction pooler then does not keep
    /// (session state between the statements of a `transaction none` revision).
    Lease,
    /// No lock: for deployments with exactly one starter.
    ///
    /// # Warning
    /// Two concurrent runs without a lock can apply a revision twice or
    /// interleave; use this only when nothing else can run migrations.
    DangerousNone,
}

/// The 64-bit advisory-lock key of a bookkeeping schema.
pub(crate) fn lock_key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("pgskein:{schema}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The two 32-bit halves of an advisory-lock key, as `pg_locks` shows them
/// (`classid`, `objid`).
pub(crate) fn key_parts(key: i64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}
