//! Applies planned steps: the only writer of ledger rows.
//!
//! Invariant: a transactional step's body, verify section and ledger row
//! commit together or not at all. They are pipelined (BEGIN, body, record,
//! COMMIT written before any answer is read), so a SQL revision costs one
//! round trip; a revision with a verify section costs two, because COMMIT
//! waits for the verify answer. A `transaction none` step records `running`
//! first, then `applied`, or `failed` with the statement that failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use crate::error::Error;
use crate::graph::{Graph, SetDigest};
use crate::hooks::Hooks;
use crate::id::{Checksum, RevisionId};
use crate::ledger::Prepared;
use crate::migration::{Body, Revision, TxMode};
use crate::plan::{Direction, Step};
use crate::rust::{BoxError, MigrationDb, RustMigration};
use crate::split;

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
    /// `SET [LOCAL] ...` for a revision's effective timeouts (milliseconds: no user text).
    ///
    /// The run's lock timeout applies to transactional revisions only: a
    /// `transaction none` revision is there for `CONCURRENTLY` operations, which
    /// block no one while they wait for older transactions, so a timeout would
    /// only make them fail on a busy database. Such a revision can still declare one.
    fn settings(&self, rev: &Revision, local: bool) -> String {
        let scope = if local { "SET LOCAL" } else { "SET" };
        let lock = if local { rev.lock_timeout.or(self.lock) } else { rev.lock_timeout };
        let mut sql = String::new();
        for (name, value) in
            [("lock_timeout", lock), ("statement_timeout", rev.statement_timeout.or(self.statement))]
        {
            if let Some(d) = value {
                sql.push_str(&format!("; {scope} {name} = {}", d.as_millis()));
            }
        }
        sql
    }

    /// `SET LOCAL ...` for the run's own timeouts, for a single-transaction run.
    fn run_settings(&self) -> String {
        let mut sql = String::new();
        for (name, value) in [("lock_timeout", self.lock), ("statement_timeout", self.statement)] {
            if let Some(d) = value {
                sql.push_str(&format!("; SET LOCAL {name} = {}", d.as_millis()));
            }
        }
        sql
    }

    /// The wait before attempt `next` (2, 3, ...).
    fn backoff(&self, next: u32) -> Duration {
        let factor = 1u32 << (next - 2).min(16);
        (self.first_wait * factor).min(Duration::from_secs(30))
    }
}

const LOCK_NOT_AVAILABLE: &str = "55P03";

/// What a run did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// The steps, in the order they ran.
    pub steps: Vec<StepReport>,
    /// Drift that the policy let through.
    pub warnings: Vec<Warning>,
    /// Whether the run returned from the fast path (nothing pending, no lock taken).
    pub fast_path: bool,
    /// How long the run waited for the migration lock.
    pub lock_wait: Duration,
    /// Wall time of the whole run.
    pub duration: Duration,
}

/// One step of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepReport {
    /// The revision.
    pub id: RevisionId,
    /// Up or down.
    pub direction: Direction,
    /// Time from sending the step to its last answer.
    pub duration: Duration,
    /// True for `stamp`: recorded without running the body.
    pub stamped: bool,
}

/// Drift a run accepted because of its [`DriftPolicy`](crate::DriftPolicy).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// Applied revisions unknown to the code that descend from its heads.
    Ahead {
        /// Their ids.
        unknown: Vec<String>,
    },
    /// Applied revisions unknown to the code that do not descend from its heads.
    Diverged {
        /// Their ids.
        unknown: Vec<String>,
    },
    /// Applied revisions whose checksum changed.
    ChecksumChanged {
        /// Their ids.
        changed: Vec<RevisionId>,
    },
}

type Answer = Result<Vec<SimpleQueryMessage>, Failed>;

/// A failed request, with how many statements of its script completed first.
struct Failed {
    error: tokio_postgres::Error,
    completed: usize,
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// A request already written to the connection, waiting for its answer.
enum Sent<'a> {
    Pending(BoxFut<'a>),
    Done(Answer),
}

/// Polls once: tokio-postgres writes a request on its first poll, so sending
/// several before awaiting any pipelines them, in exactly this order.
async fn send<'a>(fut: impl Future<Output = Answer> + Send + 'a) -> Sent<'a> {
    let mut fut: BoxFut<'a> = Box::pin(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(out) => Sent::Done(out),
        Poll::Pending => Sent::Pending(fut),
    }
}

