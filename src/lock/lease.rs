//! The migration lease: the lock of a run whose connection goes through a
//! connection pooler, where a session advisory lock would stay behind on a
//! server session the run no longer talks to. The lease is the one row of the
//! bookkeeping schema's `lease` table (its SQL functions are in
//! `ledger/functions.sql`); it is taken, renewed and given back by single
//! statements, unnamed, each its own transaction, so it never depends on
//! which server session a statement lands on.
//!
//! Invariants:
//! - A lease is live until its expiry. Once past, it is lost for good, taken
//!   over or not: renewal refuses it, since a run under the advisory lock may
//!   have started meanwhile.
//! - Every take increments the fencing token, and every ledger write proves
//!   the token in its own statement (`held(key, token)`), so a holder that
//!   stalled past its expiry can never record again.
//! - The lease and the advisory lock exclude each other: a take needs the
//!   advisory lock free (it holds it for its own short transaction), and a run
//!   under the advisory lock gives it back while a lease is live (`lock.rs`).
//! - The bookkeeping tables are created before the first take, in a
//!   transaction holding the advisory lock for its own length, taken without
//!   waiting: concurrent first starters through a pooler create them once.
//! - While held, a heartbeat renews the lease every third of its duration on
//!   a connection of its own, taken from the run's pool, so that a long
//!   statement of the run does not let it expire. Without a pool the run
//!   renews it between its statements (`keep_alive`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::{
    Acquired, ClientRef, LockGuard, LockHolder, Settled, Waiting, current_holder, discard, try_xact_lock_sql,
};
use crate::config::Config;
use crate::error::Error;
use crate::ledger::{Ledger, groups};
use crate::state::Meta;

/// The first bookkeeping format with the `lease` table.
const LEASE_FORMAT: i32 = 4;

/// Who takes the lease, as waiters report it.
struct Owner {
    host: String,
    pid: i32,
    application_name: Option<String>,
}

impl Owner {
    fn this_process(application_name: Option<&str>) -> Owner {
        Owner {
            host: host_name(),
            pid: std::process::id().min(i32::MAX as u32) as i32,
            application_name: application_name.map(str::to_owned),
        }
    }
}

/// This machine's name, for the lease's owner; `unknown` when it cannot be read.
fn host_name() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What one attempt at the lease found.
enum Take {
    Got(i64),
    /// Held: by a live lease (its holder), or by a run under the advisory lock (`None`).
    Busy(Option<LockHolder>),
}

/// Waits for the lease, polling with short transactions, for at most the
/// configured wait. Between two attempts `settled` is asked whether the lease
/// is still needed; when it says no, the connection is handed back.
pub(crate) async fn acquire<'a>(
    conn: ClientRef<'a>,
    ledger: &Ledger,
    cfg: &Config,
    settled: Option<&(dyn Settled + '_)>,
) -> Result<Acquired<'a>, Error> {
    let key = cfg.lock_key();
    let ttl = cfg.lease_duration;
    let owner = Owner::this_process(cfg.application_name.as_deref());
    let mut waiting = Waiting::new(cfg.lock_wait_timeout);
    let mut ready = false;
    loop {
        let client = conn.client();
        let mut holder = None;
        if !ready {
            ready = bootstrap(client, ledger, key).await?;
        }
        if ready {
            match take(client, ledger, key, ttl, &owner).await {
                Ok(Take::Got(token)) => {
                    let waited = waiting.waited();
                    tracing::debug!(?waited, token, "migration lease taken");
                    // No await between taking the lease and its guard: a
                    // run cancelled here still gives the lease back.
                    let held = Held::start(&conn, ledger, token, ttl);
                    return Ok(Acquired::Locked(LockGuard::leased(conn, held), waited));
                }
                Ok(Take::Busy(h)) => holder = h,
                // The tables went away while we waited (dropped by hand): create them again.
                // The bookkeeping tables went away while waiting.
                Err(e) if crate::ledger::missing(&e) => ready = false,
                Err(e) => return Err(Error::Db { context: "taking the migration lease", source: e }),
            }
        }
        if let Some(settled) = settled {
            if settled.settled(client).await? {
                let waited = waiting.waited();
                tracing::debug!(?waited, "another run did the work while we waited");
                return Ok(Acquired::NotNeeded(waited));
            }
        }
        if holder.is_none() && waiting.wants_holder() {
            holder = current_holder(client, key, ledger).await?;
        }
        waiting.after_attempt(holder).await?;
    }
}

