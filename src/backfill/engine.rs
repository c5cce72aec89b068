//! The engine: one runner per connection, one backfill at a time, under the
//! backfill's advisory lock. Each batch is BEGIN, the work, the checkpoint,
//! COMMIT; the runner keeps the cursor in memory only between batches it has
//! committed, and reads it back from the table whenever it (re)starts.

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use super::{
    BackfillOutcome, BackfillReport, BackfillRun, BackfillState, BoxError, CHECKPOINT, Health, Kind, Options,
    Pausing, Progress, Row, START, applied_among, ensure_table, read_rows, set_paused, transition,
};
use crate::backfill::Backfill;
use crate::error::Error;
use crate::ledger::Ledger;
use crate::lock::{self, ClientRef};
use crate::quote::quote_ident;
use crate::rust::Conn;

/// How often a waiting runner looks again at a paused or busy backfill.
const POLL: Duration = Duration::from_millis(500);
/// How often waiting is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How one `run_one` call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    AlreadyDone,
    Paused,
    /// Another session holds the backfill's lock.
    Busy,
    /// Its revision was reverted while this process ran it.
    NotEligible,
}

/// Runs backfills on one connection. Dropped while it holds a backfill's lock
/// or a batch's transaction (a cancelled or aborted task), it gives the
/// connection to `lock::discard`: a pooled connection is closed, which rolls
/// the batch back and frees the lock; a borrowed one gets ROLLBACK and unlock queued.
pub(crate) struct Runner<'a> {
    conn: Option<ClientRef<'a>>,
    ledger: Ledger,
    held: Option<i64>,
    in_tx: bool,
    /// Set when the connection broke: the runner cannot go on with it.
    lost: bool,
    /// Rows and batches committed by this runner, over all its calls.
    rows: u64,
    batches: u64,
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        if self.held.is_some() || self.in_tx {
            if let Some(conn) = self.conn.take() {
                lock::discard(conn, &lock::release_sql(self.held.unwrap_or_default(), "", None));
            }
        }
    }
}

/// A batch's work, prepared once per run.
enum Work {
    Sql { stmt: tokio_postgres::Statement, types: [Type; 2] },
    Rust(std::sync::Arc<dyn super::BackfillStep>),
}

/// What one batch transaction did.
enum Step {
    Committed {
        rows: u64,
        units: u64,
        next: Option<String>,
        done: bool,
    },
    /// The checkpoint row was not where the batch started (a pause): rolled back.
    Moved,
}

impl<'a> Runner<'a> {
    pub(crate) fn new(conn: ClientRef<'a>, ledger: Ledger) -> Self {
        Self { conn: Some(conn), ledger, held: None, in_tx: false, lost: false, rows: 0, batches: 0 }
    }

    fn client(&self) -> &Client {
        self.conn.as_ref().expect("present until dropped").client()
    }

    fn connection_lost(&self) -> bool {
        self.lost || self.client().is_closed()
    }

    /// Runs `bf` to its end, a pause, or a failure, if its lock is free.
    pub(crate) async fn run_one(&mut self, bf: &Backfill) -> Result<Outcome, Error> {
        let key = lock::backfill_key(&self.ledger.schema, &bf.name);
        // Set before the request is sent: a cancelled call may hold the lock.
        self.held = Some(key);
        match lock::try_backfill_lock(self.client(), key).await? {
            Ok(true) => {}
            Ok(false) => {
                self.held = None;
                return Ok(Outcome::Busy);
            }
            Err(seen_from) => {
                self.held = None;
                return Err(Error::BackfillThroughPooler { name: bf.name.clone(), seen_from });
            }
        }
        let result = self.locked(bf).await;
        if !self.in_tx && !self.connection_lost() && lock::backfill_unlock(self.client(), key).await.is_ok() {
            self.held = None;
        }
        result
    }

    async fn locked(&mut self, bf: &Backfill) -> Result<Outcome, Error> {
        loop {
            if let Some(outcome) = self.pass(bf).await? {
                return Ok(outcome);
            }
            // Its row went away: an operator reset it, or its revision was
            // reverted (which resets it too). Only the first starts it over.
            let after = std::slice::from_ref(&bf.after);
            if !applied_among(self.client(), &self.ledger, after).await?.contains(&bf.after) {
                tracing::info!(backfill = %bf.name, revision = %bf.after, "the backfill's revision was reverted while this process ran it; stopping");
                return Ok(Outcome::NotEligible);
            }
            tracing::info!(backfill = %bf.name, "backfill reset while this process ran it; starting it over");
        }
    }

