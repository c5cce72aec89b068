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
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use crate::error::Error;
use crate::graph::{Graph, SetDigest};
use crate::id::{Checksum, RevisionId};
use crate::ledger::Prepared;
use crate::migration::{Revision, TxMode};
use crate::plan::Direction;
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
}

impl Fault {
    fn message(&self) -> String {
        match self {
            Fault::Db { error, .. } => {
                error.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| error.to_string())
            }
            Fault::Verify { query } => format!("verify returned false: {query}"),
        }
    }

    fn statement(&self) -> Option<usize> {
        match self {
            Fault::Db { statement, .. } => *statement,
            Fault::Verify { .. } => None,
        }
    }

    fn into_error(self, rev: &Revision, report: &Report) -> Error {
        let (id, path, report) = (rev.id.clone(), rev.origin.clone(), Box::new(report.clone()));
        match self {
            Fault::Db { error, statement, line } => {
                Error::RevisionFailed { id, path, statement, line, report, source: error }
            }
            Fault::Verify { query } => Error::VerifyFailed { id, path, query, report },
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
            Some((Err(f), _)) => return Err(Fault::Db { error: f.error, statement: None, line: None }),
            Some((Ok(msgs), sql)) => {
                if let Some(query) = false_statement(&msgs, sql) {
                    return Err(Fault::Verify { query });
                }
            }
            None => {}
        }
        record.map(|_| ()).map_err(|f| Fault::Db { error: f.error, statement: None, line: None })
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
            return self.batch(graph, steps, false).await;
        }
        for &(i, dir) in steps {
            let rev = &graph.revs[i];
            match rev.tx {
                TxMode::Transactional => self.transactional(rev, dir).await?,
                TxMode::None => self.non_transactional(rev, dir).await?,
            }
        }
        Ok(())
    }

    /// Records steps without running their bodies, all in one transaction.
    pub(crate) async fn stamp(&mut self, graph: &Graph, steps: &[(usize, Direction)]) -> Result<(), Error> {
        self.batch(graph, steps, true).await
    }

    /// One transaction per revision: BEGIN, body, verify, record and (without a
    /// verify section, since nothing can veto it then) COMMIT, all pipelined.
    async fn transactional(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let client = self.client;
        let before = self.digest.clone();
        let (stmt, args) = self.record(rev, dir, event_of(dir));
        let verify = if dir == Direction::Up { rev.verify.as_deref() } else { None };
        let started = Instant::now();
        let begin = send(simple(client, "BEGIN")).await;
        let step = Pipelined::send(client, Some(body_of(rev, dir)), verify, (&stmt, args)).await;
        let commit = match verify {
            None => Some(send(simple(client, "COMMIT")).await),
            Some(_) => None,
        };
        let begun =
            begin.answer().await.map_err(|f| Fault::Db { error: f.error, statement: None, line: None });
        let mut outcome = step.outcome().await;
        outcome = begun.and(outcome);
        let committed = match commit {
            // A pipelined COMMIT of a failed transaction rolls back by itself.
            Some(c) => c.answer().await.map(|_| ()),
            None if outcome.is_ok() => simple(client, "COMMIT").await.map(|_| ()),
            None => simple(client, "ROLLBACK").await.map(|_| ()),
        };
        let outcome =
            outcome.and(committed.map_err(|f| Fault::Db { error: f.error, statement: None, line: None }));
        if let Err(fault) = outcome {
            self.digest = before;
            return Err(self.fail(rev, dir, fault).await);
        }
        self.push(rev, dir, started.elapsed(), false);
        Ok(())
    }

    /// Every step in one transaction, all requests pipelined: a single run's
    /// steps, or a stamp's records (then no body runs).
    async fn batch(&mut self, graph: &Graph, steps: &[(usize, Direction)], stamp: bool) -> Result<(), Error> {
        let client = self.client;
        let before = self.digest.clone();
        let (stmts, args): (Vec<Statement>, Vec<Args>) = steps
            .iter()
            .map(|&(i, dir)| self.record(&graph.revs[i], dir, if stamp { "stamp" } else { event_of(dir) }))
            .unzip();
        let started = Instant::now();
        let begin = send(simple(client, "BEGIN")).await;
        let mut sent = Vec::with_capacity(steps.len());
        for ((&(i, dir), stmt), args) in steps.iter().zip(&stmts).zip(args) {
            let rev = &graph.revs[i];
            let verify = if dir == Direction::Up && !stamp { rev.verify.as_deref() } else { None };
            let body = if stamp { None } else { Some(body_of(rev, dir)) };
            sent.push((rev, dir, Pipelined::send(client, body, verify, (stmt, args)).await));
        }
        let mut failure = begin
            .answer()
            .await
            .err()
            .map(|f| (None, Fault::Db { error: f.error, statement: None, line: None }));
        let mut done = Vec::with_capacity(steps.len());
        let mut last = started;
        for (rev, dir, step) in sent {
            let outcome = step.outcome().await;
            match (outcome, &failure) {
                (Err(fault), None) => failure = Some((Some(rev), fault)),
                (Ok(()), None) => {
                    done.push((rev, dir, last.elapsed()));
                    last = Instant::now();
                }
                _ => {}
            }
        }
        if let Some((rev, fault)) = failure {
            let _ = client.simple_query("ROLLBACK").await;
            self.digest = before;
            return Err(match rev {
                Some(rev) if !stamp => fault.into_error(rev, &self.report),
                _ => match fault {
                    Fault::Db { error, .. } => Error::Db { context: "recording the plan", source: error },
                    Fault::Verify { .. } => unreachable!("a stamp runs no verify section"),
                },
            });
        }
        if let Err(e) = client.simple_query("COMMIT").await {
            self.digest = before;
            return Err(Error::Db { context: "committing the transaction", source: e });
        }
        for (rev, dir, d) in done {
            self.push(rev, dir, d, stamp);
        }
        Ok(())
    }

    /// Outside a transaction: record `running`, run each statement, then record
    /// `applied` (after the verify section, in one transaction) or the revert.
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
        let (body, body_line) = body_of(rev, dir);
        for (n, stmt) in split::split(body).iter().enumerate() {
            if let Err(error) = client.simple_query(stmt.text).await {
                let line = Some(body_line + stmt.line - 1);
                return Err(self.fail(rev, dir, Fault::Db { error, statement: Some(n + 1), line }).await);
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
                let begun = begin.answer().await.map(|_| ());
                match begun
                    .map_err(|f| Fault::Db { error: f.error, statement: None, line: None })
                    .and(step.outcome().await)
                {
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

fn body_of(rev: &Revision, dir: Direction) -> (&str, usize) {
    match dir {
        Direction::Up => (rev.up.sql(), rev.up_line),
        Direction::Down => (rev.down.as_ref().map(|b| b.sql()).unwrap_or(""), rev.down_line),
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
            // 1-based, in characters.
            let chars = (*pos as usize).saturating_sub(1);
            let offset = body.char_indices().nth(chars).map_or(body.len(), |(i, _)| i);
            let line = first_line + body[..offset].matches('\n').count();
            // Statements are slices of `body`: the last one starting at or before the position holds it.
            let start = |s: &split::Statement<'_>| s.text.as_ptr() as usize - body.as_ptr() as usize;
            let statement = statements.iter().take_while(|s| start(s) <= offset).count().max(1);
            (statement, line)
        }
        _ => {
            let line = statements.get(f.completed).map_or(first_line, |s| first_line + s.line - 1);
            (f.completed + 1, line)
        }
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
