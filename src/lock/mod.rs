//! The migration lock: a session-level advisory lock on the one connection a
//! run uses, or, through a connection pooler, the lease (`lease.rs`); the
//! guard that gives either back. The only module that calls advisory-lock
//! functions from Rust (the lease's SQL functions take the advisory lock for
//! the length of their own transaction, to exclude a run holding it).
//!
//! Invariants:
//! - Waiters poll between short sleeps and never block inside
//!   `pg_advisory_lock` (a blocked waiter keeps a snapshot, and the holder's
//!   `CREATE INDEX CONCURRENTLY` would wait for it forever).
//! - Nothing is taken, and no session setting changed, on a connection that
//!   goes through a pooler: the first lock request only runs on the backend
//!   the connection was given at startup (see `pooler.rs`), so a session lock
//!   is never left on a pooled server connection.
//! - A run under the advisory lock and a run under the lease exclude each
//!   other: a run that gets the advisory lock while a lease is live gives it
//!   back and waits.
//! - The lock cannot leak: the guard either gives it back, or, when it
//!   cannot, removes the connection from its pool so closing it releases the
//!   lock (a lease that is not given back expires).

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

pub(crate) use crate::config::{LockMode, key_parts, lock_key as key};
pub(crate) mod lease;

use crate::error::Error;
use crate::ledger::{Ledger, Proof, groups, holder_of, holder_of_xml, holder_sql, live_sql};
use crate::quote::quote_literal;
pub(crate) use crate::state::LockHolder;
use lease::Held;

/// The connection a run works on: borrowed from the caller, or taken from a pool.
pub(crate) enum ClientRef<'a> {
    Borrowed(&'a Client),
    Pooled(Box<deadpool_postgres::Object>),
}

impl ClientRef<'_> {
    pub(crate) fn client(&self) -> &Client {
        match self {
            ClientRef::Borrowed(c) => c,
            ClientRef::Pooled(o) => o,
        }
    }

    /// The pool the connection came from, if any.
    pub(crate) fn pool(&self) -> Option<deadpool_postgres::Pool> {
        match self {
            ClientRef::Borrowed(_) => None,
            ClientRef::Pooled(o) => deadpool_postgres::Object::pool(o),
        }
    }
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
    /// The connection goes through a pooler: nothing was taken or changed,
    /// and the connection is handed back as it came.
    Pooled(ClientRef<'a>, Pooled),
}

/// What gave a pooler away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pooled {
    /// The backend that answered.
    pub(crate) backend_pid: i32,
    /// The backend the connection was given at startup.
    pub(crate) startup_pid: i32,
    /// Where the server sees the connection come from: the pooler's address, or `local`.
    pub(crate) seen_from: String,
}

/// The lock a guard holds.
pub(crate) enum Hold {
    None,
    Advisory(i64),
    Lease(Held),
}

/// Holds the lock until released or dropped.
pub(crate) struct LockGuard<'a> {
    conn: Option<ClientRef<'a>>,
    hold: Hold,
    /// The session's application_name before the run changed it.
    restore_name: Option<String>,
    /// SQL that brings the session back to where the run found it, run before unlocking.
    restore: String,
}

/// The waiting for the lock, advisory or lease: sleeps growing from 10 ms by
/// half each time to 200 ms, an INFO line naming the holder right away and
/// every 10 s, and the configured timeout.
pub(crate) struct Waiting {
    started: Instant,
    timeout: Option<Duration>,
    delay: Duration,
    last_log: Option<Instant>,
}

impl Waiting {
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Waiting { started: Instant::now(), timeout, delay: Duration::from_millis(10), last_log: None }
    }

    pub(crate) fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    fn timed_out(&self) -> bool {
        self.timeout.is_some_and(|t| self.waited() >= t)
    }

    fn log_due(&self) -> bool {
        self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
    }

    /// Whether the next [`after_attempt`](Waiting::after_attempt) wants the
    /// holder: to log it, or to report it. Polls ask only for the lock: with
    /// many waiters, looking up the holder on every poll slows it down.
    pub(crate) fn wants_holder(&self) -> bool {
        self.timed_out() || self.log_due()
    }

    /// After an attempt that did not get the lock: the timeout error when the
    /// time is up, else a log line when one is due, and the sleep.
    pub(crate) async fn after_attempt(&mut self, holder: Option<LockHolder>) -> Result<(), Error> {
        let waited = self.waited();
        if self.timed_out() {
            return Err(Error::LockTimeout { waited, holder });
        }
        if self.log_due() {
            match &holder {
                Some(h) => tracing::info!(holder = %h, ?waited, "waiting for the migration lock"),
                None => tracing::info!(?waited, "waiting for the migration lock"),
            }
            self.last_log = Some(Instant::now());
        }
        let mut sleep = self.delay;
        if let Some(t) = self.timeout {
            sleep = sleep.min(t.saturating_sub(waited)).max(Duration::from_millis(1));
        }
        tokio::time::sleep(sleep).await;
        self.delay = (self.delay * 3 / 2).min(Duration::from_millis(200));
        Ok(())
    }
}