    /// Starts or resumes `bf` and walks it; `None` when its row was reset
    /// while it ran, to start over.
    async fn pass(&mut self, bf: &Backfill) -> Result<Option<Outcome>, Error> {
        use BackfillState::*;
        let names = std::slice::from_ref(&bf.name);
        let row = read_rows(self.client(), &self.ledger, names).await?.remove(&bf.name);
        match row.as_ref().map(|r| r.state) {
            Some(Done) => return Ok(Some(Outcome::AlreadyDone)),
            Some(Paused) => return Ok(Some(Outcome::Paused)),
            None | Some(Pending) => {
                if !self.start(bf).await? {
                    return Ok(Some(Outcome::Paused));
                }
            }
            Some(Running | Failed) => {
                let resumed = transition(
                    self.client(),
                    &self.ledger,
                    bf,
                    Some(Running),
                    &[Running, Failed],
                    "backfill_resume",
                    None,
                )
                .await?;
                if !resumed {
                    // Paused, or reset (its row gone) since it was read.
                    return Ok(self.paused_or_reset(bf).await?.then_some(Outcome::Paused));
                }
            }
        }
        // Reset since it started (a forced reset): start over.
        let Some(row) = read_rows(self.client(), &self.ledger, names).await?.remove(&bf.name) else {
            return Ok(None);
        };
        match row.state {
            Running => {}
            Done => return Ok(Some(Outcome::AlreadyDone)),
            _ => return Ok(Some(Outcome::Paused)),
        }
        tracing::info!(
            backfill = %bf.name,
            rows_done = row.rows_done,
            cursor = row.cursor.as_deref().unwrap_or(""),
            "backfill {}",
            if row.batches == 0 { "started" } else { "resumed" }
        );
        self.walk(bf, row).await
    }

    /// After a transition that matched nothing: `true` when the backfill is
    /// paused, `false` when its row is gone (reset), to start over.
    async fn paused_or_reset(&self, bf: &Backfill) -> Result<bool, Error> {
        let names = std::slice::from_ref(&bf.name);
        Ok(read_rows(self.client(), &self.ledger, names).await?.contains_key(&bf.name))
    }

    /// Fixes the key range and the estimate, and records the start. `false`
    /// when a pause got there first.
    async fn start(&mut self, bf: &Backfill) -> Result<bool, Error> {
        let client = self.client();
        let o = &bf.opts;
        let (mut key_start, mut key_end, mut estimate) = (None, None, o.estimated_total.map(|t| t as i64));
        if let Kind::Sql { key, .. } = &bf.kind {
            let table = bf.table.as_deref().unwrap_or_default();
            let ty: Option<String> = client
                .query_opt(
                    "SELECT format_type(atttypid, NULL) FROM pg_attribute \
                     WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                    &[&quote_table(table), key],
                )
                .await
                .map_err(Error::db("reading a backfill's key column"))?
                .map(|r| r.get(0));
            match ty.as_deref() {
                Some("smallint" | "integer" | "bigint") => {}
                Some(other) => {
                    return Err(self.invalid(bf, format!(
                        "the key column {key} of {table} is {other}; a SQL backfill walks an integer key (use a Rust backfill for other keys)"
                    )));
                }
                None => return Err(self.invalid(bf, format!("there is no column {key} in table {table}"))),
            }
            let sql = format!(
                "SELECT min({k})::bigint, max({k})::bigint FROM {t}",
                k = quote_ident(key),
                t = quote_table(table)
            );
            let r = client.query_one(&sql, &[]).await.map_err(Error::db("reading a backfill's key range"))?;
            let (min, max): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
            if let (Some(min), Some(max)) = (min, max) {
                key_start = Some(min);
                // Half-open: every key present now is below the end.
                key_end = Some(max.saturating_add(1));
                estimate = Some(max.saturating_add(1) - min);
            }
        } else if estimate.is_none() {
            if let Some(table) = &bf.table {
                let r = client
                    .query_opt(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)",
                        &[&quote_table(table)],
                    )
                    .await
                    .map_err(Error::db("estimating a backfill's rows"))?;
                estimate = r.map(|r| r.get::<_, i64>(0)).filter(|&t| t > 0);
            }
        }
        let cursor = key_start.map(|k| k.to_string());
        let size = o.initial.clamp(o.min, o.max) as i64;
        let row = client
            .query_one(
                &self.ledger.sql(START),
                &[&bf.name, &bf.after, &key_start, &key_end, &cursor, &estimate, &size],
            )
            .await
            .map_err(Error::db("recording the start of a backfill"))?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Prepares the checkpoint and the work; `Err(outcome)` when preparing
    /// the work failed for good (the backfill is then recorded as failed).
    async fn prepare(
        &mut self,
        bf: &Backfill,
    ) -> Result<Result<(tokio_postgres::Statement, Work), Outcome>, Error> {
        let client = self.client();
        let checkpoint = client
            .prepare(&self.ledger.sql(CHECKPOINT))
            .await
            .map_err(Error::db("preparing a backfill checkpoint"))?;
        let work = match &bf.kind {
            Kind::Rust(step) => Work::Rust(step.clone()),
            Kind::Sql { sql, .. } => match client.prepare(sql).await {
                Ok(stmt) => {
                    let types: Vec<Type> = stmt.params().to_vec();
                    let int = |t: &Type| [Type::INT2, Type::INT4, Type::INT8].contains(t);
                    if types.len() != 2 || !types.iter().all(int) {
                        return Err(self.invalid(bf, format!(
                            "the statement must take exactly two integer parameters, $1 and $2 (the key range); PostgreSQL sees {}",
                            types.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
                        )));
                    }
                    Work::Sql { stmt, types: [types[0].clone(), types[1].clone()] }
                }
                Err(e) if !e.is_closed() => {
                    let source: BoxError = Box::new(e);
                    return self.fail(bf, 1, source).await.map(Err);
                }
                Err(e) => {
                    self.lost = true;
                    return Err(Error::Db { context: "preparing a backfill statement", source: e });
                }
            },
        };
        Ok(Ok((checkpoint, work)))
    }

