//! One database session for one operation: every `Migrator` method goes
//! through here. A read-only session reads the ledger without the lock. A
//! locked session takes the migration lock the lock mode asks for (the
//! advisory lock, or the lease when the connection goes through a pooler),
//! prepares the bookkeeping tables, reads the ledger and the session's
//! baseline in one round trip, and gives the lock back structurally: `close`,
//! or the guard's `Drop` when the operation is cancelled.
//!
//! Invariant (session hygiene): every revision starts from the session state
//! the run found, its *baseline* (session user, role, and the settings made
//! with `SET`): the executor restores it before each revision and before each
//! ledger write, and `close` restores it before the connection goes back to
//! its owner. What a revision changes at session level cannot leak into the
//! next revision, into pgskein's own statements, or into the caller's pool.
//! Under the lease, through a transaction pooler, each transaction may land
//! on another server session: the restore at its start still makes every
//! revision start from the baseline, but there is no session of the run's own
//! to keep between transactions (see `docs/locking.md`).

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryRow};

use crate::config::Config;
use crate::error::Error;
use crate::ledger::{Ledger, groups};
use crate::lock::lease::{self, Held};
use crate::lock::{Acquired, ClientRef, LockGuard, LockMode, Settled};
use crate::quote::{quote_ident, quote_literal};
use crate::state::{LedgerState, Meta, RowState};

/// A database to migrate: a borrowed client, or a pool to take a connection from.
///
/// Every [`Migrator`](crate::Migrator) method accepts `&tokio_postgres::Client`,
/// `&deadpool_postgres::Pool` or `&deadpool_postgres::Object`.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Db<'a> {
    /// A connected client, used as is.
    Client(&'a Client),
    /// A pool: the run takes one connection for its whole duration.
    Pool(&'a deadpool_postgres::Pool),
}

impl<'a> From<&'a Client> for Db<'a> {
    fn from(c: &'a Client) -> Self {
        Db::Client(c)
    }
}
impl<'a> From<&'a deadpool_postgres::Pool> for Db<'a> {
    fn from(p: &'a deadpool_postgres::Pool) -> Self {
        Db::Pool(p)
    }
}
impl<'a> From<&'a deadpool_postgres::Object> for Db<'a> {
    fn from(o: &'a deadpool_postgres::Object) -> Self {
        Db::Client(o)
    }
}

impl<'a> Db<'a> {
    pub(crate) async fn conn(self) -> Result<ClientRef<'a>, Error> {
        Ok(match self {
            Db::Client(c) => ClientRef::Borrowed(c),
            Db::Pool(p) => {
                ClientRef::Pooled(Box::new(p.get().await.map_err(|source| Error::Pool { source })?))
            }
        })
    }
}

/// The session state a run found, and the SQL that restores it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Baseline {
    user: String,
    role: String,
    /// `BEGIN` with the baseline's transaction characteristics, so that a
    /// revision's `SET default_transaction_...` cannot shape the next one's.
    begin: String,
    /// Settings made with `SET` (source `session`), as `pg_settings` shows them.
    settings: Vec<(String, String)>,
    /// When the baseline was read, in microseconds since the epoch.
    at_us: i64,
    /// The run holds the lease: its transactions may land on any server
    /// session of a pooler, so the SQL-level prepared statements made since
    /// the baseline are not the run's to deallocate.
    pooled: bool,
}

/// Reads the baseline: two statements, so two groups of rows.
const BASELINE_SQL: &str = "SELECT session_user, pg_catalog.current_setting('role'), \
        (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text, \
        pg_catalog.current_setting('default_transaction_isolation'), \
        pg_catalog.current_setting('default_transaction_read_only'), \
        pg_catalog.current_setting('default_transaction_deferrable'); \
    SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
        AND name NOT IN ('role', 'session_authorization', 'transaction_isolation', 'transaction_read_only', \
                         'transaction_deferrable') \
        AND name NOT LIKE 'pgskein.%';";

/// The savepoint set at the end of a transactional SQL body: releasing it
/// before the ledger write proves, on the server, that the whole body ran.
pub(crate) const BODY_RAN: &str = "\"pgskein: body ran\"";

