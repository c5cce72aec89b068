//! The one error type. Variants are grouped by phase (loading the set,
//! resolving a target, talking to the database) and carry ids and paths as
//! fields; messages say what to do. A database error is a `#[source]`, never
//! repeated in the message, so reporters that walk the chain print it once.

use std::time::Duration;

use crate::id::RevisionId;
use crate::report::Direction;
use crate::report::Report;
pub use crate::source::parse_error::ParseErrorKind;
use crate::state::{BlockedState, LockHolder};

/// The error a Rust-coded revision, a hook or a backfill step returns:
/// anything that is an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which hook stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookStage {
    /// [`Hooks::before_run`](crate::Hooks::before_run): nothing was applied.
    BeforeRun,
    /// [`Hooks::before_step`](crate::Hooks::before_step): the steps before it stay applied.
    BeforeStep,
}

impl std::fmt::Display for HookStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookStage::BeforeRun => "before_run",
            HookStage::BeforeStep => "before_step",
        })
    }
}

/// Everything that can go wrong in pgskein.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- loading the migration set -----
    /// A migration directory or file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A revision file is malformed.
    #[error("{path}{}: {kind}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: String,
        /// The 1-based line, when the problem has one.
        line: Option<usize>,
        /// What is wrong.
        kind: ParseErrorKind,
    },
    /// Two files declare the same revision id.
    #[error("revision {id} is defined twice, in {first} and in {second}; rename one of them")]
    DuplicateRevision {
        /// The id.
        id: RevisionId,
        /// Where it was first seen.
        first: String,
        /// Where it was seen again.
        second: String,
    },
    /// A revision revises, or depends on, a revision that does not exist.
    #[error(
        "revision {id} ({path}) {relation} {parent}, which is not in the migration set; fix the directive or add the missing file"
    )]
    UnknownParent {
        /// The revision with the dangling edge.
        id: RevisionId,
        /// Its file.
        path: String,
        /// `revises` or `depends on`.
        relation: &'static str,
        /// The missing revision.
        parent: RevisionId,
    },
    /// A revision revises or depends on a repeatable revision, which stands outside the graph.
    #[error(
        "revision {id} ({path}) revises or depends on {parent}, which is repeatable; repeatable revisions run after all versioned ones and cannot be parents"
    )]
    RevisesRepeatable {
        /// The revision with the edge.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The repeatable revision.
        parent: RevisionId,
    },
    /// The revisions form a cycle.
    #[error(
        "the revisions form a cycle: {}; a revision cannot (indirectly) revise or depend on itself",
        cycle_text(ids, files)
    )]
    Cycle {
        /// The ids around the cycle, the first repeated at the end.
        ids: Vec<RevisionId>,
        /// The file of each id in `ids`.
        files: Vec<String>,
    },
    /// The graph has several heads and the set does not allow that.
    #[error("the migration set has {} heads: {}; add a merge revision that revises them all (`-- pgskein: revises {}`), or allow multiple heads", heads.len(), join(heads), join(heads))]
    MultipleHeads {
        /// The heads.
        heads: Vec<RevisionId>,
    },
    /// A transactional revision contains a statement that must run outside a
    /// transaction, or transaction control of its own.
    #[error("{path}:{line}: {operation} cannot run inside the revision's transaction; declare the revision `-- pgskein: transaction none`{}", if *control { " (it then runs statement by statement, as psql runs the file)" } else { "" })]
    NeedsNoTransaction {
        /// The file.
        path: String,
        /// The statement's line.
        line: usize,
        /// The offending operation, e.g. `CREATE INDEX CONCURRENTLY` or `COMMIT`.
        operation: &'static str,
        /// Whether the operation is transaction control (`BEGIN`, `COMMIT`, ...).
        control: bool,
    },

    // ----- resolving a target and planning -----
    /// A target names no revision, branch or keyword.
    #[error(
        "unknown target {target:?}: expected head, heads, base, +N, -N, <branch>@head, or a revision id or unique prefix"
    )]
    UnknownTarget {
        /// The target as given.
        target: String,
    },
    /// A revision prefix matches several revisions.
    #[error("target {prefix:?} matches several revisions: {}; give more characters", join(candidates))]
    AmbiguousPrefix {
        /// The prefix.
        prefix: String,
        /// What it matches.
        candidates: Vec<RevisionId>,
    },
    /// A target that must name one head names several.
    #[error(
        "target {target:?} is ambiguous: there are several heads ({}); name one, use `heads`, or merge them",
        join(heads)
    )]
    AmbiguousTarget {
        /// The target.
        target: String,
        /// The candidate heads.
        heads: Vec<RevisionId>,
    },
    /// A downgrade would pass through a revision without a down section.
    #[error(
        "cannot downgrade through revision {id} ({path}): it has no `-- pgskein: down` section; add one, or stamp past it"
    )]
    Irreversible {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
    },
    /// A downgrade target is not applied, so there is nothing to downgrade to.
    #[error("cannot downgrade to {id}: it is not applied; use upgrade to reach it")]
    TargetNotApplied {
        /// The target revision.
        id: RevisionId,
    },
    /// A downgrade would remove a revision that applied revisions unknown to this code build on.
    #[error(
        "cannot downgrade {id}: applied revisions unknown to this code ({}) build on it; downgrade with the newer code first",
        join(unknown)
    )]
    DowngradeBelowUnknown {
        /// The revision the plan would remove.
        id: RevisionId,
        /// The unknown applied revisions.
        unknown: Vec<String>,
    },
    /// Single-transaction mode cannot include a `transaction none` revision.
    #[error(
        "revision {id} ({path}) is `transaction none` and cannot run in single-transaction mode; use per-revision transactions for this run"
    )]
    NoTransactionInSingleMode {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
    },

    // ----- the database -----
    /// No connection could be taken from the pool.
    #[error("cannot get a connection from the pool")]
    Pool {
        /// The cause.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// A bookkeeping query failed.
    #[error("database error while {context}")]
    Db {
        /// What pgskein was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A revision failed and was rolled back (or, for `transaction none`,
    /// recorded as failed). `report` holds what was applied before it.
    #[error("revision {id} ({path}) failed{}{}", statement.map(|s| format!(" at statement {s}")).unwrap_or_default(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    RevisionFailed {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The 1-based index of the statement that failed, when known.
        statement: Option<usize>,
        /// The statement's line in the file, when known.
        line: Option<usize>,
        /// What was done before the failure.
        report: Box<Report>,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A step failed on its lock timeout on every attempt.
    #[error("revision {id} ({path}) could not get its locks: lock_timeout{} expired on each of {attempts} attempts over {waited:.1?}; a long transaction holds a lock on a table it changes. Find it in pg_stat_activity / pg_locks, or raise the revision's `-- pgskein: lock-timeout` or Config::lock_retries", lock_timeout.map(|t| format!(" ({t:?})")).unwrap_or_default())]
    LockRetriesExhausted {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// How many attempts were made.
        attempts: u32,
        /// The lock timeout of each attempt.
        lock_timeout: Option<Duration>,
        /// Time from the first attempt to the last failure.
        waited: Duration,
        /// What was done before the failure.
        report: Box<Report>,
        /// The last attempt's database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A Rust-coded revision returned an error; its transaction was rolled back
    /// (for `Transaction::None`, it is recorded as failed).
    #[error("revision {id} ({path}) failed")]
    RustRevisionFailed {
        /// The revision.
        id: RevisionId,
        /// Where it was declared.
        path: String,
        /// What was done before the failure.
        report: Box<Report>,
        /// The error the code returned.
        #[source]
        source: BoxError,
    },
    /// A hook returned an error and stopped the run.
    #[error("the {stage} hook{} failed; the run stopped{}", step.as_ref().map(|s| format!(" for {s}")).unwrap_or_default(), if step.is_some() { " before that step" } else { " before doing anything" })]
    Hook {
        /// `before_run` or `before_step`.
        stage: HookStage,
        /// The step it guarded, for `before_step`.
        step: Option<RevisionId>,
        /// What was done before the failure.
        report: Box<Report>,
        /// The hook's error.
        #[source]
        source: BoxError,
    },
    /// A verify query returned false.
    #[error(
        "verification of revision {id} ({path}) failed: `{query}` returned false; the revision was rolled back"
    )]
    VerifyFailed {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The verify statement that returned false.
        query: String,
        /// What was done before the failure.
        report: Box<Report>,
    },
    /// A `transaction none` revision is recorded as failed or still running, and blocks every later run.
    #[error("revision {id} is recorded as {state}{}{}{}{}; pgskein will not run past it. Fix the cause, then call `resolve` with `Retry` (resume at the recorded statement, dropping invalid indexes it left), or finish or undo its remaining statements by hand and use `MarkApplied` or `MarkReverted`", if *direction == Direction::Down { " (going down)" } else { "" }, statement.map(|s| format!(" at statement {s}")).unwrap_or_default(), error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(), if invalid_indexes.is_empty() { String::new() } else { format!("; invalid indexes left behind: {}", invalid_indexes.join(", ")) })]
    Blocked {
        /// The revision.
        id: RevisionId,
        /// Whether it failed or never finished.
        state: BlockedState,
        /// The direction it was going.
        direction: Direction,
        /// The 1-based statement that failed, or that was running.
        statement: Option<usize>,
        /// The recorded error message.
        error: Option<String>,
        /// Invalid indexes in the database, as a failed `CREATE INDEX CONCURRENTLY` leaves them.
        invalid_indexes: Vec<String>,
    },
    /// A revision released the migration lock (`pg_advisory_unlock_all()`,
    /// `DISCARD ALL` or the like), so another migrator may have started: the
    /// run stopped at it. A transactional revision was rolled back; a
    /// `transaction none` one stays recorded as running.
    #[error("revision {id} ({path}) released pgskein's migration lock (pg_advisory_unlock_all(), DISCARD ALL or the like), so the run stopped: {}; remove the unlock from the revision", if *rolled_back { "it was rolled back and nothing after it ran" } else { "its statements ran, and it stays recorded as running: check what it did, then resolve it" })]
    LockReleased {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// Whether its work was rolled back.
        rolled_back: bool,
        /// What was done before it.
        report: Box<Report>,
    },
    /// The run's migration lease expired, or another migrator took it over,
    /// before revision `id` was recorded: the process stalled (paused,
    /// starved, cut off) longer than the lease lasts, so another migrator may
    /// have started. The run stopped there. A transactional revision was
    /// rolled back; a `transaction none` one stays recorded as running.
    #[error("the migration lease of this run (fencing token {token}) expired or was taken over by another migrator before revision {id} ({path}) was recorded, so the run stopped: {}. Run again to carry on; if the process pauses longer than the lease lasts, raise Config::lease_duration, and give the run a pool so that its heartbeat renews the lease during long statements", if *rolled_back { "it was rolled back and nothing after it ran" } else { "its statements ran, and it stays recorded as running: check what it did, then resolve it" })]
    LeaseLost {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The fencing token of the lost lease.
        token: i64,
        /// Whether its work was rolled back.
        rolled_back: bool,
        /// What was done before it.
        report: Box<Report>,
    },
    /// A `transaction none` revision needs one server session across its
    /// statements, which the run cannot have: it holds the lease because the
    /// connection goes through a connection pooler, where each statement of
    /// such a revision may run on another server session. Refused before
    /// anything ran.
    #[error("revision {id} ({path}{}) is `transaction none` and {need}, which needs one server session across its statements; through a connection pooler (the run holds the lease) each of its statements may run on another server session. Nothing was changed. Run it over a direct connection, or {}", line.map(|l| format!(":{l}")).unwrap_or_default(), need.fix())]
    NeedsSession {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The line of the statement, when a statement is the cause.
        line: Option<usize>,
        /// What needs the session.
        need: SessionNeed,
    },
    /// A revision dropped or altered pgskein's bookkeeping schema.
    #[error("revision {id} ({path}) dropped or altered pgskein's bookkeeping schema {schema:?}, so it could not be recorded{}; a revision must leave that schema alone", if *rolled_back { " and was rolled back" } else { ": its statements ran. Restore the bookkeeping tables from a backup, or stamp the database to where it is" })]
    LedgerDropped {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The bookkeeping schema.
        schema: String,
        /// Whether its work was rolled back.
        rolled_back: bool,
        /// What was done before it.
        report: Box<Report>,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A revision's SQL ran, but recording it failed (the revision left its
    /// transaction read-only, or the like).
    #[error("revision {id} ({path}) ran, but recording it in the ledger failed{}", if *rolled_back { ", so it was rolled back; the revision leaves its transaction in a state pgskein cannot record in (SET TRANSACTION READ ONLY?)" } else { ": its statements ran, and it stays recorded as running; resolve it" })]
    NotRecorded {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// Whether its work was rolled back.
        rolled_back: bool,
        /// What was done before it.
        report: Box<Report>,
        /// The database error of the ledger write.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The ledger changed while this run held the lock: a write found rows it
    /// did not expect (a hand edit?). Nothing more was recorded.
    #[error(
        "the ledger changed while this run held the migration lock: recording revision {id}: {what}; check the bookkeeping tables (edited by hand?) and run again"
    )]
    LedgerChanged {
        /// The revision being recorded.
        id: RevisionId,
        /// What the write found.
        what: &'static str,
        /// What was done before it.
        report: Box<Report>,
    },
    /// A `transaction none` revision left invalid indexes (a concurrent index
    /// build that did not finish); it is recorded as failed, not applied.
    #[error("revision {id} ({path}) left invalid indexes: {}; it is recorded as failed. Retry it (the invalid indexes are dropped first), or drop them and resolve it", indexes.join(", "))]
    InvalidIndexLeft {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The invalid indexes, schema-qualified.
        indexes: Vec<String>,
        /// What was done before it.
        report: Box<Report>,
    },
    /// A `transaction none` revision opened a transaction (`BEGIN`) and did not
    /// end it; pgskein rolled it back and recorded the revision as failed.
    #[error("revision {id} ({path}) opened a transaction at statement {statement}{} and did not end it; it was rolled back and the revision is recorded as failed. End the transaction with COMMIT in the file", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    OpenTransaction {
        /// The revision.
        id: RevisionId,
        /// Its file.
        path: String,
        /// The 1-based statement that opened the transaction.
        statement: usize,
        /// Its line in the file.
        line: Option<usize>,
        /// What was done before it.
        report: Box<Report>,
    },
    /// Applied revisions whose file changed since they were applied.
    #[error("applied revisions changed since they were applied: {}; restore the files, or record the new checksums if the edit was intentional", changed.iter().map(|(id, p)| format!("{id} ({p})")).collect::<Vec<_>>().join(", "))]
    ChecksumMismatch {
        /// The changed revisions and their files.
        changed: Vec<(RevisionId, String)>,
    },
    /// Applied revisions unknown to the code that do not descend from its heads.
    #[error(
        "the database history has diverged from the code: applied revisions {} are not in the migration set and do not descend from its heads; deploy the code that has them, or downgrade them with it",
        join(unknown)
    )]
    Diverged {
        /// The unknown applied revisions.
        unknown: Vec<String>,
    },
    /// Applied revisions unknown to the code that descend from its heads (the policy made this an error).
    #[error(
        "the database is ahead of the code: applied revisions {} are not in the migration set",
        join(unknown)
    )]
    Ahead {
        /// The unknown applied revisions.
        unknown: Vec<String>,
    },
    /// The migration lock was not acquired within the configured wait.
    #[error("timed out after {waited:?} waiting for the migration lock{}; another migrator is running, or a session holds the lock: find it in pg_locks and end it if it is stuck", holder.as_ref().map(|h| format!(" held by {h}")).unwrap_or_default())]
    LockTimeout {
        /// How long we waited.
        waited: Duration,
        /// Who held it at the last look.
        holder: Option<LockHolder>,
    },
    /// The advisory lock was granted but this backend does not hold it: a
    /// proxy that the first lock request did not give away hands each
    /// transaction to another server session.
    #[error(
        "the migration lock was granted but pg_locks shows this session does not hold it: the connection goes through a transaction-pooling proxy. Nothing was changed. Use LockMode::Auto or LockMode::Lease (CLI: --lock-mode auto or lease), or connect directly to PostgreSQL"
    )]
    LockNotHeld,
    /// The connection goes through a connection pooler or proxy, and
    /// [`LockMode::Advisory`](crate::config::LockMode::Advisory), whose session lock
    /// needs one server session for the whole run, was asked for. Recognised
    /// before anything was changed: the backend that answered is not the one
    /// the connection was given at startup.
    #[error(
        "the connection goes through a connection pooler or proxy (the server sees it come from {seen_from}; backend {backend_pid} answered, not backend {startup_pid} named when the connection started), and LockMode::Advisory needs one server session for the whole run, which a transaction pooler (PgBouncer pool_mode=transaction, the Supabase and Neon poolers, RDS Proxy) does not keep. Nothing was changed. Use LockMode::Auto or LockMode::Lease (CLI: --lock-mode auto or lease), or connect directly to PostgreSQL"
    )]
    PoolerDetected {
        /// The backend pid that answered (`pg_backend_pid()`).
        backend_pid: i32,
        /// The backend pid in the connection's cancel key, set by the pooler.
        startup_pid: i32,
        /// The pooler's address as the server sees it, or `local`.
        seen_from: String,
    },
    /// The bookkeeping tables were written by a newer pgskein.
    #[error(
        "the bookkeeping tables in schema {schema:?} have format {found}, newer than this pgskein understands ({supported}); upgrade pgskein"
    )]
    FormatTooNew {
        /// The schema.
        schema: String,
        /// The format in the database.
        found: i32,
        /// The newest format this build knows.
        supported: i32,
    },
    /// A ledger row could not be understood.
    #[error("the ledger row for {id:?} in schema {schema:?} is malformed: {reason}")]
    CorruptLedger {
        /// The schema.
        schema: String,
        /// The row's id column.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The configured bookkeeping schema name cannot be used.
    #[error("invalid bookkeeping schema name {schema:?}: {reason}")]
    InvalidSchema {
        /// The name.
        schema: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// `require_release` was given a requirement that is not semver.
    #[error("invalid release requirement {requirement:?}: {reason}")]
    BadRequirement {
        /// The requirement as given.
        requirement: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The database is not at the release a service requires.
    #[error("the database schema is {}, but release {requirement} is required; run the migrations of that release first", found.as_ref().map(|v| format!("at release {v}")).unwrap_or_else(|| "at no declared release".to_owned()))]
    ReleaseRequired {
        /// The requirement.
        requirement: String,
        /// The newest release fully applied.
        found: Option<semver::Version>,
    },
    /// `resolve` was called on a revision that is not failed or running.
    #[error("revision {id} is not recorded as failed or running; nothing to resolve")]
    NothingToResolve {
        /// The revision.
        id: RevisionId,
    },

    // ----- backfills -----
    /// A backfill's declaration is unusable (its name, table or key column).
    #[error("backfill {name:?} is invalid: {reason}")]
    InvalidBackfill {
        /// The backfill.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Two backfills have the same name.
    #[error("backfill {name} is declared twice; backfill names must be unique")]
    DuplicateBackfill {
        /// The name.
        name: String,
    },
    /// A backfill is attached to a revision that is not in the migration set.
    #[error("backfill {name} runs after revision {revision}, which is not in the migration set")]
    BackfillUnknownRevision {
        /// The backfill.
        name: String,
        /// The missing revision.
        revision: String,
    },
    /// An operation names a backfill the migration set does not declare.
    #[error("no backfill named {name:?} is declared in the migration set")]
    UnknownBackfill {
        /// The name.
        name: String,
    },
    /// A revision that depends on a backfill was not applied because the
    /// backfill is not done. `report` holds what the run applied before it.
    #[error(
        "revision {revision} depends on backfill {backfill}, which is not complete; finish the backfill first (Backfills::run or Backfills::spawn, or Backfills::resume if it is paused or failed), then run again"
    )]
    BackfillIncomplete {
        /// The revision that was not applied.
        revision: RevisionId,
        /// The unfinished backfill.
        backfill: String,
        /// What the run applied before stopping.
        report: Box<Report>,
    },
    /// A backfill cannot be reset: another session is running it.
    #[error(
        "backfill {name} is being run by another session (pid {pid}); pause it and reset it once that session has stopped, or force the reset"
    )]
    BackfillRunning {
        /// The backfill.
        name: String,
        /// The backend running it.
        pid: i32,
    },
    /// A backfill batch failed on every retry. The backfill is recorded as
    /// `failed` with the error and resumes from its last checkpoint when run again.
    #[error(
        "backfill {name} failed after {attempts} attempts at one batch; it is recorded as failed and resumes from its last checkpoint when run again"
    )]
    BackfillFailed {
        /// The backfill.
        name: String,
        /// How many times the batch was tried.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A backfill was to run on a connection through a connection pooler or
    /// proxy. A backfill holds a session advisory lock while it runs and
    /// reuses a prepared statement across its batches, which a transaction
    /// pooler does not keep. Recognised before anything was changed.
    #[error(
        "backfill {name} cannot run through a connection pooler or proxy (the server sees the connection come from {seen_from}): it holds a session lock and reuses a prepared statement across its batches, which a transaction pooler does not keep. Nothing was changed. Run backfills over a direct connection to PostgreSQL"
    )]
    BackfillThroughPooler {
        /// The backfill.
        name: String,
        /// The pooler's address as the server sees it, or `local`.
        seen_from: String,
    },
    /// The background task of deferred backfills was cancelled (its runtime
    /// shut down) before it finished.
    #[error(
        "the background backfill task was cancelled before it finished; the backfills resume from their checkpoints when run again"
    )]
    BackfillTaskCancelled,
}