    /// Walks `bf` in batches from `row`. `None`: its row was reset (removed)
    /// while this process ran it, and the walk is to start over.
    async fn walk(&mut self, bf: &Backfill, row: Row) -> Result<Option<Outcome>, Error> {
        let o = &bf.opts;
        let (checkpoint, work) = match self.prepare(bf).await? {
            Ok(prepared) => prepared,
            Err(outcome) => return Ok(Some(outcome)),
        };
        let begin = begin_sql(o);
        let mut walk = Walk::new(bf, &row);
        loop {
            if walk.last_check.is_none_or(|t| t.elapsed() >= o.health_interval) {
                if self.wait_healthy(bf, &mut walk.progress).await? {
                    tracing::info!(backfill = %bf.name, "backfill paused");
                    return Ok(Some(Outcome::Paused));
                }
                walk.last_check = Some(Instant::now());
            }
            walk.throttle(o).await;
            let size = walk.sizer.size;
            let event_due = walk.last_event.elapsed() >= o.progress_interval;
            let started = Instant::now();
            let step = self
                .batch(
                    bf,
                    &work,
                    &checkpoint,
                    &begin,
                    &walk.cursor,
                    size,
                    row.key_end,
                    event_due,
                    &walk.progress,
                )
                .await;
            let took = started.elapsed();
            match step {
                Ok(Step::Committed { rows, units, next, done }) => {
                    self.rows += rows;
                    self.batches += 1;
                    walk.committed(bf, &row, BatchDone { rows, units, size, took, event_due }, next, done);
                    if done {
                        return Ok(Some(Outcome::Done));
                    }
                }
                Ok(Step::Moved) => return self.moved(bf, walk.rows_done).await,
                Err(e) => {
                    walk.failures += 1;
                    if self.client().is_closed() || broken(&e) {
                        self.lost = true;
                        return Err(match e.downcast::<tokio_postgres::Error>() {
                            Ok(e) => Error::Db { context: "running a backfill batch", source: *e },
                            Err(source) => Error::BackfillFailed {
                                name: bf.name.clone(),
                                attempts: walk.failures,
                                source,
                            },
                        });
                    }
                    if sqlstate(&e) == Some("57014") {
                        walk.sizer.halve();
                    }
                    if walk.failures > o.max_retries {
                        return self.fail(bf, walk.failures, e).await.map(Some);
                    }
                    tracing::warn!(
                        backfill = %bf.name,
                        attempt = walk.failures,
                        size,
                        next_size = walk.sizer.size,
                        error = %message(&e),
                        "backfill batch failed; retrying"
                    );
                    let backoff = o.retry_backoff.saturating_mul(1 << (walk.failures - 1).min(16));
                    tokio::time::sleep(backoff.min(Duration::from_secs(10))).await;
                }
            }
        }
    }

    /// A batch's checkpoint found the row moved by someone else: paused,
    /// done, or reset (then `None`: start over).
    async fn moved(&mut self, bf: &Backfill, rows_done: u64) -> Result<Option<Outcome>, Error> {
        let now = read_rows(self.client(), &self.ledger, std::slice::from_ref(&bf.name)).await?;
        match now.get(&bf.name).map(|r| r.state) {
            Some(BackfillState::Paused) => {
                tracing::info!(backfill = %bf.name, rows_done, "backfill paused");
                Ok(Some(Outcome::Paused))
            }
            Some(BackfillState::Done) => Ok(Some(Outcome::AlreadyDone)),
            // Reset by an operator (`Backfills::reset` with `Reset::EvenIfRunning`), or its
            // revision reverted: start over.
            None | Some(BackfillState::Pending) => Ok(None),
            _ => Err(self.corrupt(bf, "its checkpoint moved while this process held its lock")),
        }
    }