impl<'a> LockGuard<'a> {
    pub(crate) fn client(&self) -> &Client {
        self.conn.as_ref().expect("present until release").client()
    }

    /// A guard that holds no lock, for [`LockMode::DangerousNone`].
    pub(crate) fn unlocked(conn: ClientRef<'a>) -> Self {
        Self { conn: Some(conn), hold: Hold::None, restore_name: None, restore: String::new() }
    }

    /// A guard holding the lease.
    pub(crate) fn leased(conn: ClientRef<'a>, held: Held) -> Self {
        Self { conn: Some(conn), hold: Hold::Lease(held), restore_name: None, restore: String::new() }
    }

    /// What the run's ledger writes prove.
    pub(crate) fn proof(&self) -> Proof {
        match &self.hold {
            Hold::None => Proof::default(),
            Hold::Advisory(key) => Proof { key: Some(*key), token: None },
            Hold::Lease(held) => Proof { key: None, token: Some(held.token()) },
        }
    }

    /// The lease, when that is what the guard holds.
    pub(crate) fn lease(&self) -> Option<&Held> {
        match &self.hold {
            Hold::Lease(held) => Some(held),
            _ => None,
        }
    }

    /// Waits for the advisory lock, polling, for at most `timeout`. Between
    /// two polls `settled` is asked whether the lock is still needed (another
    /// run may have done the work meanwhile); when it says no, waiting stops
    /// and the connection is handed back as it came. With `startup_pid` (see
    /// `pooler.rs`), the first request changes nothing unless that backend
    /// answers it: another one means a pooler, reported as
    /// [`Acquired::Pooled`].
    pub(crate) async fn acquire(
        conn: ClientRef<'a>,
        ledger: &Ledger,
        timeout: Option<Duration>,
        application_name: Option<&str>,
        settled: Option<&(dyn Settled + '_)>,
        startup_pid: Option<i32>,
    ) -> Result<Acquired<'a>, Error> {
        let key = key(&ledger.schema);
        // The guard exists before the first lock request is written: if this
        // future is dropped while a request is in flight, the lock it may have
        // taken is still released.
        let mut guard =
            Self { conn: Some(conn), hold: Hold::Advisory(key), restore_name: None, restore: String::new() };
        let (first, got_at) = first_request(key, startup_pid, application_name);
        let try_lock = format!("SELECT pg_catalog.pg_try_advisory_lock({key});");
        let mut waiting = Waiting::new(timeout);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sql = if attempt == 1 { &first } else { &try_lock };
            let msgs =
                guard.client().simple_query(sql).await.map_err(Error::db("taking the migration lock"))?;
            let groups = groups(msgs);
            let row = groups.first().and_then(|g| g.first());
            let got = if attempt == 1 {
                let backend_pid = row.and_then(|r| r.get(0)).and_then(|p| p.parse().ok()).unwrap_or_default();
                if let Some(startup_pid) = startup_pid.filter(|&p| p != backend_pid) {
                    let seen_from = row.and_then(|r| r.get(1)).unwrap_or_default().to_owned();
                    // Nothing ran but the lookup: the connection goes back as it came.
                    guard.hold = Hold::None;
                    let conn = guard.conn.take().expect("present until release");
                    return Ok(Acquired::Pooled(conn, Pooled { backend_pid, startup_pid, seen_from }));
                }
                guard.restore_name = application_name.and(row.and_then(|r| r.get(2))).map(str::to_owned);
                row.and_then(|r| r.get(got_at))
            } else {
                row.and_then(|r| r.get(0))
            };
            let mut holder = None;
            if got == Some("t") {
                match guard.confirm(key, ledger).await {
                    Ok(None) => {
                        let waited = waiting.waited();
                        tracing::debug!(?waited, "migration lock acquired");
                        return Ok(Acquired::Locked(guard, waited));
                    }
                    // A run through a pooler holds the lease: give the lock back and wait for it.
                    Ok(Some(lease_holder)) => {
                        guard.unlock(key).await?;
                        holder = Some(lease_holder);
                    }
                    Err(e) => {
                        guard.release().await;
                        return Err(e);
                    }
                }
            }
            let done = match settled {
                Some(settled) => settled.settled(guard.client()).await?,
                None => false,
            };
            if done {
                let waited = waiting.waited();
                tracing::debug!(?waited, "another run did the work while we waited");
                // The connection goes back to its owner (or its pool) as it came.
                drop(guard.hand_back().await);
                return Ok(Acquired::NotNeeded(waited));
            }
            if holder.is_none() && waiting.wants_holder() {
                holder = current_holder(guard.client(), key, ledger).await?;
            }
            if let Err(e) = waiting.after_attempt(holder).await {
                // We never got the lock: undo the session settings and hand the connection back.
                drop(guard.hand_back().await);
                return Err(e);
            }
        }
    }

    /// Sets the SQL that brings the session back to where the run found it,
    /// sent when the lock is released (or the guard dropped).
    pub(crate) fn restore_with(&mut self, sql: String) {
        self.restore = sql;
    }

    /// Gives the connection back without the lock, with the session settings undone.
    async fn hand_back(mut self) -> ClientRef<'a> {
        self.hold = Hold::None;
        let _ = self.client().simple_query(&reset_session(self.restore_name.as_deref())).await;
        self.conn.take().expect("present until release")
    }

    /// A separate round trip after the lock was granted: `pg_locks` must show
    /// it held by this backend (a proxy that hands each transaction to another
    /// server session, and was not recognised at the first request, is caught
    /// here, not mid-run), and no live lease may be held (a run through a
    /// pooler is migrating: its holder is returned).
    async fn confirm(&self, key: i64, ledger: &Ledger) -> Result<Option<LockHolder>, Error> {
        let (hi, lo) = key_parts(key);
        let sql = format!(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid = pg_catalog.pg_backend_pid() AND classid = {hi} AND objid = {lo} AND objsubid = 1), ({});",
            live_sql(ledger)
        );
        let msgs =
            self.client().simple_query(&sql).await.map_err(Error::db("checking the migration lock"))?;
        let groups = groups(msgs);
        let row = groups.first().and_then(|g| g.first());
        if row.and_then(|r| r.get(0)) != Some("1") {
            return Err(Error::LockNotHeld);
        }
        Ok(row.and_then(|r| r.get(1)).and_then(holder_of_xml))
    }

    /// Gives the advisory lock back, keeping the session settings, to go on waiting.
    async fn unlock(&self, key: i64) -> Result<(), Error> {
        self.client()
            .simple_query(&format!("SELECT pg_advisory_unlock({key});"))
            .await
            .map_err(Error::db("giving the migration lock back to wait for the lease"))?;
        Ok(())
    }

    /// Gives the lock back. If that fails, a pooled connection is taken out
    /// of its pool and closed, which releases an advisory lock on the server
    /// (a lease not given back expires).
    pub(crate) async fn release(mut self) {
        let Some(conn) = self.conn.take() else { return };
        match std::mem::replace(&mut self.hold, Hold::None) {
            Hold::None => {}
            Hold::Advisory(key) => {
                let sql = release_sql(key, &self.restore, self.restore_name.as_deref());
                match conn.client().simple_query(&sql).await {
                    Ok(_) => tracing::debug!("migration lock released"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not release the migration lock; closing the connection instead");
                        discard(conn, &sql);
                    }
                }
            }
            Hold::Lease(held) => held.release(conn, &self.restore).await,
        }
    }
}