/// What a `transaction none` revision needs one server session for
/// ([`Error::NeedsSession`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionNeed {
    /// A session-level `SET` or `RESET`, outside a `BEGIN ... COMMIT` block of the file.
    Setting,
    /// `PREPARE`, for a later statement to `EXECUTE`.
    PreparedStatement,
    /// A temporary table, view or sequence, for later statements.
    TemporaryObject,
    /// `LISTEN`.
    Listen,
    /// A lock or statement timeout (the revision's own, or
    /// `Config::statement_timeout`), which pgskein sets for the session
    /// before the revision's statements.
    Timeout,
}

impl SessionNeed {
    fn fix(self) -> &'static str {
        match self {
            SessionNeed::Setting => {
                "move the statement and those that need its setting into a BEGIN ... COMMIT block of the file (use SET LOCAL there), which runs on one session"
            }
            SessionNeed::PreparedStatement | SessionNeed::TemporaryObject | SessionNeed::Listen => {
                "put the statements that use it in a BEGIN ... COMMIT block of the file, which runs on one session"
            }
            SessionNeed::Timeout => {
                "remove the revision's lock-timeout and statement-timeout directives (and Config::statement_timeout for this run)"
            }
        }
    }
}

impl std::fmt::Display for SessionNeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionNeed::Setting => "sets a session setting with SET or RESET",
            SessionNeed::PreparedStatement => "prepares a statement with PREPARE",
            SessionNeed::TemporaryObject => "creates a temporary object",
            SessionNeed::Listen => "listens with LISTEN",
            SessionNeed::Timeout => "has a lock or statement timeout",
        })
    }
}

