//! Batched, resumable data backfills attached to revisions.
//!
//! This module owns the `backfills` ledger rows and the engine that walks a
//! backfill in batches. Invariants:
//! - every batch runs in its own transaction, and that transaction also moves
//!   the backfill's checkpoint (cursor, rows done): a crash or a kill resumes
//!   at the last committed checkpoint, so no row is processed twice or skipped;
//! - a backfill runs on one connection that holds the backfill's own advisory
//!   lock (see `lock.rs`), so two processes never run it at once; a runner
//!   dropped mid-batch closes (or rolls back) its connection instead of
//!   returning it half-way through a transaction;
//! - a SQL backfill's key range is fixed when it starts: rows inserted later
//!   are the application's to write, and the backfill always ends.

mod engine;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::config::Config;
use crate::error::Error;
use crate::graph::Graph;
use crate::ledger::Ledger;
use crate::lock;
use crate::plan::Direction;
use crate::rust::BoxError;
use crate::session::Db;
use crate::state::Meta;

pub(crate) mod decl;

pub use decl::{
    Backfill, BackfillOutcome, BackfillReport, BackfillRun, BackfillState, BackfillStatus, BackfillStep,
    Batch, Health, HealthCheck, Progress,
};
pub(crate) use decl::{Kind, Options};
pub use engine::BackfillHandle;
pub(crate) use engine::run_inline;

// ----- ledger rows -----

const START: &str = include_str!("ledger/backfill_start.sql");
const CHECKPOINT: &str = include_str!("ledger/backfill_checkpoint.sql");
const TRANSITION: &str = include_str!("ledger/backfill_transition.sql");
const RESET: &str = include_str!("ledger/backfill_reset.sql");

/// A row of `backfills`.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) state: BackfillState,
    pub(crate) key_start: Option<i64>,
    pub(crate) key_end: Option<i64>,
    pub(crate) cursor: Option<String>,
    pub(crate) rows_done: i64,
    pub(crate) estimated_total: Option<i64>,
    pub(crate) batch_size: Option<i64>,
    pub(crate) batches: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) updated_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
}

const ROW_COLUMNS: &str = "name, state, key_start, key_end, cursor, rows_done, estimated_total, \
    batch_size, batches, last_error, started_at, updated_at, finished_at";

fn row_of(ledger: &Ledger, r: &tokio_postgres::Row) -> Result<(String, Row), Error> {
    let name: String = r.get(0);
    let state: String = r.get(1);
    let state = BackfillState::parse(&state).ok_or_else(|| Error::CorruptLedger {
        schema: ledger.schema.clone(),
        id: name.clone(),
        reason: format!("unknown backfill state {state:?}"),
    })?;
    Ok((
        name,
        Row {
            state,
            key_start: r.get(2),
            key_end: r.get(3),
            cursor: r.get(4),
            rows_done: r.get(5),
            estimated_total: r.get(6),
            batch_size: r.get(7),
            batches: r.get(8),
            last_error: r.get(9),
            started_at: r.get(10),
            updated_at: r.get(11),
            finished_at: r.get(12),
        },
    ))
}