impl Sent<'_> {
    async fn answer(self) -> Answer {
        match self {
            Sent::Done(out) => out,
            Sent::Pending(fut) => fut.await,
        }
    }
}

/// A script over the simple protocol, counting the statements that completed.
async fn simple(client: &Client, sql: &str) -> Answer {
    let failed = |error, completed| Failed { error, completed };
    let stream = client.simple_query_raw(sql).await.map_err(|e| failed(e, 0))?;
    let mut stream = std::pin::pin!(stream);
    let (mut msgs, mut completed) = (Vec::new(), 0);
    while let Some(m) = stream.next().await {
        let m = m.map_err(|e| failed(e, completed))?;
        completed += usize::from(matches!(m, SimpleQueryMessage::CommandComplete(_)));
        msgs.push(m);
    }
    Ok(msgs)
}

/// A prepared recording statement with its owned arguments.
async fn extended(client: &Client, stmt: &Statement, args: Args) -> Answer {
    let params = args.params();
    let result = client.execute(stmt, &params).await;
    result.map(|_| Vec::new()).map_err(|error| Failed { error, completed: 0 })
}

/// Owned parameters of a recording statement.
enum Args {
    /// `apply.sql` and `start.sql`: the row of a revision. `tag` is the event
    /// kind for `apply` and the direction for `start`.
    Row {
        id: String,
        revises: Vec<String>,
        depends_on: Vec<String>,
        checksum: String,
        kind: &'static str,
        app_version: Option<String>,
        tag: &'static str,
        digest: String,
    },
    Revert {
        id: String,
        event: &'static str,
        digest: String,
    },
    Fail {
        id: String,
        statement: Option<i32>,
        error: String,
        direction: &'static str,
    },
    Finish {
        id: String,
        digest: String,
    },
}

const CHECKSUM_VERSION: i16 = Checksum::VERSION;

impl Args {
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        match self {
            Args::Row { id, revises, depends_on, checksum, kind, app_version, tag, digest } => {
                vec![id, revises, depends_on, checksum, &CHECKSUM_VERSION, kind, app_version, tag, digest]
            }
            Args::Revert { id, event, digest } => vec![id, event, digest],
            Args::Fail { id, statement, error, direction } => vec![id, statement, error, direction],
            Args::Finish { id, digest } => vec![id, digest],
        }
    }
}

/// Why a step did not commit.
enum Fault {
    Db { error: tokio_postgres::Error, statement: Option<usize>, line: Option<usize> },
    Verify { query: String },
    Rust(BoxError),
}

impl Fault {
    fn db(error: tokio_postgres::Error) -> Self {
        Fault::Db { error, statement: None, line: None }
    }

    fn message(&self) -> String {
        match self {
            Fault::Db { error, .. } => {
                error.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| error.to_string())
            }
            Fault::Verify { query } => format!("verify returned false: {query}"),
            Fault::Rust(e) => e.to_string(),
        }
    }

    fn statement(&self) -> Option<usize> {
        match self {
            Fault::Db { statement, .. } => *statement,
            Fault::Verify { .. } | Fault::Rust(_) => None,
        }
    }

    fn into_error(self, rev: &Revision, report: &Report) -> Error {
        let (id, path, report) = (rev.id.clone(), rev.origin.clone(), Box::new(report.clone()));
        match self {
            Fault::Db { error, statement, line } => {
                Error::RevisionFailed { id, path, statement, line, report, source: error }
            }
            Fault::Verify { query } => Error::VerifyFailed { id, path, query, report },
            Fault::Rust(source) => Error::RustRevisionFailed { id, path, report, source },
        }
    }
}

/// The requests of one step inside an open transaction: body, verify, ledger row.
struct Pipelined<'a> {
    body: Option<(Sent<'a>, &'a str, usize)>,
    verify: Option<(Sent<'a>, &'a str)>,
    record: Sent<'a>,
}