/// Makes sure the tables with the `lease` table exist: creates or upgrades
/// older ones in a transaction that holds the advisory lock for its length.
/// `false` when another run holds that lock (it is creating them, or
/// migrating under the advisory lock): try again later.
async fn bootstrap(client: &Client, ledger: &Ledger, key: i64) -> Result<bool, Error> {
    let meta = ledger.meta(client).await?;
    ledger.check_format(&meta)?;
    let current = matches!(meta, Meta::Present { format, .. } if format >= LEASE_FORMAT);
    // Tables with the lease whose digest triggers are off are repaired under the lease, in `Session::lock`.
    let Some((script, context)) = ledger.prepare_script(&meta).filter(|_| !current) else { return Ok(true) };
    let msgs = client
        .simple_query(&format!("BEGIN; {}", try_xact_lock_sql(key)))
        .await
        .map_err(Error::db("taking the migration lock to create the bookkeeping tables"))?;
    let got = groups(msgs).get(1).and_then(|g| g.first()).and_then(|r| r.get(0)) == Some("t");
    if !got {
        client.simple_query("ROLLBACK").await.map_err(Error::db("ending a transaction"))?;
        return Ok(false);
    }
    if let Err(e) = client.simple_query(&format!("{script}; COMMIT;")).await {
        if !client.is_closed() {
            let _ = client.simple_query("ROLLBACK").await;
        }
        return Err(Error::Db { context, source: e });
    }
    if let Meta::Present { format, .. } = meta {
        tracing::info!(schema = %ledger.schema, from = format, "bookkeeping tables upgraded");
    }
    Ok(true)
}