    /// One batch: BEGIN, the work, the checkpoint, COMMIT.
    #[allow(clippy::too_many_arguments)]
    async fn batch(
        &mut self,
        bf: &Backfill,
        work: &Work,
        checkpoint: &tokio_postgres::Statement,
        begin: &str,
        cursor: &Option<String>,
        size: u64,
        key_end: Option<i64>,
        event_due: bool,
        progress: &Progress,
    ) -> Result<Step, BoxError> {
        let client = self.conn.as_ref().expect("present until dropped").client();
        self.in_tx = true;
        let result = async {
            client.batch_execute(begin).await?;
            let (rows, units, next, done) = match work {
                Work::Sql { stmt, types } => match (cursor.as_deref(), key_end) {
                    (Some(c), Some(end)) => {
                        let lo: i64 =
                            c.parse().map_err(|_| format!("the recorded cursor {c:?} is not a key"))?;
                        let hi = lo.saturating_add(size.min(i64::MAX as u64) as i64).min(end);
                        let (a, b) = (bind(&types[0], lo), bind(&types[1], hi));
                        let n = client.execute(stmt, &[&*a, &*b]).await?;
                        (n, (hi - lo).max(0) as u64, Some(hi.to_string()), hi >= end)
                    }
                    // An empty table when it started: nothing to do.
                    _ => (0, 0, cursor.clone(), true),
                },
                Work::Rust(step) => {
                    let batch = step.batch(&Conn::new(client, true), cursor.as_deref(), size).await?;
                    let done = batch.next.is_none();
                    (batch.rows, size, batch.next, done)
                }
            };
            let eta = progress.eta.map(|d| d.as_secs_f64());
            let moved: i64 = client
                .query_one(
                    checkpoint,
                    &[
                        &bf.name,
                        &next,
                        &(rows.min(i64::MAX as u64) as i64),
                        &(size.min(i64::MAX as u64) as i64),
                        cursor,
                        &done,
                        &event_due,
                        &progress.rows_per_second,
                        &eta,
                    ],
                )
                .await?
                .get(0);
            if moved == 0 {
                client.batch_execute("ROLLBACK").await?;
                return Ok(Step::Moved);
            }
            client.batch_execute("COMMIT").await?;
            Ok::<_, BoxError>(Step::Committed { rows, units, next, done })
        }
        .await;
        match &result {
            Ok(_) => self.in_tx = false,
            Err(_) => {
                if !client.is_closed() && client.batch_execute("ROLLBACK").await.is_ok() {
                    self.in_tx = false;
                }
            }
        }
        result
    }