impl Error {
    /// The SQLSTATE code of the underlying database error, if any.
    ///
    /// ```
    /// # fn f(err: pgskein::Error) {
    /// if err.db_code() == Some("42P07") { /* duplicate table */ }
    /// # }
    /// ```
    pub fn db_code(&self) -> Option<&str> {
        match self {
            Error::Db { source, .. }
            | Error::RevisionFailed { source, .. }
            | Error::LedgerDropped { source, .. }
            | Error::NotRecorded { source, .. }
            | Error::LockRetriesExhausted { source, .. } => source.code().map(|c| c.code()),
            Error::BackfillFailed { source, .. } => {
                source.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.code()).map(|c| c.code())
            }
            _ => None,
        }
    }

    /// The partial report of a run that failed part-way, if this error carries one.
    pub fn report(&self) -> Option<&Report> {
        match self {
            Error::RevisionFailed { report, .. }
            | Error::VerifyFailed { report, .. }
            | Error::RustRevisionFailed { report, .. }
            | Error::Hook { report, .. }
            | Error::LockReleased { report, .. }
            | Error::LeaseLost { report, .. }
            | Error::LedgerDropped { report, .. }
            | Error::NotRecorded { report, .. }
            | Error::LedgerChanged { report, .. }
            | Error::InvalidIndexLeft { report, .. }
            | Error::OpenTransaction { report, .. }
            | Error::LockRetriesExhausted { report, .. } => Some(report),
            Error::BackfillIncomplete { report, .. } => Some(report),
            _ => None,
        }
    }

    pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Db { context, source }
    }
}

fn join<T: AsRef<str>>(ids: &[T]) -> String {
    ids.iter().map(|i| i.as_ref()).collect::<Vec<_>>().join(", ")
}

fn cycle_text(ids: &[RevisionId], files: &[String]) -> String {
    ids.iter().zip(files).map(|(i, f)| format!("{i} ({f})")).collect::<Vec<_>>().join(" -> ")
}