/// The rows of these backfills (missing table: none).
pub(crate) async fn read_rows(
    client: &Client,
    ledger: &Ledger,
    names: &[String],
) -> Result<HashMap<String, Row>, Error> {
    let sql =
        ledger.sql(&format!(r#"SELECT {ROW_COLUMNS} FROM {{schema}}."backfills" WHERE name = ANY($1)"#));
    // Unnamed and typed: through a transaction pooler, a named statement
    // prepared in one round trip may be gone by the next.
    let rows = match client.query_typed(&sql, &[(&names, Type::TEXT_ARRAY)]).await {
        Ok(rows) => rows,
        Err(e) if crate::ledger::missing(&e) => return Ok(HashMap::new()),
        Err(e) => return Err(Error::Db { context: "reading the backfills", source: e }),
    };
    rows.iter().map(|r| row_of(ledger, r)).collect()
}

/// The backfills among `names` that are not done. Missing rows count as not done.
pub(crate) async fn incomplete_backfills(
    client: &Client,
    ledger: &Ledger,
    names: &[String],
) -> Result<Vec<String>, Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let rows = read_rows(client, ledger, names).await?;
    Ok(names
        .iter()
        .filter(|n| rows.get(*n).is_none_or(|r| r.state != BackfillState::Done))
        .cloned()
        .collect())
}

/// The first upgrade step whose revision depends on an unfinished backfill:
/// (its index in `steps`, the backfill). Costs no query when no step depends on one.
pub(crate) async fn first_blocked(
    client: &Client,
    ledger: &Ledger,
    graph: &Graph,
    steps: &[(usize, Direction)],
) -> Result<Option<(usize, String)>, Error> {
    let mut names: Vec<String> = steps
        .iter()
        .filter(|(_, d)| *d == Direction::Up)
        .flat_map(|&(i, _)| graph.backfill_deps[i].iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(None);
    }
    let incomplete: HashSet<String> =
        incomplete_backfills(client, ledger, &names).await?.into_iter().collect();
    for (at, &(i, d)) in steps.iter().enumerate() {
        if d != Direction::Up {
            continue;
        }
        if let Some(b) = graph.backfill_deps[i].iter().find(|b| incomplete.contains(*b)) {
            return Ok(Some((at, b.clone())));
        }
    }
    Ok(None)
}

/// The applied revisions among `ids`.
async fn applied_among(client: &Client, ledger: &Ledger, ids: &[String]) -> Result<HashSet<String>, Error> {
    let sql = ledger.sql(r#"SELECT id FROM {schema}."applied" WHERE state = 'applied' AND id = ANY($1)"#);
    match client.query_typed(&sql, &[(&ids, Type::TEXT_ARRAY)]).await {
        Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
        Err(e) if crate::ledger::missing(&e) => Ok(HashSet::new()),
        Err(e) => Err(Error::Db { context: "reading the applied revisions", source: e }),
    }
}

/// Makes sure the `backfills` table exists: upgrades bookkeeping tables of an
/// older format. `false` when there are no bookkeeping tables at all yet.
async fn ensure_table(client: &Client, ledger: &Ledger) -> Result<bool, Error> {
    match ledger.meta(client).await? {
        Meta::Missing => Ok(false),
        meta => {
            ledger.prepare(client, &meta).await?;
            Ok(true)
        }
    }
}

/// Moves a backfill between states and records the event. Returns whether it moved.
async fn transition(
    client: &Client,
    ledger: &Ledger,
    backfill: &Backfill,
    to: Option<BackfillState>,
    from: &[BackfillState],
    event: &str,
    error: Option<&str>,
) -> Result<bool, Error> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let to = to.map(BackfillState::as_str);
    // Unnamed, as every statement of an operation that may go through a pooler.
    let row = client
        .query_typed_one(
            &ledger.sql(TRANSITION),
            &[
                (&backfill.name, Type::TEXT),
                (&backfill.after, Type::TEXT),
                (&to, Type::TEXT),
                (&from, Type::TEXT_ARRAY),
                (&event, Type::TEXT),
                (&error, Type::TEXT),
            ],
        )
        .await
        .map_err(Error::db("recording a backfill's state"))?;
    Ok(row.get::<_, i64>(0) > 0)
}

// ----- the operations behind `Backfills` -----

/// The backfill operations of a migration set, with a configuration (its
/// bookkeeping schema): [`Migrator::backfills`](crate::Migrator::backfills)
/// gives them. See `docs/backfills.md`.
///
/// ```no_run
/// use pgskein::Migrator;
///
/// # async fn f(set: pgskein::MigrationSet, pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
/// set.run(&pool).await?;
/// for b in set.backfills()?.status(&pool).await? {
///     println!("{}: {} ({} rows)", b.name, b.state, b.rows_done);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Backfills<'a> {
    set: &'a crate::MigrationSet,
    config: std::borrow::Cow<'a, Config>,
}