    /// Waits while a health check says so. `true` when the backfill was paused meanwhile.
    async fn wait_healthy(&self, bf: &Backfill, progress: &mut Progress) -> Result<bool, Error> {
        let since = Instant::now();
        let mut logged: Option<Instant> = None;
        loop {
            let Some(reason) = self.health(bf).await? else {
                if logged.is_some() {
                    tracing::info!(backfill = %bf.name, waited = ?since.elapsed(), "backfill proceeds");
                }
                return Ok(false);
            };
            if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                tracing::info!(backfill = %bf.name, reason = %reason, waited = ?since.elapsed(), "backfill waiting");
                logged = Some(Instant::now());
            }
            progress.waiting = Some(reason);
            if let Some(f) = &bf.opts.progress {
                f(progress);
            }
            progress.waiting = None;
            tokio::time::sleep(bf.opts.health_interval.max(Duration::from_millis(50))).await;
            let rows = read_rows(self.client(), &self.ledger, std::slice::from_ref(&bf.name)).await?;
            if rows.get(&bf.name).is_some_and(|r| r.state == BackfillState::Paused) {
                return Ok(true);
            }
        }
    }

    /// Why the backfill should wait now, if it should.
    async fn health(&self, bf: &Backfill) -> Result<Option<String>, Error> {
        let client = self.client();
        let o = &bf.opts;
        if let Some(bound) = o.max_replica_lag {
            let row = client
                .query_opt(
                    "SELECT coalesce(application_name, ''), extract(epoch FROM replay_lag)::float8 \
                     FROM pg_stat_replication WHERE replay_lag > $1::float8 * interval '1 second' \
                     ORDER BY replay_lag DESC LIMIT 1",
                    &[&bound.as_secs_f64()],
                )
                .await
                .map_err(Error::db("checking replica lag"))?;
            if let Some(r) = row {
                let (name, lag): (String, f64) = (r.get(0), r.get(1));
                return Ok(Some(format!("replica {name:?} replays {lag:.1} s behind (bound {bound:?})")));
            }
        }
        if let (true, Some(table)) = (o.autovacuum, &bf.table) {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a ON a.pid = v.pid \
                     WHERE v.relid = to_regclass($1) AND a.backend_type = 'autovacuum worker'",
                    &[&quote_table(table)],
                )
                .await
                .map_err(Error::db("checking autovacuum"))?;
            if row.get::<_, i64>(0) > 0 {
                return Ok(Some(format!("autovacuum is processing {table}")));
            }
        }
        for check in &o.checks {
            match check.check(client).await {
                Ok(Health::Proceed) => {}
                Ok(Health::Wait(reason)) => return Ok(Some(reason)),
                Err(e) => {
                    tracing::warn!(backfill = %bf.name, error = %e, "health check failed; waiting");
                    return Ok(Some(format!("a health check failed: {e}")));
                }
            }
        }
        Ok(None)
    }

    /// Records the backfill as failed and builds the error.
    async fn fail(&mut self, bf: &Backfill, attempts: u32, source: BoxError) -> Result<Outcome, Error> {
        let msg = message(&source);
        tracing::error!(backfill = %bf.name, attempts, error = %msg, "backfill failed");
        use BackfillState::*;
        transition(self.client(), &self.ledger, bf, Some(Failed), &[Running], "backfill_fail", Some(&msg))
            .await?;
        Err(Error::BackfillFailed { name: bf.name.clone(), attempts, source })
    }

    fn invalid(&self, bf: &Backfill, reason: String) -> Error {
        Error::InvalidBackfill { name: bf.name.clone(), reason }
    }

    fn corrupt(&self, bf: &Backfill, reason: &str) -> Error {
        Error::CorruptLedger {
            schema: self.ledger.schema.clone(),
            id: bf.name.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// BEGIN with the batch's timeouts, as one simple-protocol request.
/// One committed batch, as the walk accounts for it.
struct BatchDone {
    rows: u64,
    units: u64,
    size: u64,
    took: Duration,
    event_due: bool,
}

/// Where a walk over a backfill's key range is: its cursor, its counts in the
/// ledger and in this run, its batch sizing, and the progress it reports.
struct Walk {
    cursor: Option<String>,
    rows_done: u64,
    batches: u64,
    sizer: Sizer,
    run_start: Instant,
    run_rows: u64,
    run_units: u64,
    failures: u32,
    last_event: Instant,
    last_check: Option<Instant>,
    progress: Progress,
}

impl Walk {
    fn new(bf: &Backfill, row: &Row) -> Walk {
        let sizer = Sizer::new(&bf.opts, row.batch_size);
        let (rows_done, batches) = (row.rows_done.max(0) as u64, row.batches.max(0) as u64);
        let progress = Progress {
            name: bf.name.clone(),
            rows_done,
            estimated_total: row.estimated_total.map(|t| t.max(0) as u64),
            fraction: fraction(row, row.cursor.as_deref(), row.rows_done),
            rows_per_second: 0.0,
            eta: None,
            batches,
            batch_size: 0,
            batch_rows: 0,
            batch_duration: Duration::ZERO,
            next_batch_size: sizer.size,
            waiting: None,
        };
        Walk {
            cursor: row.cursor.clone(),
            rows_done,
            batches,
            sizer,
            run_start: Instant::now(),
            run_rows: 0,
            run_units: 0,
            failures: 0,
            last_event: Instant::now(),
            last_check: None,
            progress,
        }
    }

    /// The throttles before a batch: rows per second, and the pause between batches.
    async fn throttle(&self, o: &Options) {
        if let Some(limit) = o.rows_per_second {
            let due = self.run_start + Duration::from_secs_f64(self.run_rows as f64 / limit as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if !o.pause.is_zero() && self.run_rows + self.run_units > 0 {
            tokio::time::sleep(o.pause).await;
        }
    }

    /// Accounts for a committed batch, and reports progress.
    fn committed(&mut self, bf: &Backfill, row: &Row, b: BatchDone, next: Option<String>, done: bool) {
        self.failures = 0;
        self.rows_done += b.rows;
        self.batches += 1;
        self.run_rows += b.rows;
        self.run_units += b.units;
        self.cursor = next;
        if b.event_due {
            self.last_event = Instant::now();
        }
        self.sizer.observe(b.units, b.took);
        let elapsed = self.run_start.elapsed().as_secs_f64().max(1e-6);
        let p = &mut self.progress;
        p.rows_done = self.rows_done;
        p.batches = self.batches;
        p.fraction =
            if done { Some(1.0) } else { fraction(row, self.cursor.as_deref(), self.rows_done as i64) };
        p.rows_per_second = self.run_rows as f64 / elapsed;
        p.eta = if done {
            Some(Duration::ZERO)
        } else {
            eta(row, self.cursor.as_deref(), self.rows_done, self.run_rows, self.run_units, elapsed)
        };
        p.batch_size = b.size;
        p.batch_rows = b.rows;
        p.batch_duration = b.took;
        p.next_batch_size = self.sizer.size;
        p.waiting = None;
        if let Some(f) = &bf.opts.progress {
            f(p);
        }
        tracing::debug!(backfill = %bf.name, rows = b.rows, size = b.size, took = ?b.took, next_size = self.sizer.size, "backfill batch");
        if b.event_due {
            tracing::info!(
                backfill = %bf.name,
                rows_done = self.rows_done,
                estimated_total = ?p.estimated_total,
                rows_per_second = p.rows_per_second as u64,
                eta = ?p.eta,
                "backfill progress"
            );
        }
        if done {
            tracing::info!(backfill = %bf.name, rows_done = self.rows_done, batches = self.batches, elapsed = ?self.run_start.elapsed(), "backfill done");
        }
    }
}

fn begin_sql(o: &Options) -> String {
    let mut sql = String::from("BEGIN");
    if let Some(t) = o.statement_timeout {
        sql.push_str(&format!("; SET LOCAL statement_timeout = {}", t.as_millis().max(1)));
    }
    if let Some(t) = o.lock_timeout {
        sql.push_str(&format!("; SET LOCAL lock_timeout = {}", t.as_millis().max(1)));
    }
    sql
}

/// A key as the parameter type PostgreSQL inferred. Keys come from the
/// column, so they fit its type; only the exclusive end of an `integer` range
/// ending at the type's maximum would not, and is clamped.
fn bind(ty: &Type, v: i64) -> Box<dyn ToSql + Sync + Send> {
    if *ty == Type::INT2 {
        Box::new(v.clamp(i16::MIN.into(), i16::MAX.into()) as i16)
    } else if *ty == Type::INT4 {
        Box::new(v.clamp(i32::MIN.into(), i32::MAX.into()) as i32)
    } else {
        Box::new(v)
    }
}

/// `table` or `schema.table`, each part quoted as given.
pub(crate) fn quote_table(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) if !name.contains('.') => {
            format!("{}.{}", quote_ident(schema), quote_ident(name))
        }
        _ => quote_ident(table),
    }
}

fn sqlstate(e: &BoxError) -> Option<&str> {
    e.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.code()).map(|c| c.code())
}

/// Errors after which the connection cannot be used again.
fn broken(e: &BoxError) -> bool {
    if e.downcast_ref::<tokio_postgres::Error>().is_some_and(|e| e.is_closed()) {
        return true;
    }
    sqlstate(e).is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03"))
}

fn message(e: &BoxError) -> String {
    match e.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.as_db_error()) {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The done fraction: by key range when the backfill has one, else by rows over the estimate.
pub(crate) fn fraction(row: &Row, cursor: Option<&str>, rows_done: i64) -> Option<f64> {
    if row.state == BackfillState::Done {
        return Some(1.0);
    }
    match (row.key_start, row.key_end, cursor.and_then(|c| c.parse::<i64>().ok())) {
        (Some(s), Some(e), Some(c)) if e > s => Some(((c - s) as f64 / (e - s) as f64).clamp(0.0, 1.0)),
        _ => row.estimated_total.filter(|&t| t > 0).map(|t| (rows_done as f64 / t as f64).min(1.0)),
    }
}

fn eta(
    row: &Row,
    cursor: Option<&str>,
    rows_done: u64,
    run_rows: u64,
    run_units: u64,
    elapsed: f64,
) -> Option<Duration> {
    let (remaining, rate) = match (row.key_end, cursor.and_then(|c| c.parse::<i64>().ok())) {
        (Some(end), Some(c)) => ((end - c).max(0) as f64, run_units as f64 / elapsed),
        _ => {
            let total = row.estimated_total.filter(|&t| t > 0)? as f64;
            ((total - rows_done as f64).max(0.0), run_rows as f64 / elapsed)
        }
    };
    (rate > 0.0).then(|| Duration::from_secs_f64((remaining / rate).min(1e9)))
}

/// Batch sizing: towards the target duration, from a smoothed time per unit;
/// growth bounded per step, shrinking not (a slow batch is acted on at once).
#[derive(Debug, Clone)]
pub(crate) struct Sizer {
    pub(crate) size: u64,
    per_unit: Option<f64>,
    target: f64,
    growth: f64,
    min: u64,
    max: u64,
}

impl Sizer {
    pub(crate) fn new(o: &Options, recorded: Option<i64>) -> Self {
        // Under a rows-per-second limit, a batch is at most one target duration's worth of rows.
        let cap = o.rows_per_second.map_or(u64::MAX, |r| ((r as f64 * o.target.as_secs_f64()) as u64).max(1));
        let max = o.max.min(cap).max(o.min);
        let start = recorded.filter(|&s| s > 0).map_or(o.initial, |s| s as u64);
        Self {
            size: start.clamp(o.min, max),
            per_unit: None,
            target: o.target.as_secs_f64(),
            growth: o.growth,
            min: o.min,
            max,
        }
    }

    pub(crate) fn observe(&mut self, units: u64, took: Duration) {
        if units == 0 {
            return;
        }
        let secs = took.as_secs_f64().max(1e-6);
        let sample = secs / units as f64;
        let slow = secs > 2.0 * self.target;
        let per_unit = match self.per_unit {
            Some(p) if !slow => 0.5 * p + 0.5 * sample,
            _ => sample,
        };
        self.per_unit = Some(per_unit);
        let ideal = self.target / per_unit;
        let next = ideal.min(self.size as f64 * self.growth).max(1.0);
        self.size = (next as u64).clamp(self.min, self.max);
    }

    pub(crate) fn halve(&mut self) {
        self.size = (self.size / 2).max(self.min);
        self.per_unit = None;
    }
}

// ----- inline and deferred runs -----

fn run_entry(
    bf: &Backfill,
    outcome: BackfillOutcome,
    rows: u64,
    batches: u64,
    duration: Duration,
) -> BackfillRun {
    BackfillRun { name: bf.name.clone(), outcome, rows, batches, duration }
}

/// Runs every eligible backfill to completion, in declaration order, on
/// `conn`. A backfill another process is running is waited for; a paused one
/// is skipped. The first failure stops the call.
pub(crate) async fn run_inline(
    conn: ClientRef<'_>,
    ledger: &Ledger,
    backfills: &[Backfill],
) -> Result<BackfillReport, Error> {
    let mut report = BackfillReport::default();
    if backfills.is_empty() {
        return Ok(report);
    }
    let mut runner = Runner::new(conn, ledger.clone());
    let applied = if ensure_table(runner.client(), ledger).await? {
        let afters: Vec<String> = backfills.iter().map(|b| b.after.clone()).collect();
        applied_among(runner.client(), ledger, &afters).await?
    } else {
        Default::default()
    };
    for bf in backfills {
        let started = Instant::now();
        if !applied.contains(&bf.after) {
            report.backfills.push(run_entry(bf, BackfillOutcome::NotEligible, 0, 0, Duration::ZERO));
            continue;
        }
        let (rows, batches) = (runner.rows, runner.batches);
        let mut delay = Duration::from_millis(20);
        let mut logged: Option<Instant> = None;
        let outcome = loop {
            match runner.run_one(bf).await? {
                Outcome::Busy => {
                    if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        let key = lock::backfill_key(&ledger.schema, &bf.name);
                        let holder = lock::backfill_lock_holder(runner.client(), key).await?;
                        tracing::info!(
                            backfill = %bf.name,
                            holder = %holder.map(|h| h.to_string()).unwrap_or_default(),
                            "another process runs the backfill; waiting for it"
                        );
                        logged = Some(Instant::now());
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(POLL);
                }
                Outcome::Done => break BackfillOutcome::Done,
                Outcome::AlreadyDone if logged.is_some() => break BackfillOutcome::Done,
                Outcome::AlreadyDone => break BackfillOutcome::AlreadyDone,
                Outcome::Paused => break BackfillOutcome::Paused,
                Outcome::NotEligible => break BackfillOutcome::NotEligible,
            }
        };
        report.backfills.push(run_entry(
            bf,
            outcome,
            runner.rows - rows,
            runner.batches - batches,
            started.elapsed(),
        ));
    }
    Ok(report)
}

/// Deferred backfills running on a background task.
///
/// Returned by [`Backfills::spawn`](crate::backfill::Backfills::spawn).
/// The task runs every eligible backfill to completion, taking connections
/// from the pool; it waits for backfills that are paused (until someone
/// resumes them) or that another process is running, and reconnects when its
/// connection breaks. Dropping the handle leaves the task running.
pub struct BackfillHandle {
    task: tokio::task::JoinHandle<Result<BackfillReport, Error>>,
    pool: deadpool_postgres::Pool,
    ledger: Ledger,
    backfills: Vec<Backfill>,
}

impl std::fmt::Debug for BackfillHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackfillHandle")
            .field("backfills", &self.backfills.iter().map(|b| &b.name).collect::<Vec<_>>())
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl BackfillHandle {
    /// Pauses this handle's unfinished backfills: records `paused` in the
    /// table, so every process sees it. The running batch finishes (or rolls
    /// back) first; the task then waits until they are resumed.
    pub async fn pause(&self) -> Result<(), Error> {
        self.set_paused(Pausing::Pause).await
    }

    /// Resumes this handle's paused backfills (also those paused by another process).
    pub async fn resume(&self) -> Result<(), Error> {
        self.set_paused(Pausing::Resume).await
    }

    async fn set_paused(&self, to: Pausing) -> Result<(), Error> {
        let client = self.pool.get().await.map_err(|source| Error::Pool { source })?;
        for bf in &self.backfills {
            set_paused(&client, &self.ledger, bf, to).await?;
        }
        Ok(())
    }

    /// Waits until every backfill is done (or failed: then the first failure
    /// is returned, after the others finished). A paused backfill keeps it waiting.
    pub async fn wait(self) -> Result<BackfillReport, Error> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::BackfillTaskCancelled),
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the task at once. The batch in flight rolls back (its connection
    /// is closed), so the backfills resume from their last checkpoints when run again.
    pub fn abort(self) {
        self.task.abort();
    }
}

pub(crate) fn spawn(
    backfills: Vec<Backfill>,
    ledger: Ledger,
    invalid: Option<Error>,
    pool: deadpool_postgres::Pool,
) -> BackfillHandle {
    let task = {
        let (backfills, ledger, pool) = (backfills.clone(), ledger.clone(), pool.clone());
        tokio::spawn(async move {
            match invalid {
                Some(e) => Err(e),
                None => deferred(&backfills, &ledger, &pool).await,
            }
        })
    };
    BackfillHandle { task, pool, ledger, backfills }
}

async fn deferred(
    backfills: &[Backfill],
    ledger: &Ledger,
    pool: &deadpool_postgres::Pool,
) -> Result<BackfillReport, Error> {
    let n = backfills.len();
    let started = Instant::now();
    let mut slots = vec![Slot::default(); n];
    let mut first_error: Option<Error> = None;
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        let conn = pool.get().await.map_err(|source| Error::Pool { source })?;
        let mut runner = Runner::new(ClientRef::Pooled(Box::new(conn)), ledger.clone());
        let applied = if ensure_table(runner.client(), ledger).await? {
            let afters: Vec<String> = pending.iter().map(|&i| backfills[i].after.clone()).collect();
            applied_among(runner.client(), ledger, &afters).await?
        } else {
            Default::default()
        };
        let mut next = Vec::new();
        let (mut waiting, mut reconnect) = (false, false);
        for &i in &pending {
            let bf = &backfills[i];
            if reconnect {
                next.push(i);
                continue;
            }
            let slot = &mut slots[i];
            if !applied.contains(&bf.after) {
                slot.entry = Some(run_entry(bf, BackfillOutcome::NotEligible, 0, 0, Duration::ZERO));
                continue;
            }
            let (rows, batches) = (runner.rows, runner.batches);
            let result = runner.run_one(bf).await;
            let b = runner.batches - batches;
            slot.rows += runner.rows - rows;
            slot.batches += b;
            let finish = |slot: &Slot, outcome| {
                Some(run_entry(bf, outcome, slot.rows, slot.batches, started.elapsed()))
            };
            match result {
                Ok(Outcome::Done) => slot.entry = finish(slot, BackfillOutcome::Done),
                Ok(Outcome::AlreadyDone) if slot.batches > 0 => {
                    slot.entry = finish(slot, BackfillOutcome::Done)
                }
                Ok(Outcome::AlreadyDone) => slot.entry = finish(slot, BackfillOutcome::AlreadyDone),
                Ok(Outcome::NotEligible) => slot.entry = finish(slot, BackfillOutcome::NotEligible),
                Ok(Outcome::Paused | Outcome::Busy) => {
                    next.push(i);
                    waiting = true;
                }
                Err(e) if runner.connection_lost() => {
                    // A batch that committed since the last loss resets the count.
                    slot.losses = if b > 0 { 1 } else { slot.losses + 1 };
                    if slot.losses > bf.opts.max_retries {
                        tracing::error!(backfill = %bf.name, error = %e, "backfill connection lost too often; giving up");
                        first_error.get_or_insert(e);
                    } else {
                        tracing::warn!(backfill = %bf.name, error = %e, "backfill connection lost; reconnecting");
                        next.push(i);
                        reconnect = true;
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(runner);
        pending = next;
        if reconnect {
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else if waiting {
            tokio::time::sleep(POLL).await;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(BackfillReport { backfills: slots.into_iter().filter_map(|s| s.entry).collect() }),
    }
}

/// What a deferred run knows of one backfill across its connections.
#[derive(Clone, Default)]
struct Slot {
    /// Its outcome, once it has one.
    entry: Option<BackfillRun>,
    /// Rows and batches done by this run.
    rows: u64,
    batches: u64,
    /// Connections lost in a row (a committed batch resets the count).
    losses: u32,
}
