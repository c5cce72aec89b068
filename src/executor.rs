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

async fn simple(client: &Client, sql: &str) -> Answer {
    let failed = |error, completed| Failed { error, completed };
    let stream = client
        .simple_query_raw(sql)
        .await
        .map_err(|e| failed(e, 0))?;
    let mut stream = std::pin::pin!(stream);
    let (mut msgs, mut completed) = (Vec::new(), 0);
    while let Some(m) = stream.next().await {
        let m = m.map_err(|e| failed(e, completed))?;
        completed += usize::from(matches!(m, SimpleQueryMessage::CommandComplete(_)));
        msgs.push(m);
    }
    Ok(msgs)
}

async fn extended(client: &Client, stmt: &Statement, args: Args) -> Answer {
    let params = args.params();
    let result = client.execute(stmt, &params).await;
    result.map(|_| Vec::new()).map_err(|error| Failed {
        error,
        completed: 0,
    })
}

/// Owned parameters of a recording statement.
enum Args {
    Apply {
        id: String,
        revises: Vec<String>,
        depends_on: Vec<String>,
        checksum: String,
        kind: &'static str,
        app_version: Option<String>,
        event: &'static str,
        digest: String,
    },
    Revert {
        id: String,
        event: &'static str,
        digest: String,
    },
    Start {
        id: String,
        revises: Vec<String>,
        depends_on: Vec<String>,
        checksum: String,
        kind: &'static str,
        app_version: Option<String>,
        direction: &'static str,
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
            Args::Apply {
                id,
                revises,
                depends_on,
                checksum,
                kind,
                app_version,
                event,
                digest,
            } => {
                vec![
                    id,
                    revises,
                    depends_on,
                    checksum,
                    &CHECKSUM_VERSION,
                    kind,
                    app_version,
                    event,
                    digest,
                ]
            }
            Args::Revert { id, event, digest } => vec![id, event, digest],
            Args::Start {
                id,
                revises,
                depends_on,
                checksum,
                kind,
                app_version,
                direction,
                digest,
            } => {
                vec![
                    id,
                    revises,
                    depends_on,
                    checksum,
                    &CHECKSUM_VERSION,
                    kind,
                    app_version,
                    direction,
                    digest,
                ]
            }
            Args::Fail {
                id,
                statement,
                error,
                direction,
            } => vec![id, statement, error, direction],
            Args::Finish { id, digest } => vec![id, digest],
        }
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
    fn step_args(
        &mut self,
        rev: &Revision,
        dir: Direction,
        event: &'static str,
    ) -> (&Statement, Args) {
        let checksum = rev.checksum.to_hex();
        let id = rev.id.as_str().to_owned();
        match dir {
            Direction::Up => {
                self.digest.add(&id, &checksum);
                let args = Args::Apply {
                    id,
                    revises: ids(&rev.revises),
                    depends_on: ids(&rev.depends_on),
                    checksum,
                    kind: rev.kind(),
                    app_version: self.app_version.clone(),
                    event,
                    digest: self.digest.to_string(),
                };
                (&self.stmts.apply, args)
            }
            Direction::Down => {
                self.digest.remove(&id, &checksum);
                (
                    &self.stmts.revert,
                    Args::Revert {
                        id,
                        event,
                        digest: self.digest.to_string(),
                    },
                )
            }
        }
    }

    fn push(&mut self, rev: &Revision, direction: Direction, duration: Duration, stamped: bool) {
        self.report.steps.push(StepReport {
            id: rev.id.clone(),
            direction,
            duration,
            stamped,
        });
    }

