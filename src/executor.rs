//! Applies planned steps and records them: the only module that sends ledger
//! writes (their SQL is `ledger`'s).
//!
//! Invariants:
//! - A transactional step's body, verify section and ledger row commit
//!   together or not at all. They are pipelined (BEGIN, body, verify, record
//!   and COMMIT are written before any answer is read), so a SQL revision
//!   costs one round trip; a verify section adds one, because its answer
//!   decides between COMMIT and ROLLBACK.
//! - The server, not the client, proves the body ran to its end: the body's
//!   message ends with a savepoint that the record's message releases. A body
//!   that failed, or that the client could not send, leaves no savepoint, the
//!   release fails, and the transaction cannot commit.
//! - Every ledger write proves the migration lock in the same statement (the
//!   session's advisory lock, or the lease's fencing token), and runs as the
//!   session's baseline user and role: what a revision does to the lock or
//!   the session, or a run that outlived its lease, is caught, never recorded
//!   over. Under the lease, the run renews it between transactions when due
//!   (the heartbeat usually has).
//! - Every revision starts from the session's baseline.
//! - A `transaction none` step records `running` first, the statement it is
//!   about to run before each statement, then `applied` (or its revert), or
//!   `failed` with the failed statement; the failure is written outside any
//!   transaction its body opened. Invalid indexes it leaves are found in the
//!   catalog, and it is never recorded applied while one it built is invalid.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, SimpleQueryMessage};

use crate::config::{Attempts, Config, LOCK_NOT_AVAILABLE, Scope, Timeouts, TransactionMode};
use crate::error::{Error, SessionNeed};
use crate::graph::Graph;
use crate::hooks::Hooks;
use crate::ledger::{Ledger, Resolved, Write};
use crate::lock::lease::{Held, Lost};
use crate::migration::{Body, Revision, Transaction};
use crate::plan::{Direction, Step};
use crate::report::{Report, StepReport};
use crate::rust::{BoxError, Conn, RustCode};
use crate::session::{BODY_RAN, Baseline, Session};
use crate::split;
use crate::state::Record;

/// Marks when a step began, for the duration its row records.
const MARK: &str = " SELECT pg_catalog.set_config('pgskein.step_start', \
    ((extract(epoch FROM clock_timestamp()) * 1000000)::bigint)::text, true);";

/// SQLSTATE of the lock proof (`held()`) failing: the session lost its advisory lock.
const LOCK_RELEASED: &str = "PGSK1";
/// SQLSTATE of the lock proof failing: the run's lease expired or was taken over.
const LEASE_LOST: &str = "PGSK2";

// ----- pipelining -----

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A request already written to the connection, waiting for its answer.
enum Sent<'a, T> {
    Pending(BoxFut<'a, T>),
    Done(T),
}

/// Polls once: tokio-postgres writes a request on its first poll, so sending
/// several before awaiting any pipelines them, in exactly this order. A
/// request may be done at once: refused by the client (then it was never
/// written), or answered already (the task was descheduled after writing it).
async fn send<'a, T>(fut: impl Future<Output = T> + Send + 'a) -> Sent<'a, T> {
    let mut fut: BoxFut<'a, T> = Box::pin(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(out) => Sent::Done(out),
        Poll::Pending => Sent::Pending(fut),
    }
}

impl<T> Sent<'_, T> {
    async fn answer(self) -> T {
        match self {
            Sent::Done(out) => out,
            Sent::Pending(fut) => fut.await,
        }
    }
}

type Answer = Result<Vec<SimpleQueryMessage>, Failed>;