impl<'a> Pipelined<'a> {
    async fn send(
        client: &'a Client,
        body: Option<(&'a str, usize)>,
        verify: Option<&'a str>,
        record: (&'a Statement, Args),
    ) -> Pipelined<'a> {
        let body = match body {
            Some((sql, line)) => Some((send(simple(client, sql)).await, sql, line)),
            None => None,
        };
        let verify = match verify {
            Some(sql) => Some((send(simple(client, sql)).await, sql)),
            None => None,
        };
        let record = send(extended(client, record.0, record.1)).await;
        Pipelined { body, verify, record }
    }

    /// Reads every answer (so the connection stays in step), then reports the first fault.
    async fn outcome(self) -> Result<(), Fault> {
        let body = match self.body {
            Some((sent, sql, line)) => Some((sent.answer().await, sql, line)),
            None => None,
        };
        let verify = match self.verify {
            Some((sent, sql)) => Some((sent.answer().await, sql)),
            None => None,
        };
        let record = self.record.answer().await;
        if let Some((Err(f), sql, first_line)) = body {
            let (statement, line) = locate(&f, sql, first_line);
            return Err(Fault::Db { error: f.error, statement: Some(statement), line: Some(line) });
        }
        match verify {
            Some((Err(f), _)) => return Err(Fault::db(f.error)),
            Some((Ok(msgs), sql)) => {
                if let Some(query) = false_statement(&msgs, sql) {
                    return Err(Fault::Verify { query });
                }
            }
            None => {}
        }
        record.map(|_| ()).map_err(|f| Fault::db(f.error))
    }
}

fn ids(list: &[RevisionId]) -> Vec<String> {
    list.iter().map(|i| i.as_str().to_owned()).collect()
}

/// Applies steps on one connection, keeping the digest of the applied set current.
pub(crate) struct Executor<'a> {
    pub(crate) client: &'a Client,
    pub(crate) stmts: Prepared,
    pub(crate) digest: SetDigest,
    pub(crate) app_version: Option<String>,
    pub(crate) report: Report,
    pub(crate) hooks: Option<Arc<dyn Hooks>>,
    pub(crate) timeouts: Timeouts,
}