/// Whether [`Backfills::reset`] resets a backfill that another session is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reset {
    /// Refuse, with [`Error::BackfillRunning`], while another session holds
    /// the backfill's lock (is running it). Pause it first, and reset it once
    /// that session has finished its batch.
    UnlessRunning,
    /// Reset it all the same: the session running it starts it over at its next checkpoint.
    EvenIfRunning,
}

impl<'a> Backfills<'a> {
    pub(crate) fn new(set: &'a crate::MigrationSet, config: std::borrow::Cow<'a, Config>) -> Self {
        Self { set, config }
    }

    /// Runs every eligible backfill (its revision is applied) to completion,
    /// inline, in declaration order, on one connection. A backfill that another
    /// process is running is waited for; a paused one is skipped (its outcome
    /// says so). Stops at the first backfill that fails for good.
    ///
    /// ```no_run
    /// # use pgskein::Migrator;
    /// # async fn f(set: pgskein::MigrationSet, pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
    /// set.run(&pool).await?;
    /// let report = set.backfills()?.run(&pool).await?;
    /// for b in &report.backfills {
    ///     println!("{}: {:?}, {} rows", b.name, b.outcome, b.rows);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn run<'d>(&self, db: impl Into<Db<'d>> + Send + 'd) -> Result<BackfillReport, Error> {
        run(self.set, &self.config, db.into()).await
    }

    /// Starts every eligible backfill on a background task that takes its
    /// connections from `pool`, and returns at once. Call it within a tokio runtime.
    ///
    /// ```no_run
    /// # use pgskein::Migrator;
    /// # async fn f(set: pgskein::MigrationSet, pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
    /// set.run(&pool).await?;
    /// let backfills = set.backfills()?.spawn(&pool);
    /// // ... serve; later, on shutdown or in a job:
    /// let report = backfills.wait().await?;
    /// # Ok(()) }
    /// ```
    pub fn spawn(&self, pool: &deadpool_postgres::Pool) -> BackfillHandle {
        spawn(self.set, &self.config, pool)
    }

    /// Every declared backfill with its recorded state and progress. Read-only.
    ///
    /// ```no_run
    /// # use pgskein::Migrator;
    /// # async fn f(set: pgskein::MigrationSet, pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
    /// for b in set.backfills()?.status(&pool).await? {
    ///     println!("{}: {} ({} rows, active: {})", b.name, b.state, b.rows_done, b.active);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn status<'d>(&self, db: impl Into<Db<'d>> + Send + 'd) -> Result<Vec<BackfillStatus>, Error> {
        status(self.set, &self.config, db.into()).await
    }

    /// Pauses a backfill: records `paused`, so no process runs it until it is
    /// resumed; a process running it stops after its current batch. Returns
    /// the state afterwards (a done backfill stays done).
    pub async fn pause<'d>(
        &self,
        db: impl Into<Db<'d>> + Send + 'd,
        name: &str,
    ) -> Result<BackfillState, Error> {
        pause_or_resume(self.set, &self.config, db.into(), name, Pausing::Pause).await
    }

    /// Resumes a paused backfill: the next run (or a waiting deferred task) carries on
    /// from its checkpoint. Returns the state afterwards.
    pub async fn resume<'d>(
        &self,
        db: impl Into<Db<'d>> + Send + 'd,
        name: &str,
    ) -> Result<BackfillState, Error> {
        pause_or_resume(self.set, &self.config, db.into(), name, Pausing::Resume).await
    }

    /// Resets a backfill to `pending`, so that the next run starts it again
    /// from nothing, over the key range it finds then (a done backfill whose
    /// data changed again, a failed one whose fix needs a fresh start). Its
    /// row in `backfills` is removed and a `backfill_reset` event records the
    /// state and rows it had. Returns the state it was reset from, or `None`
    /// when it was pending already (nothing is recorded then).
    ///
    /// A backfill that another session is running (it holds the backfill's
    /// lock) is refused with [`Error::BackfillRunning`] under
    /// [`Reset::UnlessRunning`]: pause it first, and reset it once that
    /// session has finished its batch. With [`Reset::EvenIfRunning`], it is
    /// reset all the same, and that session starts it over at its next
    /// checkpoint.
    ///
    /// Reverting a revision resets its backfills already.
    ///
    /// # Warning
    /// A backfill's batches run again over rows they already changed: reset
    /// only backfills whose statement can run twice.
    ///
    /// ```no_run
    /// # use pgskein::Migrator;
    /// use pgskein::backfill::Reset;
    ///
    /// # async fn f(set: pgskein::MigrationSet, pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
    /// let backfills = set.backfills()?;
    /// if let Some(was) = backfills.reset(&pool, "documents_sha256_fill", Reset::UnlessRunning).await? {
    ///     println!("reset from {was}; the next run starts it over");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn reset<'d>(
        &self,
        db: impl Into<Db<'d>> + Send + 'd,
        name: &str,
        mode: Reset,
    ) -> Result<Option<BackfillState>, Error> {
        reset(self.set, &self.config, db.into(), name, mode).await
    }
}