impl Baseline {
    fn parse(groups: &[Vec<SimpleQueryRow>]) -> Baseline {
        let first = groups.first().and_then(|g| g.first());
        let field = |i| first.and_then(|r| r.get(i)).unwrap_or_default().to_owned();
        let isolation = match field(3).as_str() {
            "serializable" => "SERIALIZABLE",
            "repeatable read" => "REPEATABLE READ",
            "read uncommitted" => "READ UNCOMMITTED",
            _ => "READ COMMITTED",
        };
        let access = if field(4) == "on" { "READ ONLY" } else { "READ WRITE" };
        let deferrable = if field(5) == "on" { "DEFERRABLE" } else { "NOT DEFERRABLE" };
        Baseline {
            user: field(0),
            role: field(1),
            begin: format!("BEGIN ISOLATION LEVEL {isolation} {access} {deferrable};"),
            at_us: field(2).parse().unwrap_or_default(),
            pooled: false,
            settings: groups
                .get(1)
                .into_iter()
                .flatten()
                .map(|r| (r.get(0).unwrap_or_default().to_owned(), r.get(1).unwrap_or_default().to_owned()))
                .collect(),
        }
    }

    /// `BEGIN` with the transaction characteristics the run found.
    pub(crate) fn begin(&self) -> &str {
        if self.begin.is_empty() { "BEGIN;" } else { &self.begin }
    }

    /// Statements that bring the session back to the baseline: user and role,
    /// every setting, and, with `prepared`, the SQL-level prepared statements
    /// made since (pgskein's own are unnamed, and the caller's are older).
    /// Runs inside or outside a transaction.
    pub(crate) fn restore(&self, prepared: bool) -> String {
        let mut sql = format!("SET SESSION AUTHORIZATION {}; RESET ALL;", quote_ident(&self.user));
        if !self.settings.is_empty() {
            let sets: Vec<String> = self
                .settings
                .iter()
                .map(|(name, value)| {
                    format!("pg_catalog.set_config({}, {}, false)", quote_literal(name), quote_literal(value))
                })
                .collect();
            sql.push_str(&format!(" SELECT {};", sets.join(", ")));
        }
        if self.role != "none" {
            sql.push_str(&format!(" SET ROLE {};", quote_ident(&self.role)));
        }
        if prepared && !self.pooled {
            sql.push_str(&format!(
                " DO $pgskein$ DECLARE s text; BEGIN \
                   FOR s IN SELECT name FROM pg_catalog.pg_prepared_statements \
                            WHERE from_sql AND prepare_time >= pg_catalog.to_timestamp({} / 1000000.0) \
                   LOOP EXECUTE 'DEALLOCATE ' || pg_catalog.quote_ident(s); END LOOP; END $pgskein$;",
                self.at_us
            ));
        }
        sql
    }

    /// Statements run inside a transaction, before a ledger write: the
    /// baseline's user and role and settings under which pgskein's statements
    /// mean what they say whatever a revision set (they name every table with
    /// its schema, and bind text as UTF-8). All `LOCAL`: the session keeps
    /// what the revision set for its own later statements.
    pub(crate) fn for_record(&self) -> String {
        let role = if self.role == "none" { "NONE".to_owned() } else { quote_ident(&self.role) };
        format!(
            "SET LOCAL SESSION AUTHORIZATION {}; SET LOCAL ROLE {role}; SET LOCAL search_path = pg_catalog; \
             SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0; SET LOCAL client_encoding = 'UTF8';",
            quote_ident(&self.user)
        )
    }
}

/// A connection for one operation, with the ledger as it was read.
pub(crate) struct Session<'a> {
    guard: LockGuard<'a>,
    /// The ledger; in a locked session, its writes prove the lock.
    pub(crate) ledger: Ledger,
    pub(crate) state: LedgerState,
    /// The session state to restore (empty in a read-only session, which runs no revision).
    pub(crate) baseline: Baseline,
}

/// How opening a locked session ended.
pub(crate) enum Opened<'a> {
    /// The lock is held, after waiting this long.
    Locked(Box<Session<'a>>, Duration),
    /// Another run did the work while we waited, this long.
    NotNeeded(Duration),
}