impl Executor<'_> {
    /// The revision's ledger row, for `apply.sql` or `start.sql`.
    fn row(&self, rev: &Revision, tag: &'static str) -> Args {
        Args::Row {
            id: rev.id.as_str().to_owned(),
            revises: ids(&rev.revises),
            depends_on: ids(&rev.depends_on),
            checksum: rev.checksum.to_hex(),
            kind: rev.kind(),
            app_version: self.app_version.clone(),
            tag,
            digest: self.digest.to_string(),
        }
    }

    /// Moves the digest past the step and returns the statement that records it.
    fn record(&mut self, rev: &Revision, dir: Direction, event: &'static str) -> (Statement, Args) {
        let (id, checksum) = (rev.id.as_str(), rev.checksum.to_hex());
        match dir {
            Direction::Up => {
                self.digest.add(id, &checksum);
                (self.stmts.apply.clone(), self.row(rev, event))
            }
            Direction::Down => {
                self.digest.remove(id, &checksum);
                let args = Args::Revert { id: id.to_owned(), event, digest: self.digest.to_string() };
                (self.stmts.revert.clone(), args)
            }
        }
    }

    fn push(&mut self, rev: &Revision, direction: Direction, duration: Duration, stamped: bool) {
        self.report.steps.push(StepReport { id: rev.id.clone(), direction, duration, stamped });
        if !stamped {
            tracing::info!(revision = %rev.id, %direction, elapsed = ?duration, "applied");
        }
    }

    /// Runs `steps` per revision or in one transaction.
    pub(crate) async fn run(
        &mut self,
        graph: &Graph,
        steps: &[(usize, Direction)],
        mode: TransactionMode,
    ) -> Result<(), Error> {
        if mode == TransactionMode::Single {
            if let Some(&(i, _)) = steps.iter().find(|(i, _)| graph.revs[*i].tx == TxMode::None) {
                let r = &graph.revs[i];
                return Err(Error::NoTransactionInSingleMode { id: r.id.clone(), path: r.origin.clone() });
            }
            // The whole transaction is the step that is retried on a lock timeout.
            let started = Instant::now();
            let mut attempt = 1;
            loop {
                match self.batch(graph, steps, false).await {
                    Err(e) if e.db_code() == Some(LOCK_NOT_AVAILABLE) && attempt < self.timeouts.attempts => {
                        attempt += 1;
                        let wait = self.timeouts.backoff(attempt);
                        tracing::warn!(attempt, ?wait, "lock timeout in the single transaction; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) if e.db_code() == Some(LOCK_NOT_AVAILABLE) && attempt > 1 => {
                        let rev = match &e {
                            Error::RevisionFailed { id, .. } => set_rev(graph, id),
                            _ => None,
                        };
                        return Err(match rev {
                            Some(rev) => self.exhausted(rev, attempt, started, e),
                            None => e,
                        });
                    }
                    other => return other,
                }
            }
        }
        for &(i, dir) in steps {
            let rev = &graph.revs[i];
            let step = Step { id: rev.id.clone(), direction: dir };
            self.before_step(&step).await?;
            let result = match rev.tx {
                TxMode::Transactional => self.transactional_with_retries(rev, dir).await,
                TxMode::None => self.non_transactional(rev, dir).await,
            };
            if let Some(h) = &self.hooks {
                h.after_step(&step, result.as_ref().map(|()| self.report.steps.last().expect("pushed")))
                    .await;
            }
            result?;
        }
        Ok(())
    }

    async fn before_step(&self, step: &Step) -> Result<(), Error> {
        match &self.hooks {
            Some(h) => h.before_step(step).await.map_err(|source| Error::Hook {
                stage: "before_step",
                step: Some(step.id.clone()),
                report: Box::new(self.report.clone()),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Records steps without running their bodies, all in one transaction.
    pub(crate) async fn stamp(&mut self, graph: &Graph, steps: &[(usize, Direction)]) -> Result<(), Error> {
        self.batch(graph, steps, true).await
    }

    /// A transactional step, tried again with growing waits while it fails on
    /// its lock timeout; each attempt is logged and recorded as a `fail` event.
    async fn transactional_with_retries(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match self.transactional(rev, dir).await {
                Err(e) if e.db_code() == Some(LOCK_NOT_AVAILABLE) => {
                    if attempt >= self.timeouts.attempts {
                        return Err(self.exhausted(rev, attempt, started, e));
                    }
                    attempt += 1;
                    let wait = self.timeouts.backoff(attempt);
                    tracing::warn!(revision = %rev.id, attempt, ?wait, "lock timeout; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    fn exhausted(&self, rev: &Revision, attempts: u32, started: Instant, e: Error) -> Error {
        let source = match e {
            Error::RevisionFailed { source, .. } => source,
            other => return other,
        };
        Error::LockRetriesExhausted {
            id: rev.id.clone(),
            path: rev.origin.clone(),
            attempts,
            lock_timeout: rev.lock_timeout.or(self.timeouts.lock),
            waited: started.elapsed(),
            report: Box::new(self.report.clone()),
            source,
        }
    }

    /// One transaction per revision: BEGIN, body, verify, record and (without a
    /// verify section, since nothing can veto it then) COMMIT, all pipelined. A
    /// Rust body runs between BEGIN and the pipelined rest.
    async fn transactional(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let client = self.client;
        let before = self.digest.clone();
        let (stmt, args) = self.record(rev, dir, event_of(dir));
        let verify = if dir == Direction::Up { rev.verify.as_deref() } else { None };
        let started = Instant::now();
        let begin_sql = format!("BEGIN{}", self.timeouts.settings(rev, true));
        let mut begin = Some(send(simple(client, &begin_sql)).await);
        let body = match code_of(rev, dir) {
            Code::Sql(sql, line) => Some((sql, line)),
            Code::Rust(code) => {
                let begun = begin.take().expect("sent").answer().await;
                let ran = match begun {
                    Ok(_) => run_rust(code, dir, client, true).await,
                    Err(f) => Err(Fault::db(f.error)),
                };
                if let Err(fault) = ran {
                    let _ = client.simple_query("ROLLBACK").await;
                    self.digest = before;
                    return Err(self.fail(rev, dir, fault).await);
                }
                None
            }
        };
        let step = Pipelined::send(client, body, verify, (&stmt, args)).await;
        let commit = match verify {
            None => Some(send(simple(client, "COMMIT")).await),
            Some(_) => None,
        };
        let begun = match begin {
            Some(b) => b.answer().await.map(|_| ()).map_err(|f| Fault::db(f.error)),
            None => Ok(()),
        };
        let outcome = begun.and(step.outcome().await);
        let committed = match commit {
            // A pipelined COMMIT of a failed transaction rolls back by itself.
            Some(c) => c.answer().await.map(|_| ()),
            None if outcome.is_ok() => simple(client, "COMMIT").await.map(|_| ()),
            None => simple(client, "ROLLBACK").await.map(|_| ()),
        };
        if let Err(fault) = outcome.and(committed.map_err(|f| Fault::db(f.error))) {
            self.digest = before;
            return Err(self.fail(rev, dir, fault).await);
        }
        self.push(rev, dir, started.elapsed(), false);
        Ok(())
    }

    /// Every step in one transaction, requests pipelined: a single run's steps,
    /// or a stamp's records (then no body runs). A Rust step waits for the
    /// answers before it, runs, and the pipeline goes on.
    async fn batch(&mut self, graph: &Graph, steps: &[(usize, Direction)], stamp: bool) -> Result<(), Error> {
        let client = self.client;
        let before = self.digest.clone();
        let (stmts, args): (Vec<Statement>, Vec<Args>) = steps
            .iter()
            .map(|&(i, dir)| self.record(&graph.revs[i], dir, if stamp { "stamp" } else { event_of(dir) }))
            .unzip();
        let started = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        let begin_sql =
            if stamp { "BEGIN".to_owned() } else { format!("BEGIN{}", self.timeouts.run_settings()) };
        let begin = send(simple(client, &begin_sql)).await;
        let mut failure = begin.answer().await.err().map(|f| (None, Fault::db(f.error)));
        let mut done = Vec::with_capacity(steps.len());
        let mut last = started;
        for ((&(i, dir), stmt), args) in steps.iter().zip(&stmts).zip(args) {
            let rev = &graph.revs[i];
            if !stamp {
                if let Err(e) = self.before_step(&Step { id: rev.id.clone(), direction: dir }).await {
                    drain(&mut in_flight, &mut failure, &mut done, &mut last).await;
                    let _ = client.simple_query("ROLLBACK").await;
                    self.digest = before;
                    return Err(e);
                }
            }
            let mut body = None;
            match code_of(rev, dir) {
                _ if stamp => {}
                Code::Sql(sql, line) => body = Some((sql, line)),
                Code::Rust(code) => {
                    drain(&mut in_flight, &mut failure, &mut done, &mut last).await;
                    if failure.is_some() {
                        break;
                    }
                    if let Err(fault) = run_rust(code, dir, client, true).await {
                        failure = Some((Some((rev, dir)), fault));
                        break;
                    }
                }
            }
            let verify = if dir == Direction::Up && !stamp { rev.verify.as_deref() } else { None };
            in_flight.push_back((rev, dir, Pipelined::send(client, body, verify, (stmt, args)).await));
        }
        drain(&mut in_flight, &mut failure, &mut done, &mut last).await;
        if let Some((rev, fault)) = failure {
            let _ = client.simple_query("ROLLBACK").await;
            self.digest = before;
            let err = match rev {
                Some((rev, _)) if !stamp => fault.into_error(rev, &self.report),
                _ => match fault {
                    Fault::Db { error, .. } => Error::Db { context: "recording the plan", source: error },
                    _ => unreachable!("a stamp runs no body and no verify section"),
                },
            };
            if let (Some(h), Some((rev, direction))) = (&self.hooks, rev) {
                h.after_step(&Step { id: rev.id.clone(), direction }, Err(&err)).await;
            }
            return Err(err);
        }
        if let Err(e) = client.simple_query("COMMIT").await {
            self.digest = before;
            return Err(Error::Db { context: "committing the transaction", source: e });
        }
        for (rev, dir, d) in done {
            self.push(rev, dir, d, stamp);
            if let Some(h) = &self.hooks {
                let step = Step { id: rev.id.clone(), direction: dir };
                h.after_step(&step, Ok(self.report.steps.last().expect("pushed"))).await;
            }
        }
        Ok(())
    }

    /// Outside a transaction: record `running`, run each statement (or the Rust
    /// code), then record `applied` (after the verify section, in one
    /// transaction) or the revert.
    async fn non_transactional(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let client = self.client;
        let started = Instant::now();
        let (id, checksum) = (rev.id.as_str(), rev.checksum.to_hex());
        if dir == Direction::Down {
            // The row stops counting as applied while its down runs.
            self.digest.remove(id, &checksum);
        }
        let start = self.row(rev, dir_word(dir));
        extended(client, &self.stmts.start, start)
            .await
            .map_err(|f| Error::Db { context: "recording the start of a revision", source: f.error })?;
        self.statements_and_finish(rev, dir, 1, started).await
    }

    /// Retries a failed `transaction none` revision from its failed statement
    /// (the caller has marked it running again). An invalid index that a failed
    /// `CREATE INDEX CONCURRENTLY` left behind is dropped first.
    pub(crate) async fn resume(&mut self, rev: &Revision, dir: Direction, from: usize) -> Result<(), Error> {
        let started = Instant::now();
        if let Code::Sql(body, _) = code_of(rev, dir) {
            if let Some(stmt) = split::split(body).get(from - 1) {
                self.drop_invalid_index(stmt.text).await?;
            }
        }
        self.statements_and_finish(rev, dir, from, started).await
    }

    /// Runs statements from the 1-based `from`, retrying one that fails on its
    /// lock timeout (after dropping an invalid index it may have left).
    /// On failure: the statement, the error, and how many attempts it had.
    async fn statements(
        &self,
        rev: &Revision,
        body: &str,
        from: usize,
    ) -> Result<(), (usize, tokio_postgres::Error, u32)> {
        for (n, stmt) in split::split(body).iter().enumerate().skip(from - 1) {
            let mut attempt = 1;
            while let Err(error) = self.client.simple_query(stmt.text).await {
                let lock = error.code().map(|c| c.code()) == Some(LOCK_NOT_AVAILABLE);
                if !lock || attempt >= self.timeouts.attempts {
                    return Err((n + 1, error, attempt));
                }
                attempt += 1;
                let wait = self.timeouts.backoff(attempt);
                tracing::warn!(revision = %rev.id, statement = n + 1, attempt, ?wait, "lock timeout; retrying");
                tokio::time::sleep(wait).await;
                if self.drop_invalid_index(stmt.text).await.is_err() {
                    return Err((n + 1, error, attempt));
                }
            }
        }
        Ok(())
    }

    async fn drop_invalid_index(&self, statement: &str) -> Result<(), Error> {
        let Some(name) = concurrent_index_name(statement) else { return Ok(()) };
        let sql = "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid \
                   WHERE c.relname = $1 AND NOT i.indisvalid AND pg_table_is_visible(c.oid)";
        let rows =
            self.client.query(sql, &[&name]).await.map_err(Error::db("looking for an invalid index"))?;
        for row in rows {
            let index: String = row.get(0);
            tracing::info!(%index, "dropping the invalid index a failed CREATE INDEX CONCURRENTLY left");
            // The name comes from the catalog's own quoting (regclass output).
            self.client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY {index}"))
                .await
                .map_err(Error::db("dropping an invalid index"))?;
        }
        Ok(())
    }

    /// Runs the statements of a `transaction none` body from the 1-based
    /// `from`, then records the outcome.
    async fn statements_and_finish(
        &mut self,
        rev: &Revision,
        dir: Direction,
        from: usize,
        started: Instant,
    ) -> Result<(), Error> {
        let client = self.client;
        let (id, checksum) = (rev.id.as_str(), rev.checksum.to_hex());
        match code_of(rev, dir) {
            Code::Sql(body, body_line) => {
                let settings = self.timeouts.settings(rev, false);
                if !settings.is_empty() {
                    client.batch_execute(&settings[2..]).await.map_err(Error::db("setting timeouts"))?;
                }
                let outcome = self.statements(rev, body, from).await;
                if !settings.is_empty() {
                    let reset = "SET lock_timeout = DEFAULT; SET statement_timeout = DEFAULT";
                    client.batch_execute(reset).await.map_err(Error::db("resetting timeouts"))?;
                }
                if let Err((n, error, attempts)) = outcome {
                    let line = split::split(body).get(n - 1).map(|s| body_line + s.line - 1);
                    let err = self.fail(rev, dir, Fault::Db { error, statement: Some(n), line }).await;
                    return Err(if attempts > 1 { self.exhausted(rev, attempts, started, err) } else { err });
                }
            }
            Code::Rust(code) => {
                if let Err(fault) = run_rust(code, dir, client, false).await {
                    return Err(self.fail(rev, dir, fault).await);
                }
            }
        }
        let outcome = match dir {
            Direction::Down => {
                let args =
                    Args::Revert { id: id.to_owned(), event: "revert", digest: self.digest.to_string() };
                extended(client, &self.stmts.revert, args).await.map(|_| ())
            }
            Direction::Up => {
                self.digest.add(id, &checksum);
                let finish = Args::Finish { id: id.to_owned(), digest: self.digest.to_string() };
                let begin = send(simple(client, "BEGIN")).await;
                let step =
                    Pipelined::send(client, None, rev.verify.as_deref(), (&self.stmts.finish, finish)).await;
                let begun = begin.answer().await.map(|_| ()).map_err(|f| Fault::db(f.error));
                match begun.and(step.outcome().await) {
                    Ok(()) => simple(client, "COMMIT").await.map(|_| ()),
                    Err(fault) => {
                        let _ = client.simple_query("ROLLBACK").await;
                        self.digest.remove(id, &checksum);
                        return Err(self.fail(rev, dir, fault).await);
                    }
                }
            }
        };
        outcome.map_err(|f| Error::Db { context: "recording a revision", source: f.error })?;
        self.push(rev, dir, started.elapsed(), false);
        Ok(())
    }

    /// Records the failure (a `fail` event and, for `transaction none`, the
    /// `failed` state) in its own statement, and builds the error.
    async fn fail(&mut self, rev: &Revision, dir: Direction, fault: Fault) -> Error {
        let msg = fault.message();
        let args = Args::Fail {
            id: rev.id.as_str().to_owned(),
            statement: fault.statement().map(|s| s as i32),
            error: msg.clone(),
            direction: dir_word(dir),
        };
        if let Err(f) = extended(self.client, &self.stmts.fail, args).await {
            tracing::warn!(revision = %rev.id, error = %f.error, "could not record the failure in the ledger");
        }
        tracing::warn!(revision = %rev.id, direction = %dir, error = %msg, "revision failed");
        fault.into_error(rev, &self.report)
    }
}

fn event_of(dir: Direction) -> &'static str {
    match dir {
        Direction::Up => "apply",
        Direction::Down => "revert",
    }
}

fn dir_word(dir: Direction) -> &'static str {
    match dir {
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

fn set_rev<'g>(graph: &'g Graph, id: &RevisionId) -> Option<&'g Revision> {
    graph.get(id.as_str()).map(|i| &graph.revs[i])
}

/// What a step runs.
enum Code<'a> {
    /// SQL text and the file line it starts on.
    Sql(&'a str, usize),
    Rust(&'a Arc<dyn RustMigration>),
}

fn code_of(rev: &Revision, dir: Direction) -> Code<'_> {
    let (body, line) = match dir {
        Direction::Up => (Some(&rev.up), rev.up_line),
        // Plans never step down through a revision without a down body.
        Direction::Down => (rev.down.as_ref(), rev.down_line),
    };
    match body {
        Some(Body::Rust(code)) => Code::Rust(code),
        Some(Body::Sql(sql)) => Code::Sql(sql, line),
        None => Code::Sql("", line),
    }
}

async fn run_rust(
    code: &Arc<dyn RustMigration>,
    dir: Direction,
    client: &Client,
    tx: bool,
) -> Result<(), Fault> {
    let db = MigrationDb::new(client, tx);
    let result = match dir {
        Direction::Up => code.up(&db).await,
        Direction::Down => code.down(&db).await,
    };
    result.map_err(Fault::Rust)
}

/// Awaits the in-flight steps of a batch in order, keeping the first fault.
async fn drain<'r, 'a>(
    in_flight: &mut std::collections::VecDeque<(&'r Revision, Direction, Pipelined<'a>)>,
    failure: &mut Option<(Option<(&'r Revision, Direction)>, Fault)>,
    done: &mut Vec<(&'r Revision, Direction, Duration)>,
    last: &mut Instant,
) {
    while let Some((rev, dir, step)) = in_flight.pop_front() {
        let outcome = step.outcome().await;
        match (outcome, &*failure) {
            (Err(fault), None) => *failure = Some((Some((rev, dir)), fault)),
            (Ok(()), None) => {
                done.push((rev, dir, last.elapsed()));
                *last = Instant::now();
            }
            _ => {}
        }
    }
}

/// The 1-based statement of a failed script, and its line in the file: from
/// the error's position when the server gives one, else from the statements
/// that completed before it.
///
/// A syntax error anywhere in a script stops it before its first statement
/// runs (the server parses the whole simple-protocol string first), so the
/// count of completed statements cannot place it: the position can.
fn locate(f: &Failed, body: &str, first_line: usize) -> (usize, usize) {
    let statements = split::split(body);
    match f.error.as_db_error().and_then(|d| d.position()) {
        Some(ErrorPosition::Original(pos)) => {
            // A syntax error rejects the whole script before any statement runs:
            // the position, not the completed count, says where it is.
            let offset: usize =
                body.chars().take((*pos as usize).saturating_sub(1)).map(char::len_utf8).sum();
            let line = first_line + body[..offset].matches('\n').count();
            let base = body.as_ptr() as usize;
            let statement = statements
                .iter()
                .rposition(|s| s.text.as_ptr() as usize - base <= offset)
                .map_or(f.completed + 1, |i| i + 1);
            (statement, line)
        }
        _ => (f.completed + 1, statements.get(f.completed).map_or(first_line, |s| first_line + s.line - 1)),
    }
}

/// The index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON ...`
/// statement creates, unquoted.
fn concurrent_index_name(statement: &str) -> Option<String> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let mut i = 0;
    let mut expect = |w: &str| {
        let ok = upper.get(i).is_some_and(|u| u == w);
        i += usize::from(ok);
        ok
    };
    if !expect("CREATE") {
        return None;
    }
    expect("UNIQUE");
    if !(expect("INDEX") && expect("CONCURRENTLY")) {
        return None;
    }
    if expect("IF") && !(expect("NOT") && expect("EXISTS")) {
        return None;
    }
    let name = words.get(i).filter(|w| !w.eq_ignore_ascii_case("ON"))?;
    Some(match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_ascii_lowercase(),
    })
}

/// Runs a verify section in a transaction that is rolled back; why it failed, if it did.
pub(crate) async fn check_verify(client: &Client, sql: &str) -> Option<String> {
    let begin = send(simple(client, "BEGIN")).await;
    let verify = send(simple(client, sql)).await;
    let rollback = send(simple(client, "ROLLBACK")).await;
    let (_, answer, _) = (begin.answer().await, verify.answer().await, rollback.answer().await);
    match answer {
        Ok(msgs) => false_statement(&msgs, sql).map(|q| format!("`{q}` returned false")),
        Err(f) => Some(f.error.as_db_error().map_or_else(|| f.error.to_string(), |d| d.message().to_owned())),
    }
}

/// The verify statement whose first column came back false, if any.
fn false_statement(msgs: &[SimpleQueryMessage], verify: &str) -> Option<String> {
    let mut index = 0;
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) if r.get(0) == Some("f") => {
                let stmts = split::split(verify);
                return Some(
                    stmts.get(index).map_or_else(|| verify.trim().to_owned(), |s| s.text.to_owned()),
                );
            }
            SimpleQueryMessage::CommandComplete(_) => index += 1,
            _ => {}
        }
    }
    None
}