/// The holder of the lock other than this session: a session holding the
/// advisory lock `key` in this database, else the live lease.
pub(crate) async fn current_holder(
    client: &Client,
    key: i64,
    ledger: &Ledger,
) -> Result<Option<LockHolder>, Error> {
    let sql = format!("{}; {};", holder_sql(key), live_sql(ledger));
    let msgs = client.simple_query(&sql).await.map_err(Error::db("looking up the lock holder"))?;
    let groups = groups(msgs);
    let session = groups.first().and_then(|g| g.first()).map(holder_of);
    Ok(session
        .or_else(|| groups.get(1).and_then(|g| g.first()).and_then(|r| r.get(0)).and_then(holder_of_xml)))
}

/// The statement that takes the advisory lock `key` for the rest of the
/// current transaction if it is free, answering true or false.
pub(crate) fn try_xact_lock_sql(key: i64) -> String {
    format!("SELECT pg_catalog.pg_try_advisory_xact_lock({key});")
}

/// Unlocks first (an advisory unlock is not undone by a failure after it),
/// then restores the session the run found and undoes `acquire`'s settings.
pub(crate) fn release_sql(key: i64, restore: &str, restore_name: Option<&str>) -> String {
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

/// A connection whose lock could not be given back in order: a pooled one is
/// taken out of its pool and closed; a borrowed one, which pgskein cannot
/// close, gets `ROLLBACK` (a cancelled step may have left a transaction open)
/// and `release` queued without waiting: the request is written when first
/// polled, and the connection task sends it whether or not anyone reads the answer.
pub(crate) fn discard(conn: ClientRef<'_>, release: &str) {
    match conn {
        ClientRef::Pooled(obj) => drop(deadpool_postgres::Object::take(*obj)),
        ClientRef::Borrowed(client) => {
            let sql = format!("ROLLBACK; {release}");
            let fut = client.simple_query(&sql);
            let mut fut = pin!(fut);
            let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Reached without `release` only when the run was cancelled or panicked.
        let Some(conn) = self.conn.take() else { return };
        match std::mem::replace(&mut self.hold, Hold::None) {
            Hold::None => {}
            Hold::Advisory(key) => {
                discard(conn, &release_sql(key, &self.restore, self.restore_name.as_deref()))
            }
            Hold::Lease(held) => held.abandon(conn),
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

/// Takes a backfill's lock if it is free; never waits. Like the migration
/// lock's first request, it runs only on the backend the connection was
/// given at startup: through a pooler nothing is taken, and the pooler is
/// reported (`Err` with where the server sees the connection come from).
pub(crate) async fn try_backfill_lock(client: &Client, key: i64) -> Result<Result<bool, String>, Error> {
    let startup_pid = crate::pooler::startup_pid(client).await;
    let here =
        startup_pid.map_or_else(|| "true".to_owned(), |p| format!("pg_catalog.pg_backend_pid() = {p}"));
    let sql = format!(
        "SELECT pg_catalog.pg_backend_pid(), coalesce(pg_catalog.host(pg_catalog.inet_client_addr()), 'local'), \
                CASE WHEN {here} THEN pg_catalog.pg_try_advisory_lock({key}) END"
    );
    let msgs = client.simple_query(&sql).await.map_err(Error::db("taking a backfill lock"))?;
    let row = groups(msgs).into_iter().next().and_then(|g| g.into_iter().next());
    let field = |i| row.as_ref().and_then(|r| r.get(i)).map(str::to_owned);
    let backend_pid = field(0).and_then(|p| p.parse().ok());
    if startup_pid.is_some() && backend_pid != startup_pid {
        return Ok(Err(field(1).unwrap_or_default()));
    }
    Ok(Ok(field(2).as_deref() == Some("t")))
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
        .query_typed(
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

/// The first lock request, one statement: who answers, then, only if that is
/// the backend named at startup, the session settings and the lock. CASE
/// evaluates a volatile branch only when its condition holds: on any other
/// backend nothing is set or taken. Returns the statement and the column of
/// the lock's answer.
fn first_request(key: i64, startup_pid: Option<i32>, application_name: Option<&str>) -> (String, usize) {
    let here =
        startup_pid.map_or_else(|| "true".to_owned(), |p| format!("pg_catalog.pg_backend_pid() = {p}"));
    let only_here = |expr: &str| format!("CASE WHEN {here} THEN {expr} END");
    let mut columns = vec![
        "pg_catalog.pg_backend_pid()".to_owned(),
        "coalesce(pg_catalog.host(pg_catalog.inet_client_addr()), 'local')".to_owned(),
        only_here("pg_catalog.current_setting('application_name')"),
        // Server-side keepalives: if this process vanishes without closing its
        // socket, the server notices within about a minute and the lock dies with the session.
        only_here("pg_catalog.set_config('tcp_keepalives_idle', '30', false)"),
        only_here("pg_catalog.set_config('tcp_keepalives_interval', '10', false)"),
        only_here("pg_catalog.set_config('tcp_keepalives_count', '3', false)"),
    ];
    if let Some(name) = application_name {
        columns.push(only_here(&format!(
            "pg_catalog.set_config('application_name', {}, false)",
            quote_literal(name)
        )));
    }
    columns.push(only_here(&format!("pg_catalog.pg_try_advisory_lock({key})")));
    (format!("SELECT {};", columns.join(", ")), columns.len() - 1)
}