fn find<'s>(set: &'s crate::MigrationSet, name: &str) -> Result<&'s Backfill, Error> {
    set.backfills
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| Error::UnknownBackfill { name: name.to_owned() })
}

pub(crate) async fn run(
    set: &crate::MigrationSet,
    cfg: &Config,
    db: Db<'_>,
) -> Result<BackfillReport, Error> {
    cfg.validate()?;
    let ledger = Ledger::new(cfg.schema_name());
    let conn = db.conn().await?;
    run_inline(conn, &ledger, &set.backfills).await
}

/// An invalid configuration is reported by the handle.
pub(crate) fn spawn(
    set: &crate::MigrationSet,
    cfg: &Config,
    pool: &deadpool_postgres::Pool,
) -> BackfillHandle {
    let (backfills, invalid) = match cfg.validate() {
        Ok(()) => (set.backfills.clone(), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    engine::spawn(backfills, Ledger::new(cfg.schema_name()), invalid, pool.clone())
}

pub(crate) async fn status(
    set: &crate::MigrationSet,
    cfg: &Config,
    db: Db<'_>,
) -> Result<Vec<BackfillStatus>, Error> {
    cfg.validate()?;
    let ledger = Ledger::new(cfg.schema_name());
    let conn = db.conn().await?;
    let client = conn.client();
    let names: Vec<String> = set.backfills.iter().map(|b| b.name.clone()).collect();
    let (rows, applied) = match ledger.meta(client).await? {
        Meta::Missing => (HashMap::new(), HashSet::new()),
        meta => {
            ledger.check_format(&meta)?;
            let revisions: Vec<String> = set.backfills.iter().map(|b| b.after.clone()).collect();
            (read_rows(client, &ledger, &names).await?, applied_among(client, &ledger, &revisions).await?)
        }
    };
    let keys: Vec<i64> = names.iter().map(|n| lock::backfill_key(&ledger.schema, n)).collect();
    let active = lock::backfill_locks_held(client, &keys).await?;
    Ok(set
        .backfills
        .iter()
        .zip(active)
        .map(|(b, active)| {
            let row = rows.get(&b.name);
            let fraction = row.and_then(|r| engine::fraction(r, r.cursor.as_deref(), r.rows_done));
            BackfillStatus {
                name: b.name.clone(),
                revision: b.after.clone(),
                eligible: applied.contains(&b.after),
                state: row.map_or(BackfillState::Pending, |r| r.state),
                active,
                rows_done: row.map_or(0, |r| r.rows_done.max(0) as u64),
                estimated_total: row.and_then(|r| r.estimated_total).map(|t| t.max(0) as u64),
                fraction,
                key_range: row.and_then(|r| r.key_start.zip(r.key_end)),
                cursor: row.and_then(|r| r.cursor.clone()),
                batch_size: row.and_then(|r| r.batch_size).map(|s| s.max(0) as u64),
                batches: row.map_or(0, |r| r.batches.max(0) as u64),
                last_error: row.and_then(|r| r.last_error.clone()),
                started_at: row.and_then(|r| r.started_at),
                updated_at: row.and_then(|r| r.updated_at),
                finished_at: row.and_then(|r| r.finished_at),
            }
        })
        .collect())
}

/// Which way [`set_paused`] moves a backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pausing {
    Pause,
    Resume,
}

/// Pauses or resumes a backfill; returns its state afterwards.
pub(crate) async fn pause_or_resume(
    set: &crate::MigrationSet,
    cfg: &Config,
    db: Db<'_>,
    name: &str,
    to: Pausing,
) -> Result<BackfillState, Error> {
    cfg.validate()?;
    let backfill = find(set, name)?;
    let ledger = Ledger::new(cfg.schema_name());
    let conn = db.conn().await?;
    set_paused(conn.client(), &ledger, backfill, to).await
}

pub(crate) async fn set_paused(
    client: &Client,
    ledger: &Ledger,
    backfill: &Backfill,
    to: Pausing,
) -> Result<BackfillState, Error> {
    if !ensure_table(client, ledger).await? {
        if to == Pausing::Resume {
            return Ok(BackfillState::Pending);
        }
        // Nothing was migrated here yet, but a pause must stick for when it is.
        ledger.prepare(client, &Meta::Missing).await?;
    }
    use BackfillState::*;
    let moved = if to == Pausing::Pause {
        transition(
            client,
            ledger,
            backfill,
            Some(Paused),
            &[Pending, Running, Failed],
            "backfill_pause",
            None,
        )
        .await?
    } else {
        transition(client, ledger, backfill, None, &[Paused], "backfill_resume", None).await?
    };
    let rows = read_rows(client, ledger, std::slice::from_ref(&backfill.name)).await?;
    let state = rows.get(&backfill.name).map_or(Pending, |r| r.state);
    if moved {
        tracing::info!(backfill = %backfill.name, %state, "backfill {}", match to {
            Pausing::Pause => "paused",
            Pausing::Resume => "resumed",
        });
    }
    Ok(state)
}

/// Resets a backfill to `pending` (its row deleted, the reset logged), unless
/// another session holds its lock and `mode` is [`Reset::UnlessRunning`].
/// Returns the state it was reset from; `None` when it was pending already
/// (nothing is recorded).
pub(crate) async fn reset(
    set: &crate::MigrationSet,
    cfg: &Config,
    db: Db<'_>,
    name: &str,
    mode: Reset,
) -> Result<Option<BackfillState>, Error> {
    cfg.validate()?;
    let backfill = find(set, name)?;
    let ledger = Ledger::new(cfg.schema_name());
    let conn = db.conn().await?;
    let client = conn.client();
    if !ensure_table(client, &ledger).await? {
        return Ok(None);
    }
    // One statement looks at the lock and deletes the row, so no runner can
    // start between the two.
    let key = lock::backfill_key(&ledger.schema, &backfill.name);
    let force = mode == Reset::EvenIfRunning;
    let row = client
        .query_typed_one(
            &ledger.sql(RESET),
            &[(&backfill.name, Type::TEXT), (&key, Type::INT8), (&force, Type::BOOL)],
        )
        .await
        .map_err(Error::db("resetting a backfill"))?;
    let (reset_from, before, holder): (Option<String>, Option<String>, Option<i32>) =
        (row.get(0), row.get(1), row.get(2));
    // A state this version does not know (a row edited by hand) is what a
    // reset repairs: it is reset like any other, and reported as failed.
    let parse = |s: String| BackfillState::parse(&s).unwrap_or(BackfillState::Failed);
    if let Some(state) = reset_from.map(parse) {
        tracing::info!(backfill = %backfill.name, from = %state, forced = holder.is_some(), "backfill reset");
        return Ok(Some(state));
    }
    match (before.map(parse), holder) {
        (None | Some(BackfillState::Pending), _) => Ok(None),
        (Some(_), Some(pid)) => Err(Error::BackfillRunning { name: backfill.name.clone(), pid }),
        // The row moved between the statement's two reads; say what it is now.
        (Some(state), None) => Err(Error::CorruptLedger {
            schema: ledger.schema.clone(),
            id: backfill.name.clone(),
            reason: format!("backfill row in state {state} was not reset; try again"),
        }),
    }
}
