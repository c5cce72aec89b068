//! The migration lock: a session-level advisory lock on the one connection a
//! run uses. The only module that calls advisory-lock functions.
//!
//! Invariants: waiters poll `pg_try_advisory_lock` between short sleeps and
//! never block inside `pg_advisory_lock` (a blocked waiter keeps a snapshot,
//! and the holder's `CREATE INDEX CONCURRENTLY` would wait for it forever);
//! the lock cannot leak, because the guard either unlocks, or, when it cannot,
//! removes the connection from its pool so closing it releases the lock.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::error::Error;
use crate::quote::quote_literal;
pub use crate::state::LockHolder;

/// The connection a run works on: borrowed from the caller, or taken from a pool.
pub(crate) enum Conn<'a> {
    Borrowed(&'a Client),
    Pooled(Box<deadpool_postgres::Object>),
}

impl Conn<'_> {
    pub(crate) fn client(&self) -> &Client {
        match self {
            Conn::Borrowed(c) => c,
            Conn::Pooled(o) => o,
        }
    }
}

/// The 64-bit advisory-lock key of a bookkeeping schema.
pub(crate) fn key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("pgskein:{schema}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// How a run takes the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LockMode {
    /// A session advisory lock (the default).
    #[default]
    Advisory,
    /// No lock: for deployments with exactly one starter.
    ///
    /// # Warning
    /// Two concurrent runs without a lock can apply a revision twice or
    /// interleave; use this only when nothing else can run migrations.
    DangerousNone,
}

/// Asked between two polls for the lock whether it is still needed.
pub(crate) trait Settled: Sync {
    /// True when the work the lock was wanted for is already done.
    fn settled<'c>(
        &'c self,
        client: &'c Client,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Error>> + Send + 'c>>;
}

/// How waiting for the lock ended.
pub(crate) enum Acquired<'a> {
    /// The lock is held, after waiting this long.
    Locked(LockGuard<'a>, Duration),
    /// The lock was no longer needed, after waiting this long.
    NotNeeded(Duration),
}

/// Holds the lock until released or dropped.
pub(crate) struct LockGuard<'a> {
    conn: Option<Conn<'a>>,
    key: Option<i64>,
    /// The session's application_name before the run changed it.
    restore_name: Option<String>,
    /// SQL that brings the session back to where the run found it, run before unlocking.
    restore: String,
}

impl<'a> LockGuard<'a> {
    pub(crate) fn client(&self) -> &Client {
        self.conn.as_ref().expect("present until release").client()
    }

    /// A guard that holds no lock, for [`LockMode::DangerousNone`].
    pub(crate) fn unlocked(conn: Conn<'a>) -> Self {
        Self { conn: Some(conn), key: None, restore_name: None, restore: String::new() }
    }