    /// Runs `steps` per revision or in one transaction.
    pub(crate) async fn run(
        &mut self,
        graph: &Graph,
        steps: &[(usize, Direction)],
        mode: TransactionMode,
    ) -> Result<(), Error> {
        if mode == TransactionMode::Single {
            if let Some(&(i, _)) = steps
                .iter()
                .find(|(i, _)| graph.revs[*i].tx == TxMode::None)
            {
                let r = &graph.revs[i];
                return Err(Error::NoTransactionInSingleMode {
                    id: r.id.clone(),
                    path: r.origin.clone(),
                });
            }
            return self.single(graph, steps).await;
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
    pub(crate) async fn stamp(
        &mut self,
        graph: &Graph,
        steps: &[(usize, Direction)],
    ) -> Result<(), Error> {
        let started = Instant::now();
        let (stmts, args): (Vec<Statement>, Vec<Args>) = steps
            .iter()
            .map(|&(i, dir)| {
                let (stmt, args) = self.step_args(&graph.revs[i], dir, "stamp");
                (stmt.clone(), args)
            })
            .unzip();
        let client = self.client;
        let mut sent = vec![send(simple(client, "BEGIN")).await];
        for (stmt, args) in stmts.iter().zip(args) {
            sent.push(send(extended(client, stmt, args)).await);
        }
        sent.push(send(simple(client, "COMMIT")).await);
        let mut first_err = None;
        for s in sent {
            if let Err(e) = s.answer().await {
                first_err.get_or_insert(e.error);
            }
        }
        if let Some(e) = first_err {
            let _ = client.simple_query("ROLLBACK").await;
            return Err(Error::Db {
                context: "stamping",
                source: e,
            });
        }
        let each = started.elapsed() / steps.len().max(1) as u32;
        for &(i, dir) in steps {
            self.push(&graph.revs[i], dir, each, true);
        }
        Ok(())
    }

    async fn transactional(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let client = self.client;
        let before = self.digest.clone();
        let (stmt, args) = self.step_args(rev, dir, event_of(dir));
        let stmt = stmt.clone();
        let (body, body_line) = body_of(rev, dir);
        let verify = if dir == Direction::Up {
            rev.verify.as_deref()
        } else {
            None
        };
        let started = Instant::now();
        let begin = send(simple(client, "BEGIN")).await;
        let body_f = send(simple(client, body)).await;
        let verify_f = match verify {
            Some(v) => Some(send(simple(client, v)).await),
            None => None,
        };
        let record = send(extended(client, &stmt, args)).await;
        // Without a verify section nothing can still veto the commit: pipeline it too.
        let commit = match verify {
            None => Some(send(simple(client, "COMMIT")).await),
            Some(_) => None,
        };
        let begin = begin.answer().await;
        let body_r = body_f.answer().await;
        let verify_r = match verify_f {
            Some(v) => Some(v.answer().await),
            None => None,
        };
        let record = record.answer().await;
        let commit = match commit {
            Some(c) => Some(c.answer().await),
            None => None,
        };
        let (verify_r, verify_err) = match verify_r {
            Some(Err(e)) => (None, Some(e)),
            other => (other, None),
        };
        let failure = begin
            .err()
            .map(|f| (f.error, None, None))
            .or_else(|| {
                body_r.err().map(|f| {
                    let (statement, line) = locate(&f, body, body_line);
                    (f.error, Some(statement), Some(line))
                })
            })
            .or_else(|| verify_err.map(|f| (f.error, None, None)))
            .or_else(|| record.err().map(|f| (f.error, None, None)));
        if let Some((e, statement, line)) = failure {
            if commit.is_none() {
                let _ = client.simple_query("ROLLBACK").await;
            }
            self.digest = before;
            return Err(self.failed(rev, dir, statement, line, e).await);
        }
        if let (Some(Ok(msgs)), Some(v)) = (&verify_r, verify) {
            if let Some(query) = false_statement(msgs, v) {
                let _ = client.simple_query("ROLLBACK").await;
                self.digest = before;
                return Err(Error::VerifyFailed {
                    id: rev.id.clone(),
                    path: rev.origin.clone(),
                    query,
                    report: Box::new(self.report.clone()),
                });
            }
        }
        let commit = match commit {
            Some(c) => c.map_err(|f| f.error),
            None => client.simple_query("COMMIT").await,
        };
        if let Err(e) = commit {
            self.digest = before;
            return Err(self.failed(rev, dir, None, None, e).await);
        }
        self.push(rev, dir, started.elapsed(), false);
        tracing::info!(revision = %rev.id, direction = %dir, elapsed = ?started.elapsed(), "applied");
        Ok(())
    }

    async fn non_transactional(&mut self, rev: &Revision, dir: Direction) -> Result<(), Error> {
        let client = self.client;
        let started = Instant::now();
        let id = rev.id.as_str().to_owned();
        let checksum = rev.checksum.to_hex();
        if dir == Direction::Down {
            self.digest.remove(&id, &checksum);
        }
        let start = Args::Start {
            id: id.clone(),
            revises: ids(&rev.revises),
            depends_on: ids(&rev.depends_on),
            checksum: checksum.clone(),
            kind: rev.kind(),
            app_version: self.app_version.clone(),
            direction: dir_word(dir),
            digest: self.digest.to_string(),
        };
        extended(client, &self.stmts.start, start)
            .await
            .map_err(|f| Error::Db {
                context: "recording the start of a revision",
                source: f.error,
            })?;
        let (body, body_line) = body_of(rev, dir);
        for (n, stmt) in split::split(body).iter().enumerate() {
            if let Err(e) = client.simple_query(stmt.text).await {
                let line = body_line + stmt.line - 1;
                return Err(self.failed(rev, dir, Some(n + 1), Some(line), e).await);
            }
        }
        if dir == Direction::Down {
            let args = Args::Revert {
                id: id.clone(),
                event: "revert",
                digest: self.digest.to_string(),
            };
            extended(client, &self.stmts.revert, args)
                .await
                .map_err(|f| Error::Db {
                    context: "recording a revert",
                    source: f.error,
                })?;
        } else {
            let verify = rev.verify.as_deref().unwrap_or("");
            self.digest.add(&id, &checksum);
            let finish = Args::Finish {
                id: id.clone(),
                digest: self.digest.to_string(),
            };
            let begin = send(simple(client, "BEGIN")).await;
            let verify_f = send(simple(client, verify)).await;
            let fin = send(extended(client, &self.stmts.finish, finish)).await;
            let results = [
                begin.answer().await,
                verify_f.answer().await,
                fin.answer().await,
            ];
            let mut failure = None;
            for r in &results {
                if let Err(f) = r {
                    failure.get_or_insert_with(|| f.error.to_string());
                }
            }
            let veto = match &results[1] {
                Ok(msgs) => false_statement(msgs, verify),
                Err(_) => None,
            };
            if failure.is_some() || veto.is_some() {
                let _ = client.simple_query("ROLLBACK").await;
                self.digest.remove(&id, &checksum);
                let msg = failure.clone().unwrap_or_else(|| {
                    format!(
                        "verify returned false: {}",
                        veto.clone().unwrap_or_default()
                    )
                });
                self.record_failure(rev, dir, None, &msg).await;
                if let Some(query) = veto {
                    return Err(Error::VerifyFailed {
                        id: rev.id.clone(),
                        path: rev.origin.clone(),
                        query,
                        report: Box::new(self.report.clone()),
                    });
                }
                let e = results
                    .into_iter()
                    .find_map(|r| r.err())
                    .expect("a failure")
                    .error;
                return Err(Error::RevisionFailed {
                    id: rev.id.clone(),
                    path: rev.origin.clone(),
                    statement: None,
                    line: None,
                    report: Box::new(self.report.clone()),
                    source: e,
                });
            }
            client
                .simple_query("COMMIT")
                .await
                .map_err(Error::db("recording an applied revision"))?;
        }
        self.push(rev, dir, started.elapsed(), false);
        tracing::info!(revision = %rev.id, direction = %dir, elapsed = ?started.elapsed(), "applied");
        Ok(())
    }

    /// Runs every step inside one transaction, all pipelined.
    async fn single(&mut self, graph: &Graph, steps: &[(usize, Direction)]) -> Result<(), Error> {
        let client = self.client;
        let before = self.digest.clone();
        let started = Instant::now();
        let (stmts, args): (Vec<Statement>, Vec<Args>) = steps
            .iter()
            .map(|&(i, dir)| {
                let (stmt, args) = self.step_args(&graph.revs[i], dir, event_of(dir));
                (stmt.clone(), args)
            })
            .unzip();
        let begin = send(simple(client, "BEGIN")).await;
        let mut sent = Vec::with_capacity(steps.len());
        for ((&(i, dir), stmt), args) in steps.iter().zip(&stmts).zip(args) {
            let rev = &graph.revs[i];
            let (body, _) = body_of(rev, dir);
            let verify = if dir == Direction::Up {
                rev.verify.as_deref()
            } else {
                None
            };
            let b = send(simple(client, body)).await;
            let v = match verify {
                Some(v) => Some(send(simple(client, v)).await),
                None => None,
            };
            let r = send(extended(client, stmt, args)).await;
            sent.push((i, dir, b, v, r));
        }
        let mut failure: Option<Error> = begin.answer().await.err().map(|f| Error::Db {
            context: "beginning the transaction",
            source: f.error,
        });
        let mut last = Instant::now();
        let mut done = Vec::new();
        for (i, dir, b, v, r) in sent {
            let rev = &graph.revs[i];
            let (body, body_line) = body_of(rev, dir);
            let (b, v, r) = (
                b.answer().await,
                match v {
                    Some(v) => Some(v.answer().await),
                    None => None,
                },
                r.answer().await,
            );
            if failure.is_some() {
                continue;
            }
            if let Err(f) = b {
                let (statement, line) = locate(&f, body, body_line);
                failure = Some(Error::RevisionFailed {
                    id: rev.id.clone(),
                    path: rev.origin.clone(),
                    statement: Some(statement),
                    line: Some(line),
                    report: Box::default(),
                    source: f.error,
                });
                continue;
            }
            match v {
                Some(Err(f)) => {
                    failure = Some(Error::RevisionFailed {
                        id: rev.id.clone(),
                        path: rev.origin.clone(),
                        statement: None,
                        line: None,
                        report: Box::default(),
                        source: f.error,
                    });
                    continue;
                }
                Some(Ok(msgs)) => {
                    if let Some(query) = false_statement(&msgs, rev.verify.as_deref().unwrap_or(""))
                    {
                        failure = Some(Error::VerifyFailed {
                            id: rev.id.clone(),
                            path: rev.origin.clone(),
                            query,
                            report: Box::default(),
                        });
                        continue;
                    }
                }
                None => {}
            }
            if let Err(f) = r {
                failure = Some(Error::Db {
                    context: "recording a revision",
                    source: f.error,
                });
                continue;
            }
            done.push((i, dir, last.elapsed()));
            last = Instant::now();
        }
        if let Some(err) = failure {
            let _ = client.simple_query("ROLLBACK").await;
            self.digest = before;
            return Err(err);
        }
        if let Err(e) = client.simple_query("COMMIT").await {
            self.digest = before;
            return Err(Error::Db {
                context: "committing the single transaction",
                source: e,
            });
        }
        for (i, dir, d) in done {
            self.push(&graph.revs[i], dir, d, false);
        }
        tracing::info!(steps = steps.len(), elapsed = ?started.elapsed(), "applied in one transaction");
        Ok(())
    }

    /// Builds the error for a failed step, after recording a `fail` event (and,
    /// for `transaction none`, the `failed` state) in its own transaction.
    async fn failed(
        &mut self,
        rev: &Revision,
        dir: Direction,
        statement: Option<usize>,
        line: Option<usize>,
        e: tokio_postgres::Error,
    ) -> Error {
        let msg = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string());
        self.record_failure(rev, dir, statement, &msg).await;
        tracing::warn!(revision = %rev.id, direction = %dir, error = %msg, "revision failed");
        Error::RevisionFailed {
            id: rev.id.clone(),
            path: rev.origin.clone(),
            statement,
            line,
            report: Box::new(self.report.clone()),
            source: e,
        }
    }

    async fn record_failure(
        &self,
        rev: &Revision,
        dir: Direction,
        statement: Option<usize>,
        msg: &str,
    ) {
        let args = Args::Fail {
            id: rev.id.as_str().to_owned(),
            statement: statement.map(|s| s as i32),
            error: msg.to_owned(),
            direction: dir_word(dir),
        };
        if let Err(f) = extended(self.client, &self.stmts.fail, args).await {
            tracing::warn!(revision = %rev.id, error = %f.error, "could not record the failure in the ledger");
        }
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
        Direction::Down => (
            rev.down.as_ref().map(|b| b.sql()).unwrap_or(""),
            rev.down_line,
        ),
    }
}

/// The 1-based statement of a failed script, and its line in the file: from
/// the error's position when the server gives one, else from the statements
/// that completed before it.
fn locate(f: &Failed, body: &str, first_line: usize) -> (usize, usize) {
    let statement = f.completed + 1;
    let line = match f.error.as_db_error().and_then(|d| d.position()) {
        Some(ErrorPosition::Original(pos)) => {
            let upto: String = body
                .chars()
                .take((*pos as usize).saturating_sub(1))
                .collect();
            first_line + upto.matches('\n').count()
        }
        _ => split::split(body)
            .get(f.completed)
            .map_or(first_line, |s| first_line + s.line - 1),
    };
    (statement, line)
}

/// The verify statement whose first column came back false, if any.
fn false_statement(msgs: &[SimpleQueryMessage], verify: &str) -> Option<String> {
    let mut index = 0;
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) if r.get(0) == Some("f") => {
                let stmts = split::split(verify);
                return Some(
                    stmts
                        .get(index)
                        .map(|s| s.text.to_owned())
                        .unwrap_or_else(|| verify.trim().to_owned()),
                );
            }
            SimpleQueryMessage::CommandComplete(_) => index += 1,
            _ => {}
        }
    }
    None
}