/// A failed script, with how many of its statements completed first.
struct Failed {
    error: tokio_postgres::Error,
    completed: usize,
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

/// A ledger write: an unnamed statement with typed parameters (no prepared
/// statement that a revision's `DEALLOCATE ALL` or a pooler could lose). Its
/// first row: the lock proof, the count of rows changed, and anything else.
async fn write(client: &Client, w: Write) -> Result<Option<Row>, tokio_postgres::Error> {
    let params: Vec<(&(dyn ToSql + Sync), Type)> =
        w.params.iter().map(|(v, t)| (&**v as &(dyn ToSql + Sync), t.clone())).collect();
    let rows = client.query_typed(&w.sql, &params).await?;
    Ok(rows.into_iter().next())
}

/// Why a step did not commit.
enum Fault {
    /// The revision's own SQL (body or verify) failed.
    Sql { error: tokio_postgres::Error, statement: Option<usize>, line: Option<usize> },
    /// A verify statement returned false.
    Verify { query: String },
    /// A Rust body returned an error.
    Rust(BoxError),
    /// A ledger write, or the session restore before it, failed.
    Record(tokio_postgres::Error),
    /// A ledger write matched no row, or not the rows it should have.
    Changed { what: &'static str },
    /// A `transaction none` body left these invalid indexes behind.
    InvalidIndexes(Vec<String>),
    /// A `transaction none` body opened a transaction at this statement (and
    /// line) and did not end it.
    OpenTransaction { statement: usize, line: Option<usize> },
    /// pgskein's own statement around the step failed.
    Db { context: &'static str, error: tokio_postgres::Error },
    /// The run's lease expired or was taken over (found when renewing it).
    LeaseLost,
}

impl Fault {
    fn message(&self) -> String {
        match self {
            Fault::Sql { error, .. } | Fault::Record(error) | Fault::Db { error, .. } => {
                error.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| error.to_string())
            }
            Fault::Verify { query } => format!("verify returned false: {query}"),
            Fault::LeaseLost => "the migration lease expired or was taken over".to_owned(),
            Fault::Rust(e) => e.to_string(),
            Fault::Changed { what } => format!("{what} matched no row"),
            Fault::InvalidIndexes(list) => format!("left invalid indexes: {}", list.join(", ")),
            Fault::OpenTransaction { statement, .. } => {
                format!("opened a transaction at statement {statement} and did not end it")
            }
        }
    }

    fn statement(&self) -> Option<usize> {
        match self {
            Fault::Sql { statement, .. } => *statement,
            Fault::OpenTransaction { statement, .. } => Some(*statement),
            _ => None,
        }
    }

    /// True when the fault is in pgskein's bookkeeping rather than the revision.
    fn is_bookkeeping(&self) -> bool {
        matches!(self, Fault::Record(_) | Fault::Changed { .. } | Fault::Db { .. } | Fault::LeaseLost)
    }

    /// The error for `rev`. `rolled_back`: whether its work was undone (a
    /// transactional step) or stays recorded as running (`transaction none`).
    fn into_error(self, rev: &Revision, report: &Report, ledger: &Ledger, rolled_back: bool) -> Error {
        let (id, path, report) = (rev.id.clone(), rev.origin.clone(), Box::new(report.clone()));
        let (schema, token) = (&ledger.schema, ledger.proof().token.unwrap_or_default());
        match self {
            Fault::Sql { error, statement, line } => {
                Error::RevisionFailed { id, path, statement, line, report, source: error }
            }
            Fault::Verify { query } => Error::VerifyFailed { id, path, query, report },
            Fault::Rust(source) => Error::RustRevisionFailed { id, path, report, source },
            Fault::Record(error) => match error.code().map(|c| c.code()) {
                Some(LOCK_RELEASED) => Error::LockReleased { id, path, rolled_back, report },
                Some(LEASE_LOST) => Error::LeaseLost { id, path, token, rolled_back, report },
                _ if crate::ledger::missing(&error) => Error::LedgerDropped {
                    id,
                    path,
                    schema: schema.to_owned(),
                    rolled_back,
                    report,
                    source: error,
                },
                Some("23505") => Error::LedgerChanged { id, what: "it is already recorded", report },
                _ => Error::NotRecorded { id, path, rolled_back, report, source: error },
            },
            Fault::Changed { what } => Error::LedgerChanged { id, what, report },
            Fault::InvalidIndexes(indexes) => Error::InvalidIndexLeft { id, path, indexes, report },
            Fault::OpenTransaction { statement, line } => {
                Error::OpenTransaction { id, path, statement, line, report }
            }
            Fault::Db { context, error } => Error::Db { context, source: error },
            Fault::LeaseLost => Error::LeaseLost { id, path, token, rolled_back, report },
        }
    }
}

/// What each request of a pipeline is, to tell whose answer failed.
enum Part<'a> {
    Open,
    Body { sql: &'a str, line: usize },
    Verify { sql: &'a str },
    Prelude,
    Record { expect: Option<i64>, what: &'static str },
    Commit,
}

enum Reply {
    Simple(Answer),
    Write(Result<Option<Row>, tokio_postgres::Error>),
}

impl Reply {
    /// True when the request failed without reaching the server: the client
    /// refused it (a NUL byte, a value it cannot encode) or the connection is gone.
    fn unsent(&self) -> bool {
        match self {
            Reply::Simple(Err(f)) => f.completed == 0 && f.error.as_db_error().is_none(),
            Reply::Write(Err(e)) => e.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// Requests written back to back on one connection, read in order. Each is
/// tagged with the step it belongs to, so that a fault names its revision.
struct Pipeline<'a> {
    client: &'a Client,
    sent: Vec<(usize, Part<'a>, Sent<'a, Reply>)>,
    /// The step the next requests belong to.
    step: usize,
    /// Set when a request could not be written: nothing after it is sent.
    stopped: bool,
}

/// What reading a pipeline's answers found.
struct Outcome {
    /// The first fault, and the step it belongs to.
    fault: Option<(usize, Fault)>,
    /// When each step's ledger write was answered, in order.
    recorded: Vec<(usize, Instant)>,
}

impl<'a> Pipeline<'a> {
    fn new(client: &'a Client) -> Self {
        Pipeline { client, sent: Vec::new(), step: 0, stopped: false }
    }

    /// Hands the requests sent so far to the caller, leaving an empty pipeline.
    fn take(&mut self) -> Pipeline<'a> {
        let step = self.step;
        let mut taken = std::mem::replace(self, Pipeline::new(self.client));
        self.step = step;
        self.stopped = taken.stopped;
        taken.step = step;
        taken
    }

    async fn simple(&mut self, part: Part<'a>, sql: &'a str) {
        if self.stopped {
            return;
        }
        let client = self.client;
        let sent = send(async move { Reply::Simple(simple(client, sql).await) }).await;
        self.stopped = matches!(&sent, Sent::Done(reply) if reply.unsent());
        self.sent.push((self.step, part, sent));
    }

    async fn write(&mut self, w: Write) {
        if self.stopped {
            return;
        }
        let client = self.client;
        let part = Part::Record { expect: w.expect, what: w.what };
        let sent = send(async move { Reply::Write(write(client, w).await) }).await;
        self.stopped = matches!(&sent, Sent::Done(reply) if reply.unsent());
        self.sent.push((self.step, part, sent));
    }

    /// Reads every answer (so the connection stays in step).
    async fn outcome(self) -> Outcome {
        let mut out = Outcome { fault: None, recorded: Vec::new() };
        for (step, part, sent) in self.sent {
            let is_record = matches!(part, Part::Record { .. });
            let reply = sent.answer().await;
            if out.fault.is_some() {
                continue;
            }
            match check(part, reply) {
                Err(fault) => out.fault = Some((step, fault)),
                Ok(()) if is_record => out.recorded.push((step, Instant::now())),
                Ok(()) => {}
            }
        }
        out
    }
}

/// The fault in one answer, if any.
fn check(part: Part<'_>, reply: Reply) -> Result<(), Fault> {
    match (part, reply) {
        (Part::Body { sql, line }, Reply::Simple(Err(f))) => {
            let (statement, line) = locate(&f, sql, line);
            Err(Fault::Sql { error: f.error, statement: Some(statement), line: Some(line) })
        }
        (Part::Verify { .. }, Reply::Simple(Err(f))) => {
            Err(Fault::Sql { error: f.error, statement: None, line: None })
        }
        (Part::Verify { sql }, Reply::Simple(Ok(msgs))) => match false_statement(&msgs, sql) {
            Some(query) => Err(Fault::Verify { query }),
            None => Ok(()),
        },
        (Part::Open, Reply::Simple(Err(f))) => {
            Err(Fault::Db { context: "starting the revision's transaction", error: f.error })
        }
        (Part::Prelude, Reply::Simple(Err(f))) => Err(Fault::Record(f.error)),
        (Part::Commit, Reply::Simple(Err(f))) => {
            Err(Fault::Db { context: "committing the transaction", error: f.error })
        }
        (Part::Record { expect, what }, Reply::Write(answer)) => checked(answer, expect, what).map(|_| ()),
        _ => Ok(()),
    }
}

/// A ledger write's answer, checked for the proof and the count of rows it changed.
fn checked(
    answer: Result<Option<Row>, tokio_postgres::Error>,
    expect: Option<i64>,
    what: &'static str,
) -> Result<Option<Row>, Fault> {
    let row = answer.map_err(Fault::Record)?;
    let count = row.as_ref().map_or(0, |r| r.get::<_, i64>(1));
    match expect {
        Some(n) if n != count => Err(Fault::Changed { what }),
        _ => Ok(row),
    }
}

// ----- the executor -----

/// Applies steps on one locked session, and writes its ledger rows.
pub(crate) struct Executor<'s> {
    client: &'s Client,
    ledger: &'s Ledger,
    baseline: &'s Baseline,
    /// The lease, when the run holds it rather than the advisory lock.
    lease: Option<&'s Held>,
    app_version: Option<String>,
    hooks: Option<Arc<dyn Hooks>>,
    timeouts: Timeouts,
    /// A revision since the last restore may have left SQL-level prepared statements.
    prepared: bool,
    pub(crate) report: Report,
}

/// What a single-transaction batch does with its steps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recording {
    /// Runs each step's body and records it.
    Run,
    /// Records each step without running its body (`stamp`).
    Stamp,
}

/// What a step runs.
enum Code<'a> {
    /// SQL text and the file line it starts on.
    Sql(&'a str, usize),
    Rust(&'a RustCode),
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

/// Whether running `rev` may leave SQL-level prepared statements behind.
fn may_prepare(rev: &Revision, dir: Direction) -> bool {
    match code_of(rev, dir) {
        Code::Sql(sql, _) => sql.as_bytes().windows(7).any(|w| w.eq_ignore_ascii_case(b"prepare")),
        Code::Rust(_) => true,
    }
}

fn event_of(dir: Direction) -> &'static str {
    match dir {
        Direction::Up => "apply",
        Direction::Down => "revert",
    }
}

impl<'s> Executor<'s> {
    /// The executor of a locked session.
    pub(crate) fn new(session: &'s Session<'_>, cfg: &Config, hooks: Option<Arc<dyn Hooks>>) -> Self {
        Executor {
            client: session.client(),
            ledger: &session.ledger,
            baseline: &session.baseline,
            lease: session.lease(),
            app_version: cfg.app_version.clone(),
            hooks,
            timeouts: cfg.timeouts,
            prepared: false,
            report: Report::default(),
        }
    }

    /// Between two transactions: renews the lease if it is due (see
    /// [`Held::keep_alive`]); nothing to do under the advisory lock.
    async fn keep_alive(&self) -> Result<(), Fault> {
        let Some(lease) = self.lease else { return Ok(()) };
        lease.keep_alive(self.client).await.map_err(|lost| match lost {
            Lost::Gone => Fault::LeaseLost,
            Lost::Db(error) => Fault::Db { context: "renewing the migration lease", error },
        })
    }

    /// The record of a step: apply or revert.
    fn record(&self, rev: &Revision, dir: Direction, event: &'static str) -> Write {
        match dir {
            Direction::Up => self.ledger.apply(rev, event, self.app_version.as_deref()),
            Direction::Down => self.ledger.revert(rev.id.as_str(), event),
        }
    }

    /// The statements that bring the session back to its baseline before a revision.
    fn restore(&mut self) -> String {
        let sql = self.baseline.restore(self.prepared);
        self.prepared = false;
        sql
    }

    fn push(&mut self, rev: &Revision, direction: Direction, duration: Duration, stamped: bool) {
        self.report.steps.push(StepReport { id: rev.id.clone(), direction, duration, stamped });
        if !stamped {
            tracing::info!(revision = %rev.id, %direction, elapsed = ?duration, "applied");
        }
    }

    fn error(&self, fault: Fault, rev: &Revision, rolled_back: bool) -> Error {
        fault.into_error(rev, &self.report, self.ledger, rolled_back)
    }

    /// Runs `steps` per revision or in one transaction.
    pub(crate) async fn run(
        &mut self,
        graph: &Graph,
        steps: &[(usize, Direction)],
        mode: TransactionMode,
    ) -> Result<(), Error> {
        if mode == TransactionMode::Single {
            crate::plan::check_single(graph, steps)?;
            // The whole transaction is the step that is retried on a lock timeout.
            let mut attempts = Attempts::new(&self.timeouts);
            loop {
                if let (Err(fault), Some(&(i, _))) = (self.keep_alive().await, steps.first()) {
                    return Err(self.error(fault, &graph.revs[i], true));
                }
                match self.batch(graph, steps, Recording::Run).await {
                    Err(e) => match attempts.retry_after(e.db_code()) {
                        Some(wait) => {
                            tracing::warn!(
                                attempt = attempts.attempt,
                                ?wait,
                                "lock timeout in the single transaction; retrying"
                            );
                            tokio::time::sleep(wait).await;
                        }
                        None => {
                            let rev = match &e {
                                Error::RevisionFailed { id, .. } => {
                                    graph.get(id.as_str()).map(|i| &graph.revs[i])
                                }
                                _ => None,
                            };
                            return Err(match rev {
                                Some(rev) => self.exhausted(rev, &attempts, e),
                                None => e,
                            });
                        }
                    },
                    ok => return ok,
                }
            }
        }
        for &(i, dir) in steps {
            let rev = &graph.revs[i];
            let step = Step { id: rev.id.clone(), direction: dir };
            if let Err(fault) = self.keep_alive().await {
                return Err(self.error(fault, rev, true));
            }
            self.before_step(&step).await?;
            let result = match rev.tx {
                Transaction::Transactional => self.transactional_with_retries(rev, dir).await,
                Transaction::None => self.non_transactional(rev, dir).await,
            };
            if let Some(h) = &self.hooks {
                match &result {
                    Ok(()) => {
                        if let Some(report) = self.report.steps.last() {
                            h.after_step(&step, Ok(report)).await;
                        }
                    }
                    Err(e) => h.after_step(&step, Err(e)).await,
                }
            }
            result?;
        }
        Ok(())
    }

    async fn before_step(&self, step: &Step) -> Result<(), Error> {
        match &self.hooks {
            Some(h) => h.before_step(step).await.map_err(|source| Error::Hook {
                stage: crate::error::HookStage::BeforeStep,
                step: Some(step.id.clone()),
                report: Box::new(self.report.clone()),
                source,
            }),
            None => Ok(()),
        }
    }

    /// Records steps without running their bodies, all in one transaction.
    pub(crate) async fn stamp(&mut self, graph: &Graph, steps: &[(usize, Direction)]) -> Result<(), Error> {
        self.batch(graph, steps, Recording::Stamp).await
    }

    /// A transactional step, tried again with growing waits while it fails on
    /// its lock timeout; each attempt is logged and recorded as a `fail` event.
    async fn transactional_with_retries(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let mut attempts = Attempts::new(&self.timeouts);
        loop {
            match self.transactional(rev, dir).await {
                Err(e) => match attempts.retry_after(e.db_code()) {
                    Some(wait) => {
                        tracing::warn!(revision = %rev.id, attempt = attempts.attempt, ?wait, "lock timeout; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(self.exhausted(rev, &attempts, e)),
                },
                ok => return ok,
            }
        }
    }

    /// The error of a step that ran out of attempts: `LockRetriesExhausted`
    /// when it was retried and its last failure was a lock timeout too; any
    /// other last failure is reported as itself.
    fn exhausted(&self, rev: &Revision, attempts: &Attempts, e: Error) -> Error {
        if attempts.attempt < 2 || e.db_code() != Some(LOCK_NOT_AVAILABLE) {
            return e;
        }
        let Error::RevisionFailed { source, .. } = e else { return e };
        let (lock_timeout, _) = self.timeouts.transactional(rev);
        Error::LockRetriesExhausted {
            id: rev.id.clone(),
            path: rev.origin.clone(),
            attempts: attempts.attempt,
            lock_timeout: if rev.tx == Transaction::None { rev.lock_timeout } else { lock_timeout },
            waited: attempts.started.elapsed(),
            report: Box::new(self.report.clone()),
            source,
        }
    }

    /// One transaction per revision: BEGIN (with the session restored and the
    /// timeouts set), body, verify, record and, without a verify section,
    /// COMMIT, all pipelined. A Rust body runs between BEGIN and the rest.
    async fn transactional(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let client = self.client;
        let started = Instant::now();
        let (lock, statement) = self.timeouts.transactional(rev);
        let open = format!(
            "{} {}{}{MARK}",
            self.baseline.begin(),
            self.restore(),
            Timeouts::sql(lock, statement, Scope::Local)
        );
        self.prepared = may_prepare(rev, dir);
        let verify = if dir == Direction::Up { rev.verify.as_deref() } else { None };
        let body = body_text(rev, dir);
        let prelude = prelude_text(rev, dir, self.baseline);
        let mut pipe = Pipeline::new(client);
        pipe.simple(Part::Open, &open).await;
        match code_of(rev, dir) {
            Code::Sql(sql, line) => pipe.simple(Part::Body { sql, line }, &body).await,
            Code::Rust(code) => {
                let begun = pipe.take().outcome().await;
                let ran = match begun.fault {
                    None => run_rust(code, client, Transaction::Transactional).await,
                    Some((_, fault)) => Err(fault),
                };
                if let Err(fault) = ran {
                    let _ = client.simple_query("ROLLBACK").await;
                    return Err(self.fail(rev, dir, fault, true).await);
                }
            }
        }
        if let Some(sql) = verify {
            pipe.simple(Part::Verify { sql }, sql).await;
        }
        pipe.simple(Part::Prelude, &prelude).await;
        pipe.write(self.record(rev, dir, event_of(dir))).await;
        if verify.is_none() {
            pipe.simple(Part::Commit, "COMMIT").await;
        }
        let stopped = pipe.stopped;
        let outcome = pipe.outcome().await;
        let fault = match (outcome.fault, verify) {
            (Some((_, fault)), _) => Some(fault),
            (None, Some(_)) if !stopped => simple(client, "COMMIT")
                .await
                .err()
                .map(|f| Fault::Db { context: "committing the transaction", error: f.error }),
            (None, _) => None,
        };
        if let Some(fault) = fault {
            // A pipelined COMMIT of a failed transaction rolled back by itself;
            // otherwise the transaction is still open.
            if verify.is_some() || stopped {
                let _ = client.simple_query("ROLLBACK").await;
            }
            return Err(self.fail(rev, dir, fault, true).await);
        }
        self.push(rev, dir, started.elapsed(), false);
        Ok(())
    }

    /// Every step in one transaction, requests pipelined: a single run's steps,
    /// or a stamp's records (then no body runs). A Rust step waits for the
    /// answers before it, runs, and the pipeline goes on.
    async fn batch(
        &mut self,
        graph: &Graph,
        steps: &[(usize, Direction)],
        kind: Recording,
    ) -> Result<(), Error> {
        let stamp = kind == Recording::Stamp;
        let client = self.client;
        let started = Instant::now();
        let timeouts = if stamp {
            String::new()
        } else {
            Timeouts::sql(self.timeouts.lock, self.timeouts.statement, Scope::Local)
        };
        let open = format!("{}{timeouts}", self.baseline.begin());
        // Each step's texts live as long as the pipeline that sends them.
        let texts = self.batch_texts(graph, steps, kind);
        let mut pipe = Pipeline::new(client);
        pipe.simple(Part::Open, &open).await;
        let mut fault: Option<(usize, Fault)> = None;
        let mut recorded = Vec::with_capacity(steps.len());
        for (n, (&(i, dir), (opening, body, prelude))) in steps.iter().zip(&texts).enumerate() {
            let rev = &graph.revs[i];
            pipe.step = n;
            if !stamp {
                if let Err(e) = self.before_step(&Step { id: rev.id.clone(), direction: dir }).await {
                    let _ = pipe.take().outcome().await;
                    let _ = client.simple_query("ROLLBACK").await;
                    return Err(e);
                }
                pipe.simple(Part::Open, opening).await;
                match code_of(rev, dir) {
                    Code::Sql(sql, line) => pipe.simple(Part::Body { sql, line }, body).await,
                    Code::Rust(code) => {
                        let before = pipe.take().outcome().await;
                        recorded.extend(before.recorded);
                        fault = before.fault;
                        if fault.is_none() {
                            fault = run_rust(code, client, Transaction::Transactional)
                                .await
                                .err()
                                .map(|f| (n, f));
                        }
                        if fault.is_some() {
                            break;
                        }
                    }
                }
                if let (Direction::Up, Some(sql)) = (dir, rev.verify.as_deref()) {
                    pipe.simple(Part::Verify { sql }, sql).await;
                }
                pipe.simple(Part::Prelude, prelude).await;
            }
            pipe.write(self.record(rev, dir, if stamp { "stamp" } else { event_of(dir) })).await;
        }
        if fault.is_none() {
            let rest = pipe.take().outcome().await;
            recorded.extend(rest.recorded);
            fault = rest.fault;
        }
        if let Some((n, fault)) = fault {
            return Err(self.batch_failed(graph, steps[n], fault, kind).await);
        }
        if let Err(e) = client.simple_query("COMMIT").await {
            return Err(Error::Db { context: "committing the transaction", source: e });
        }
        self.batch_committed(graph, steps, recorded, started, kind).await;
        Ok(())
    }

    /// The texts a batch sends for each step: what opens it (the baseline
    /// and the savepoint mark), its body, and the prelude of its ledger write.
    fn batch_texts(
        &mut self,
        graph: &Graph,
        steps: &[(usize, Direction)],
        kind: Recording,
    ) -> Vec<(String, String, String)> {
        let stamp = kind == Recording::Stamp;
        let mut texts = Vec::with_capacity(steps.len());
        for &(i, dir) in steps {
            let rev = &graph.revs[i];
            let opening = if stamp { String::new() } else { format!("{}{MARK}", self.restore()) };
            self.prepared = may_prepare(rev, dir);
            texts.push((opening, body_text(rev, dir), prelude_text(rev, dir, self.baseline)));
        }
        texts
    }

    /// Rolls a failed batch back and tells the hooks: nothing of it stays.
    async fn batch_failed(
        &self,
        graph: &Graph,
        (i, direction): (usize, Direction),
        fault: Fault,
        kind: Recording,
    ) -> Error {
        let _ = self.client.simple_query("ROLLBACK").await;
        let rev = &graph.revs[i];
        let err = match fault {
            Fault::Db { context, error } => Error::Db { context, source: error },
            fault => self.error(fault, rev, true),
        };
        if kind == Recording::Run {
            if let Some(h) = &self.hooks {
                h.after_step(&Step { id: rev.id.clone(), direction }, Err(&err)).await;
            }
        }
        err
    }

    /// Reports each step of a committed batch, timed by when its ledger
    /// write was answered, and tells the hooks.
    async fn batch_committed(
        &mut self,
        graph: &Graph,
        steps: &[(usize, Direction)],
        recorded: Vec<(usize, Instant)>,
        started: Instant,
        kind: Recording,
    ) {
        let stamp = kind == Recording::Stamp;
        let mut last = started;
        for (n, at) in recorded {
            let (i, dir) = steps[n];
            let rev = &graph.revs[i];
            self.push(rev, dir, at.saturating_duration_since(last), stamp);
            last = at;
            if let (Some(h), false) = (&self.hooks, stamp) {
                if let Some(report) = self.report.steps.last() {
                    h.after_step(&Step { id: rev.id.clone(), direction: dir }, Ok(report)).await;
                }
            }
        }
    }

    /// Records the failure of a step (a `fail` event and, for `transaction
    /// none`, the `failed` state) in its own statement, and builds the error.
    /// Nothing is written when the fault is the bookkeeping itself.
    async fn fail(&mut self, rev: &Revision, dir: Direction, fault: Fault, rolled_back: bool) -> Error {
        let msg = fault.message();
        if !fault.is_bookkeeping() {
            // Written as the baseline: a rolled-back step undid its own restore.
            let restore = self.restore();
            let _ = simple(self.client, &restore).await;
            let w = self.ledger.fail(rev.id.as_str(), fault.statement(), &msg, dir);
            if let Err(e) = write(self.client, w).await {
                tracing::warn!(revision = %rev.id, error = %e, "could not record the failure in the ledger");
            }
        }
        tracing::warn!(revision = %rev.id, direction = %dir, error = %msg, "revision failed");
        self.error(fault, rev, rolled_back)
    }

    /// A ledger write in a transaction of its own, as the baseline user and
    /// role whatever the session is set to: between the statements of a
    /// `transaction none` body, which may have changed role, `search_path` or
    /// `default_transaction_read_only` for its own later statements.
    async fn write_as_baseline(&self, w: Write) -> Result<Option<Row>, Fault> {
        let open = format!("{} {}", self.baseline.begin(), self.baseline.for_record());
        let mut pipe = Pipeline::new(self.client);
        pipe.simple(Part::Open, &open).await;
        pipe.write(w).await;
        pipe.simple(Part::Commit, "COMMIT").await;
        let stopped = pipe.stopped;
        let outcome = pipe.outcome().await;
        if stopped {
            let _ = self.client.simple_query("ROLLBACK").await;
        }
        match outcome.fault {
            Some((_, fault)) => Err(fault),
            None => Ok(None),
        }
    }

    /// A ledger write on its own, outside any pipeline.
    async fn write_now(&self, w: Write) -> Result<Option<Row>, Fault> {
        let (expect, what) = (w.expect, w.what);
        checked(write(self.client, w).await, expect, what)
    }

    // ----- `transaction none` -----

    /// Outside a transaction: record `running`, run each statement (or the
    /// Rust code), then record `applied` (after the verify section, in one
    /// transaction) or the revert.
    async fn non_transactional(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let started = Instant::now();
        self.setup_none(rev).await?;
        let start = self.ledger.start(rev, dir, self.app_version.as_deref());
        let row = match self.write_now(start).await {
            Ok(row) => row,
            Err(fault) => return Err(self.error(fault, rev, true)),
        };
        let invalid_before =
            row.and_then(|r| r.get::<_, Option<String>>(2)).map(|s| oids(&s)).unwrap_or_default();
        self.statements_and_finish(rev, dir, 1, &invalid_before, started).await
    }

    /// Before a `transaction none` revision: the session restored to its
    /// baseline, and the revision's timeouts set for the session.
    async fn setup_none(&mut self, rev: &Revision) -> Result<(), Error> {
        let (lock, statement) = self.timeouts.non_transactional(rev);
        let setup = format!("{}{}", self.restore(), Timeouts::sql(lock, statement, Scope::Session));
        self.prepared = true;
        simple(self.client, &setup).await.map(|_| ()).map_err(|f| {
            let fault = Fault::Db { context: "restoring the session before the revision", error: f.error };
            self.error(fault, rev, true)
        })
    }

    /// Retries a blocked `transaction none` revision from its recorded
    /// statement (from the start of the transaction its body opened, if the
    /// statement was inside one), after dropping the invalid indexes it left.
    pub(crate) async fn resume(
        &mut self,
        rev: &Revision,
        record: &Record,
        dir: Direction,
    ) -> Result<(), Error> {
        let started = Instant::now();
        self.setup_none(rev).await?;
        let from = match code_of(rev, dir) {
            Code::Sql(body, _) => resume_point(body, record.statement.unwrap_or(1)),
            Code::Rust(_) => 1,
        };
        if let Err(fault) = self.write_now(self.ledger.restart(rev.id.as_str(), from)).await {
            return Err(self.error(fault, rev, false));
        }
        if let Err(error) = self.drop_left_invalid(&record.invalid_before).await {
            let fault = Fault::Sql { error, statement: Some(from), line: None };
            return Err(self.fail(rev, dir, fault, false).await);
        }
        self.statements_and_finish(rev, dir, from, &record.invalid_before, started).await
    }

    /// Runs the statements of a `transaction none` body from the 1-based
    /// `from`, then records the outcome.
    async fn statements_and_finish(
        &mut self,
        rev: &Revision,
        dir: Direction,
        from: usize,
        invalid_before: &[u32],
        started: Instant,
    ) -> Result<(), Error> {
        let client = self.client;
        let outcome = match code_of(rev, dir) {
            Code::Sql(body, body_line) => self.statements(rev, body, body_line, from, invalid_before).await,
            Code::Rust(code) => run_rust(code, client, Transaction::None).await.map_err(|f| (f, 1)),
        };
        // pgskein's writes run as the baseline, outside anything the body opened.
        let restored = simple(client, &self.restore()).await;
        match outcome {
            Err((Fault::Record(e), _)) => return Err(self.error(Fault::Record(e), rev, false)),
            Err((fault, attempts)) => {
                let err = self.fail(rev, dir, fault, false).await;
                return Err(if attempts > 1 {
                    self.exhausted_none(rev, attempts, started, err)
                } else {
                    err
                });
            }
            Ok(()) => {}
        }
        if let Err(f) = restored {
            let fault = Fault::Db { context: "restoring the session after the revision", error: f.error };
            return Err(self.error(fault, rev, false));
        }
        match self.invalid_left(invalid_before).await {
            Ok(left) if left.is_empty() => {}
            Ok(left) => return Err(self.fail(rev, dir, Fault::InvalidIndexes(left), false).await),
            Err(error) => {
                let fault = Fault::Db { context: "looking for invalid indexes", error };
                return Err(self.error(fault, rev, false));
            }
        }
        let outcome = match dir {
            Direction::Down => {
                self.write_now(self.ledger.revert(rev.id.as_str(), "revert")).await.map(|_| ())
            }
            Direction::Up => {
                let prelude = self.baseline.for_record();
                let mut pipe = Pipeline::new(client);
                pipe.simple(Part::Open, self.baseline.begin()).await;
                if let Some(sql) = rev.verify.as_deref() {
                    pipe.simple(Part::Verify { sql }, sql).await;
                }
                pipe.simple(Part::Prelude, &prelude).await;
                pipe.write(self.ledger.finish(rev.id.as_str())).await;
                let outcome = pipe.outcome().await;
                match outcome.fault {
                    None => simple(client, "COMMIT")
                        .await
                        .map(|_| ())
                        .map_err(|f| Fault::Db { context: "committing the transaction", error: f.error }),
                    Some((_, fault)) => {
                        let _ = client.simple_query("ROLLBACK").await;
                        Err(fault)
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                self.push(rev, dir, started.elapsed(), false);
                Ok(())
            }
            Err(fault @ Fault::Verify { .. }) => Err(self.fail(rev, dir, fault, false).await),
            Err(fault) => Err(self.error(fault, rev, false)),
        }
    }

    /// Runs statements from the 1-based `from`, recording before each the
    /// statement about to run (outside any transaction the body opened). A
    /// statement that fails on its lock timeout is retried, after the invalid
    /// indexes it left are dropped; inside a transaction the body opened, the
    /// retry starts again at that transaction's `BEGIN`. On failure: the fault
    /// and how many attempts the failing statement had.
    async fn statements(
        &mut self,
        rev: &Revision,
        body: &str,
        body_line: usize,
        from: usize,
        invalid_before: &[u32],
    ) -> Result<(), (Fault, u32)> {
        let client = self.client;
        let stmts = split::split(body);
        let mut n = from;
        // The statement that opened a transaction of the body's own, while one is open.
        let mut block: Option<usize> = None;
        let mut attempts = Attempts::new(&self.timeouts);
        while let Some(stmt) = stmts.get(n - 1) {
            if block.is_none() {
                self.keep_alive().await.map_err(|fault| (fault, 1))?;
                match self.write_as_baseline(self.ledger.progress(rev.id.as_str(), n)).await {
                    Ok(_) => {}
                    // Cancelled (an operator's interrupt) before statement n ran:
                    // record it as failed there, so a retry starts at it.
                    Err(Fault::Record(error) | Fault::Db { error, .. })
                        if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) =>
                    {
                        let line = Some(body_line + stmt.line - 1);
                        return Err((Fault::Sql { error, statement: Some(n), line }, 1));
                    }
                    Err(fault) => return Err((fault, 1)),
                }
            }
            match client.simple_query(stmt.text).await {
                Ok(_) => {
                    match split::transaction_control(stmt.text) {
                        Some("BEGIN" | "START TRANSACTION") => block = Some(n),
                        Some(_) => block = None,
                        None => {}
                    }
                    n += 1;
                    if block.is_none() {
                        attempts = Attempts::new(&self.timeouts);
                    }
                }
                Err(error) => {
                    if block.is_some() {
                        // The body's transaction is aborted: end it, so that
                        // the cleanup and the failure record run outside it.
                        let _ = client.simple_query("ROLLBACK").await;
                    }
                    let line = Some(body_line + stmt.line - 1);
                    let failed = |error, attempts: &Attempts| {
                        (Fault::Sql { error, statement: Some(n), line }, attempts.attempt)
                    };
                    let Some(wait) = attempts.retry_after(error.code().map(|c| c.code())) else {
                        // Best effort: a drop that cannot get its locks now is done by the retry.
                        if let Err(e) = self.drop_left_invalid(invalid_before).await {
                            tracing::warn!(revision = %rev.id, error = %e, "could not drop the invalid index left");
                        }
                        return Err(failed(error, &attempts));
                    };
                    tracing::warn!(revision = %rev.id, statement = n, attempt = attempts.attempt, ?wait, "lock timeout; retrying");
                    tokio::time::sleep(wait).await;
                    // The failed attempt may have left an invalid index: drop
                    // it before the next, waiting (and retrying) as the attempt did.
                    while let Err(e) = self.drop_left_invalid(invalid_before).await {
                        let Some(wait) = attempts.retry_after(e.code().map(|c| c.code())) else {
                            return Err(failed(e, &attempts));
                        };
                        tokio::time::sleep(wait).await;
                    }
                    n = block.take().unwrap_or(n);
                }
            }
        }
        if let Some(opened) = block {
            let _ = client.simple_query("ROLLBACK").await;
            let line = stmts.get(opened - 1).map(|s| body_line + s.line - 1);
            return Err((Fault::OpenTransaction { statement: opened, line }, 1));
        }
        Ok(())
    }

    fn exhausted_none(&self, rev: &Revision, attempts: u32, started: Instant, e: Error) -> Error {
        if e.db_code() != Some(LOCK_NOT_AVAILABLE) {
            return e;
        }
        let Error::RevisionFailed { source, .. } = e else { return e };
        Error::LockRetriesExhausted {
            id: rev.id.clone(),
            path: rev.origin.clone(),
            attempts,
            lock_timeout: rev.lock_timeout,
            waited: started.elapsed(),
            report: Box::new(self.report.clone()),
            source,
        }
    }

    /// The invalid indexes that appeared since `before` and that no other
    /// session is building now: what a failed `CREATE INDEX CONCURRENTLY` of
    /// this revision left. Schema-qualified and quoted, whatever the session's
    /// search_path.
    async fn invalid_left(&self, before: &[u32]) -> Result<Vec<String>, tokio_postgres::Error> {
        let before: Vec<tokio_postgres::types::Oid> = before.to_vec();
        let rows = self
            .client
            .query_typed(
                "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) \
                 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT i.indisvalid AND NOT (i.indexrelid = ANY ($1)) \
                   AND i.indexrelid NOT IN (SELECT p.index_relid FROM pg_catalog.pg_stat_progress_create_index p \
                                            WHERE p.pid <> pg_catalog.pg_backend_pid()) \
                 ORDER BY 1",
                &[(&before, Type::OID_ARRAY)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Drops the invalid indexes this revision left (see [`invalid_left`](Self::invalid_left)).
    async fn drop_left_invalid(&self, before: &[u32]) -> Result<(), tokio_postgres::Error> {
        for index in self.invalid_left(before).await? {
            tracing::info!(%index, "dropping the invalid index a failed CREATE INDEX CONCURRENTLY left");
            // The name is quoted by the catalog query above.
            self.client.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}")).await?;
        }
        Ok(())
    }

    // ----- operator actions -----

    /// Records an operator's resolution of a blocked revision.
    pub(crate) async fn settle(&self, rev: &Revision, how: Resolved) -> Result<(), Error> {
        self.write_now(self.ledger.resolve(rev.id.as_str(), how))
            .await
            .map(|_| ())
            .map_err(|f| self.error(f, rev, false))
    }

    /// Records the current checksum of an applied revision; false when it was not applied.
    pub(crate) async fn repair(&self, rev: &Revision) -> Result<bool, Error> {
        let row = self
            .write_now(self.ledger.repair(rev.id.as_str(), &rev.checksum.to_hex()))
            .await
            .map_err(|f| self.error(f, rev, false))?;
        Ok(row.is_some_and(|r| r.get::<_, i64>(1) > 0))
    }
}

/// Refuses, before any step runs, what the steps cannot do through a
/// connection pooler (the run holds the lease): a `transaction none` revision
/// runs its statements one by one, each of which may land on another server
/// session, so what a statement leaves in the session outside a `BEGIN ...
/// COMMIT` block of the file, and the timeouts pgskein would set for the
/// session first, do not reach the next statement. A block runs on one
/// session: the pooler keeps a client on its server until the block ends.
pub(crate) fn check_pooled(
    graph: &Graph,
    steps: &[(usize, Direction)],
    timeouts: &Timeouts,
) -> Result<(), Error> {
    for &(i, dir) in steps {
        let rev = &graph.revs[i];
        if rev.tx != Transaction::None {
            continue;
        }
        let refuse =
            |line, need| Error::NeedsSession { id: rev.id.clone(), path: rev.origin.clone(), line, need };
        if timeouts.non_transactional(rev) != (None, None) {
            return Err(refuse(None, SessionNeed::Timeout));
        }
        let Code::Sql(body, body_line) = code_of(rev, dir) else { continue };
        let mut block = false;
        for stmt in split::split(body) {
            match split::transaction_control(stmt.text) {
                Some("BEGIN" | "START TRANSACTION") => block = true,
                Some(_) => block = false,
                None if block => {}
                None => {
                    let need = match split::session_state(stmt.text) {
                        None => continue,
                        Some("SET" | "RESET") => SessionNeed::Setting,
                        Some("PREPARE") => SessionNeed::PreparedStatement,
                        Some("LISTEN") => SessionNeed::Listen,
                        Some(_) => SessionNeed::TemporaryObject,
                    };
                    return Err(refuse(Some(body_line + stmt.line - 1), need));
                }
            }
        }
    }
    Ok(())
}

/// The text sent for a SQL body: the body, then the savepoint that proves it
/// ran to its end (after a newline, so a trailing `--` comment cannot swallow it).
fn body_text(rev: &Revision, dir: Direction) -> String {
    match code_of(rev, dir) {
        Code::Sql(sql, _) => format!("{sql}\n;SAVEPOINT {BODY_RAN}"),
        Code::Rust(_) => String::new(),
    }
}

/// What runs between a step's body (and verify section) and its ledger write.
fn prelude_text(rev: &Revision, dir: Direction, baseline: &Baseline) -> String {
    match code_of(rev, dir) {
        Code::Sql(..) => format!("RELEASE SAVEPOINT {BODY_RAN}; {}", baseline.for_record()),
        Code::Rust(_) => baseline.for_record(),
    }
}

/// Where a retry of a body that stopped at the 1-based `statement` starts: at
/// the `BEGIN` of a transaction the body had open there (its work was rolled
/// back), else at the statement itself.
fn resume_point(body: &str, statement: usize) -> usize {
    let mut open = None;
    for (i, s) in split::split(body).iter().enumerate().take(statement.saturating_sub(1)) {
        match split::transaction_control(s.text) {
            Some("BEGIN" | "START TRANSACTION") => open = Some(i + 1),
            Some(_) => open = None,
            None => {}
        }
    }
    open.unwrap_or(statement).max(1)
}

fn oids(list: &str) -> Vec<u32> {
    list.split_whitespace().filter_map(|o| o.parse().ok()).collect()
}

async fn run_rust(code: &RustCode, client: &Client, tx: Transaction) -> Result<(), Fault> {
    code.run(&Conn::new(client, tx == Transaction::Transactional)).await.map_err(Fault::Rust)
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
            let offset: usize =
                body.chars().take((*pos as usize).saturating_sub(1)).map(char::len_utf8).sum();
            let offset = offset.min(body.len());
            let line = first_line + body.get(..offset).unwrap_or(body).matches('\n').count();
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

/// Records a `verify` run in `events` (read-only sessions take no lock, so
/// this write proves none).
pub(crate) async fn record_verify(
    client: &Client,
    ledger: &Ledger,
    checked: i64,
    failed: i64,
) -> Result<(), Error> {
    write(client, ledger.verified(checked, failed)).await.map_err(Error::db("recording a verify run"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_inside_a_transaction_of_the_body_starts_at_its_begin() {
        let body = "CREATE TABLE a (x int);\nBEGIN;\nINSERT INTO a VALUES (1);\nINSERT INTO a VALUES (2);\nCOMMIT;\nSELECT 1;";
        assert_eq!(resume_point(body, 4), 2);
        assert_eq!(resume_point(body, 3), 2);
        assert_eq!(resume_point(body, 2), 2);
        assert_eq!(resume_point(body, 6), 6);
        assert_eq!(resume_point(body, 1), 1);
        assert_eq!(resume_point(body, 0), 1);
    }
}