    /// Waits for the lock, polling, for at most `timeout`. Between two polls
    /// `settled` is asked whether the lock is still needed (another run may
    /// have done the work meanwhile); when it says no, waiting stops and the
    /// connection is handed back as it came.
    pub(crate) async fn acquire(
        conn: Conn<'a>,
        schema: &str,
        timeout: Option<Duration>,
        application_name: Option<&str>,
        settled: Option<&(dyn Settled + '_)>,
    ) -> Result<Acquired<'a>, Error> {
        let key = key(schema);
        // The guard exists before the first lock request is written: if this
        // future is dropped while a request is in flight, the lock it may have
        // taken is still released.
        let mut guard = Self { conn: Some(conn), key: Some(key), restore_name: None, restore: String::new() };
        let started = Instant::now();
        // Server-side keepalives: if this process vanishes without closing its
        // socket, the server notices within about a minute and the lock dies with the session.
        let mut setup = String::from(
            "SELECT current_setting('application_name'), \
             set_config('tcp_keepalives_idle', '30', false), \
             set_config('tcp_keepalives_interval', '10', false), \
             set_config('tcp_keepalives_count', '3', false)",
        );
        if let Some(name) = application_name {
            setup.push_str(&format!(", set_config('application_name', {}, false)", quote_literal(name)));
        }
        setup.push(';');
        // Polls ask only for the lock: with many waiters, a join of pg_locks
        // and pg_stat_activity on every poll slows the holder they wait for.
        // Who holds it is looked up when it is logged or reported; advisory
        // locks belong to a database, so only this database's holders count.
        let try_lock = format!("SELECT pg_try_advisory_lock({key});");
        let who = holder_sql(key);
        let mut first = true;
        let mut delay = Duration::from_millis(10);
        let mut last_log: Option<Instant> = None;
        loop {
            let sql = if first { format!("{setup}{try_lock}") } else { try_lock.clone() };
            let skip = usize::from(std::mem::replace(&mut first, false));
            let msgs =
                guard.client().simple_query(&sql).await.map_err(Error::db("taking the migration lock"))?;
            let mut rows = msgs.iter().filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            });
            if let Some(r) = rows.by_ref().take(skip).last() {
                guard.restore_name = application_name.and(r.get(0)).map(str::to_owned);
            }
            let got = rows.next().and_then(|r| r.get(0)) == Some("t");
            if got {
                guard.confirm(key).await?;
                let waited = started.elapsed();
                tracing::debug!(?waited, "migration lock acquired");
                return Ok(Acquired::Locked(guard, waited));
            }
            let done = match settled {
                Some(settled) => settled.settled(guard.client()).await?,
                None => false,
            };
            if done {
                let waited = started.elapsed();
                tracing::debug!(?waited, "another run did the work while we waited");
                // The connection goes back to its owner (or its pool) as it came.
                drop(guard.hand_back().await);
                return Ok(Acquired::NotNeeded(waited));
            }
            let waited = started.elapsed();
            let timed_out = timeout.is_some_and(|t| waited >= t);
            let log = last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            let holder = if timed_out || log { guard.holder(&who).await? } else { None };
            if timed_out {
                // We never got the lock: undo the session settings and hand the connection back.
                drop(guard.hand_back().await);
                return Err(Error::LockTimeout { waited, holder });
            }
            if log {
                match &holder {
                    Some(h) => {
                        tracing::info!(holder = %h, ?waited, "waiting for the migration lock")
                    }
                    None => tracing::info!(?waited, "waiting for the migration lock"),
                }
                last_log = Some(Instant::now());
            }
            let mut sleep = delay;
            if let Some(t) = timeout {
                sleep = sleep.min(t.saturating_sub(waited)).max(Duration::from_millis(1));
            }
            tokio::time::sleep(sleep).await;
            delay = (delay * 3 / 2).min(Duration::from_millis(200));
        }
    }

    /// The session holding the lock, if any.
    async fn holder(&self, who: &str) -> Result<Option<LockHolder>, Error> {
        let msgs = self.client().simple_query(who).await.map_err(Error::db("looking up the lock holder"))?;
        Ok(msgs.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(holder_of(r)),
            _ => None,
        }))
    }

    /// Sets the SQL that brings the session back to where the run found it,
    /// sent when the lock is released (or the guard dropped).
    pub(crate) fn restore_with(&mut self, sql: String) {
        self.restore = sql;
    }

    /// Gives the connection back without the lock, with the session settings undone.
    async fn hand_back(mut self) -> Conn<'a> {
        self.key = None;
        let _ = self.client().simple_query(&reset_session(self.restore_name.as_deref())).await;
        self.conn.take().expect("present until release")
    }

    /// A separate round trip, so a transaction-pooling proxy that hands each
    /// transaction to another server session is caught here, not mid-run.
    async fn confirm(&self, key: i64) -> Result<(), Error> {
        let (hi, lo) = key_parts(key);
        let sql = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid = pg_backend_pid() AND classid = {hi} AND objid = {lo} AND objsubid = 1"
        );
        let msgs =
            self.client().simple_query(&sql).await.map_err(Error::db("checking the migration lock"))?;
        let held = msgs.iter().any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("1")));
        if held { Ok(()) } else { Err(Error::LockNotHeld) }
    }

    /// Unlocks. If that fails, a pooled connection is taken out of its pool and
    /// closed, which releases the lock on the server.
    pub(crate) async fn release(mut self) {
        let Some(conn) = self.conn.take() else { return };
        let Some(key) = self.key else { return };
        let sql = release_sql(key, &self.restore, self.restore_name.as_deref());
        match conn.client().simple_query(&sql).await {
            Ok(_) => tracing::debug!("migration lock released"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the migration lock; closing the connection instead");
                discard(conn, key, &self.restore, self.restore_name.as_deref());
            }
        }
    }
}

/// Unlocks first (an advisory unlock is not undone by a failure after it),
/// then restores the session the run found and undoes `acquire`'s settings.
fn release_sql(key: i64, restore: &str, restore_name: Option<&str>) -> String {
    let mut sql = format!("SELECT pg_advisory_unlock({key});");
    if !restore.is_empty() {
        sql.push_str(restore);
        sql.push(';');
    }
    sql.push_str(&reset_session(restore_name));
    sql
}