impl<'a> Session<'a> {
    /// A read-only session: the ledger and who holds the lock, without taking it.
    pub(crate) async fn read(conn: ClientRef<'a>, cfg: &Config) -> Result<Session<'a>, Error> {
        cfg.validate()?;
        let ledger = Ledger::new(cfg.schema_name());
        let state = ledger.read(conn.client(), cfg.lock_key()).await?;
        Ok(Session { guard: LockGuard::unlocked(conn), ledger, state, baseline: Baseline::default() })
    }

    /// A locked session. While waiting, `settled` is asked whether the lock is
    /// still needed; when it says no, the connection goes back as it came.
    pub(crate) async fn lock(
        conn: ClientRef<'a>,
        cfg: &Config,
        settled: Option<&(dyn Settled + '_)>,
    ) -> Result<Opened<'a>, Error> {
        cfg.validate()?;
        let ledger = Ledger::new(cfg.schema_name());
        let acquired = match cfg.lock_mode {
            LockMode::DangerousNone => Acquired::Locked(LockGuard::unlocked(conn), Duration::ZERO),
            LockMode::Lease => lease::acquire(conn, &ledger, cfg, settled).await?,
            LockMode::Auto | LockMode::Advisory => {
                // Read without a round trip: what the first lock request checks.
                let startup_pid = crate::pooler::startup_pid(conn.client()).await;
                let app = cfg.application_name.as_deref();
                let timeout = cfg.lock_wait_timeout;
                match LockGuard::acquire(conn, &ledger, timeout, app, settled, startup_pid).await? {
                    Acquired::Pooled(conn, pooled) if cfg.lock_mode == LockMode::Auto => {
                        tracing::info!(
                            backend_pid = pooled.backend_pid,
                            startup_pid = pooled.startup_pid,
                            seen_from = %pooled.seen_from,
                            "the connection goes through a connection pooler: taking the migration lease"
                        );
                        lease::acquire(conn, &ledger, cfg, settled).await?
                    }
                    acquired => acquired,
                }
            }
        };
        let (mut guard, waited) = match acquired {
            Acquired::Locked(guard, waited) => (guard, waited),
            Acquired::NotNeeded(waited) => return Ok(Opened::NotNeeded(waited)),
            Acquired::Pooled(_, pooled) => {
                return Err(Error::PoolerDetected {
                    backend_pid: pooled.backend_pid,
                    startup_pid: pooled.startup_pid,
                    seen_from: pooled.seen_from,
                });
            }
        };
        let ledger = ledger.proving(guard.proof());
        let pooled = guard.lease().is_some();
        match load(guard.client(), &ledger).await {
            Ok((state, mut baseline)) => {
                baseline.pooled = pooled;
                guard.restore_with(baseline.restore(true));
                Ok(Opened::Locked(Box::new(Session { guard, ledger, state, baseline }), waited))
            }
            Err(e) => {
                guard.release().await;
                Err(e)
            }
        }
    }

    /// A locked session, waiting as long as the configuration allows.
    pub(crate) async fn locked(conn: ClientRef<'a>, cfg: &Config) -> Result<Session<'a>, Error> {
        match Self::lock(conn, cfg, None).await? {
            Opened::Locked(session, _) => Ok(*session),
            // Without a `settled` check, waiting only ends with the lock or an error.
            Opened::NotNeeded(waited) => Err(Error::LockTimeout { waited, holder: None }),
        }
    }

    pub(crate) fn client(&self) -> &Client {
        self.guard.client()
    }

    /// The lease, when the session holds it rather than the advisory lock.
    pub(crate) fn lease(&self) -> Option<&Held> {
        self.guard.lease()
    }

    /// Ends the session: restores the session state, releases the lock, and
    /// hands on `result`.
    pub(crate) async fn close<T>(self, result: Result<T, Error>) -> Result<T, Error> {
        self.guard.release().await;
        result
    }
}

/// Under the lock: the format checked, the tables created or upgraded, then
/// the baseline and the ledger read in one round trip. A digest that no
/// longer matches the rows (`meta` edited by hand) is recomputed from them.
async fn load(client: &Client, ledger: &Ledger) -> Result<(LedgerState, Baseline), Error> {
    let meta = ledger.meta(client).await?;
    ledger.prepare(client, &meta).await?;
    let sql = format!("{BASELINE_SQL}{}", ledger.read_sql(None));
    let msgs = client.simple_query(&sql).await.map_err(Error::db("reading the ledger"))?;
    let groups = groups(msgs);
    let baseline = Baseline::parse(&groups[..groups.len().min(2)]);
    let state = ledger.parse_read(groups.get(2..).unwrap_or_default())?;
    if let Meta::Present { digest, .. } = &state.meta {
        let mut rows = crate::graph::SetDigest::default();
        for r in state.records.iter().filter(|r| r.state == RowState::Applied) {
            rows.add(&r.id, &r.checksum);
        }
        if *digest != rows.to_string() {
            tracing::warn!(schema = %ledger.schema, "the recorded digest did not match the ledger's rows; recomputed it");
            ledger.recompute_digest(client).await?;
        }
    }
    Ok((state, baseline))
}