/// One attempt: one statement, its own transaction, never waiting.
async fn take(
    client: &Client,
    ledger: &Ledger,
    key: i64,
    ttl: Duration,
    owner: &Owner,
) -> Result<Take, tokio_postgres::Error> {
    let sql = ledger.sql(
        r#"SELECT got, holder_token, holder_pid, holder_host, holder_app, holder_since
           FROM {schema}."take_lease"($1, $2, $3, $4, $5)"#,
    );
    let row = client
        .query_typed_one(
            &sql,
            &[
                (&key, Type::INT8),
                (&millis(ttl), Type::INT8),
                (&owner.host, Type::TEXT),
                (&owner.pid, Type::INT4),
                (&owner.application_name, Type::TEXT),
            ],
        )
        .await?;
    if let Some(token) = row.get::<_, Option<i64>>(0) {
        return Ok(Take::Got(token));
    }
    let holder = row.get::<_, Option<i64>>(1).map(|token| LockHolder {
        pid: row.get::<_, Option<i32>>(2).unwrap_or_default(),
        client: row.get::<_, Option<String>>(3).unwrap_or_default(),
        application_name: row.get::<_, Option<String>>(4).unwrap_or_default(),
        since: row.get::<_, Option<String>>(5).unwrap_or_default(),
        lease_token: Some(token),
    });
    Ok(Take::Busy(holder))
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A lease this run holds.
pub(crate) struct Held {
    token: i64,
    ttl: Duration,
    renew_sql: String,
    /// Gives the lease back: a literal statement, so that it can be queued
    /// without waiting when the run is cancelled.
    release_sql: String,
    /// When the lease was last renewed (sent), by the heartbeat or `keep_alive`.
    renewed: Arc<Mutex<Instant>>,
    /// Set when a renewal found the lease no longer this run's.
    lost: Arc<AtomicBool>,
    heartbeat: Option<Heartbeat>,
}

struct Heartbeat {
    /// `true`: give the lease back on the heartbeat's connection, then stop.
    stop: tokio::sync::oneshot::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Why the lease could not be kept alive.
pub(crate) enum Lost {
    /// It expired, or another run took it over.
    Gone,
    /// The renewal itself failed.
    Db(tokio_postgres::Error),
}

impl Held {
    /// The lease `token`, just taken, with a heartbeat on a second
    /// connection from the run's pool when there is one: the heartbeat task
    /// takes that connection itself, so nothing here waits.
    fn start(conn: &ClientRef<'_>, ledger: &Ledger, token: i64, ttl: Duration) -> Held {
        let mut held = Held {
            token,
            ttl,
            renew_sql: ledger.sql(r#"SELECT {schema}."renew_lease"($1, $2)"#),
            release_sql: ledger.sql(&format!(r#"SELECT {{schema}}."release_lease"({token});"#)),
            renewed: Arc::new(Mutex::new(Instant::now())),
            lost: Arc::new(AtomicBool::new(false)),
            heartbeat: None,
        };
        let Some(pool) = conn.pool() else {
            tracing::debug!(
                "no pool to take a heartbeat connection from: the lease is renewed between statements"
            );
            return held;
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let beat = Beat {
            renew_sql: held.renew_sql.clone(),
            release_sql: held.release_sql.clone(),
            token,
            ttl,
            renewed: held.renewed.clone(),
            lost: held.lost.clone(),
        };
        let task = tokio::spawn(beat.run(pool, stopped));
        held.heartbeat = Some(Heartbeat { stop, task });
        held
    }

    /// The fencing token.
    pub(crate) fn token(&self) -> i64 {
        self.token
    }

    /// Renews the lease on the run's connection when a third of its duration
    /// has passed since the last renewal (the heartbeat usually renewed it
    /// already: then this costs nothing). Call it only between transactions.
    pub(crate) async fn keep_alive(&self, client: &Client) -> Result<(), Lost> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(Lost::Gone);
        }
        if self.since_renewed() < self.ttl / 3 {
            return Ok(());
        }
        let sent = Instant::now();
        match renew(client, &self.renew_sql, self.token, self.ttl).await {
            Ok(true) => {
                *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent;
                Ok(())
            }
            Ok(false) => {
                self.lost.store(true, Ordering::Relaxed);
                Err(Lost::Gone)
            }
            Err(e) => Err(Lost::Db(e)),
        }
    }

    fn since_renewed(&self) -> Duration {
        self.renewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }

    /// Stops the heartbeat and gives the lease back on the run's connection,
    /// with `restore` (the session state the run found). If that fails, the
    /// lease expires by itself, and a pooled connection is closed.
    pub(crate) async fn release(mut self, conn: ClientRef<'_>, restore: &str) {
        if let Some(mut heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.stop.send(false);
            // A renewal stuck on a dead connection must not hold the run up:
            // once the lease is given back below, a late renewal finds nothing.
            if tokio::time::timeout(Duration::from_secs(1), &mut heartbeat.task).await.is_err() {
                heartbeat.task.abort();
            }
        }
        // The release on its own: a restore that fails (a role a revision
        // dropped) must not roll the release back with it.
        let released = conn.client().simple_query(&self.release_sql).await;
        let restored = match &released {
            Ok(_) => conn.client().simple_query(restore).await.map(drop),
            Err(_) => Ok(()),
        };
        match (released, restored) {
            (Ok(_), Ok(())) => tracing::debug!(token = self.token, "migration lease given back"),
            (Err(e), _) => {
                tracing::warn!(error = %e, "could not give the migration lease back; it expires by itself");
                discard(conn, &self.release_sql);
            }
            (Ok(_), Err(e)) => {
                tracing::warn!(error = %e, "could not restore the session after the run");
                discard(conn, "");
            }
        }
    }

    /// When the run is dropped mid-way: the heartbeat gives the lease back on
    /// its own connection; the run's connection is closed if pooled, or gets
    /// `ROLLBACK` and the release queued if borrowed.
    pub(crate) fn abandon(mut self, conn: ClientRef<'_>) {
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.stop.send(true);
        }
        discard(conn, &self.release_sql);
    }
}

/// The heartbeat task's state.
struct Beat {
    renew_sql: String,
    release_sql: String,
    token: i64,
    ttl: Duration,
    renewed: Arc<Mutex<Instant>>,
    lost: Arc<AtomicBool>,
}

impl Beat {
    async fn run(self, pool: deadpool_postgres::Pool, mut stop: tokio::sync::oneshot::Receiver<bool>) {
        // A pool of one cannot give a second connection: do not wait for it.
        let wait = if pool.status().max_size < 2 {
            Duration::ZERO
        } else {
            (self.ttl / 3).min(Duration::from_secs(1))
        };
        let conn = tokio::select! {
            give_back = &mut stop => {
                // Stopped before it had a connection. A dropped run (or its
                // dropped sender) still wants the lease back: on a connection of its own.
                if give_back.unwrap_or(true) {
                    if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(1), pool.get()).await {
                        let _ = conn.simple_query(&self.release_sql).await;
                    }
                }
                return;
            }
            got = tokio::time::timeout(wait, pool.get()) => match got {
                Ok(Ok(conn)) => conn,
                _ => {
                    tracing::warn!(
                        "no second connection in the pool for the lease's heartbeat: the lease is renewed \
                         between statements only, so a statement longer than the lease duration loses it"
                    );
                    return;
                }
            },
        };
        loop {
            if conn.is_closed() {
                tracing::warn!(
                    "the lease's heartbeat lost its connection; the lease is renewed between statements only"
                );
                return;
            }
            tokio::select! {
                give_back = &mut stop => {
                    // A dropped sender is a dropped run: give the lease back too.
                    if give_back.unwrap_or(true) {
                        let _ = conn.simple_query(&self.release_sql).await;
                    }
                    return;
                }
                () = tokio::time::sleep(self.ttl / 3) => {}
            }
            let sent = Instant::now();
            match renew(&conn, &self.renew_sql, self.token, self.ttl).await {
                Ok(true) => *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent,
                Ok(false) => {
                    self.lost.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        token = self.token,
                        "the migration lease expired or was taken over; this run can record nothing more"
                    );
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the migration lease; trying again"),
            }
        }
    }
}

/// Renews the lease `token` if it is still live; `false` when it is not.
async fn renew(client: &Client, sql: &str, token: i64, ttl: Duration) -> Result<bool, tokio_postgres::Error> {
    let row = client.query_typed_one(sql, &[(&token, Type::INT8), (&millis(ttl), Type::INT8)]).await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::holder_of_xml;

    #[test]
    fn the_live_lease_is_read_from_query_to_xml_output() {
        let xml = "<row xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <token>7</token>\n  <pid>4242</pid>\n  \
                   <host>web-1</host>\n  <application_name>billing &amp; co</application_name>\n  \
                   <since>2026-12-03 09:22:25+00</since>\n</row>\n";
        let h = holder_of_xml(xml).unwrap();
        assert_eq!(h.lease_token, Some(7));
        assert_eq!((h.pid, h.client.as_str()), (4242, "web-1"));
        assert_eq!(h.application_name, "billing & co");
        assert_eq!(h.since, "2026-12-03 09:22:25+00");
        assert_eq!(holder_of_xml(""), None);
    }

    #[test]
    fn the_host_name_is_never_empty() {
        assert!(!host_name().is_empty());
    }
}