/// Undoes the session settings `acquire` made.
fn reset_session(restore_name: Option<&str>) -> String {
    let mut sql =
        String::from("RESET tcp_keepalives_idle; RESET tcp_keepalives_interval; RESET tcp_keepalives_count;");
    if let Some(name) = restore_name {
        sql.push_str(&format!(" SELECT set_config('application_name', {}, false);", quote_literal(name)));
    }
    sql
}

pub(crate) fn discard(conn: Conn<'_>, key: i64, restore: &str, restore_name: Option<&str>) {
    match conn {
        Conn::Pooled(obj) => drop(deadpool_postgres::Object::take(*obj)),
        Conn::Borrowed(client) => {
            // We cannot close a borrowed client. Queue the unlock without waiting:
            // the request is written when first polled, and the connection task
            // sends it whether or not anyone reads the answer. ROLLBACK first, in
            // case a cancelled step left a transaction open, and undo the
            // session settings the run made.
            let sql = format!("ROLLBACK; {}", release_sql(key, restore, restore_name));
            let fut = client.simple_query(&sql);
            let mut fut = pin!(fut);
            let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Reached without `release` only when the run was cancelled or panicked.
        if let (Some(conn), Some(key)) = (self.conn.take(), self.key) {
            discard(conn, key, &self.restore, self.restore_name.as_deref());
        }
    }
}

// ----- backfill locks -----
// Each backfill has a session-level advisory lock of its own, taken with
// `pg_try_advisory_lock` on the connection that runs it, so two processes never
// run the same backfill at once. Like the migration lock it dies with the
// session; a runner that is dropped mid-batch gives its connection to `discard`.

/// The advisory-lock key of one backfill of a bookkeeping schema.
pub(crate) fn backfill_key(schema: &str, name: &str) -> i64 {
    // A schema name cannot contain NUL (`Config` refuses it), so the text is unambiguous.
    key(&format!("{schema}\0backfill\0{name}"))
}

fn key_parts(key: i64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// The session, other than this one, holding the advisory lock `key` in this
/// database; [`holder_of`] reads its row.
pub(crate) fn holder_sql(key: i64) -> String {
    let (hi, lo) = key_parts(key);
    format!(
        "SELECT a.pid::text, coalesce(a.application_name, ''), coalesce(a.backend_start::text, ''), \
                coalesce(host(a.client_addr), 'local') \
         FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {hi} AND l.objid = {lo} \
           AND l.objsubid = 1 AND l.pid <> pg_catalog.pg_backend_pid() \
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"
    )
}

/// A row of [`holder_sql`].
pub(crate) fn holder_of(r: &tokio_postgres::SimpleQueryRow) -> LockHolder {
    LockHolder {
        pid: r.get(0).and_then(|p| p.parse().ok()).unwrap_or_default(),
        application_name: r.get(1).unwrap_or_default().to_owned(),
        since: r.get(2).unwrap_or_default().to_owned(),
        client: r.get(3).unwrap_or_default().to_owned(),
    }
}

/// Takes a backfill's lock if it is free; never waits.
pub(crate) async fn try_backfill_lock(client: &Client, key: i64) -> Result<bool, Error> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(Error::db("taking a backfill lock"))?;
    Ok(row.get(0))
}

/// Releases a backfill's lock taken on this session.
pub(crate) async fn backfill_unlock(client: &Client, key: i64) -> Result<(), Error> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .map_err(Error::db("releasing a backfill lock"))?;
    Ok(())
}

/// The session holding a backfill's lock, if another one does.
pub(crate) async fn backfill_lock_holder(client: &Client, key: i64) -> Result<Option<LockHolder>, Error> {
    let msgs = client
        .simple_query(&holder_sql(key))
        .await
        .map_err(Error::db("looking for a backfill's lock holder"))?;
    Ok(msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(holder_of(r)),
        _ => None,
    }))
}

/// For each key, whether some session of this database holds it.
pub(crate) async fn backfill_locks_held(client: &Client, keys: &[i64]) -> Result<Vec<bool>, Error> {
    let rows = client
        .query(
            "SELECT classid::bigint, objid::bigint FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .map_err(Error::db("reading the backfill locks"))?;
    let held: std::collections::HashSet<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(keys
        .iter()
        .map(|&k| {
            let (hi, lo) = key_parts(k);
            held.contains(&(i64::from(hi), i64::from(lo)))
        })
        .collect())
}
