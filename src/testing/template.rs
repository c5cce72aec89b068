//! A fresh database at head of a migrator for every test: a template database
//! is migrated once per migration set and server, then each test gets
//! `CREATE DATABASE ... TEMPLATE` of it.
//!
//! Invariants: a template exists under its final name only once complete
//! (it is built under a temporary name and renamed), and then it is marked
//! `datistemplate` and refuses connections, so a clone never races a session
//! connected to it. Its name is derived from the set's fingerprint, the
//! bookkeeping schema and this crate's version, so it is reused by every test
//! binary and every run while these stay the same. Builders of one template
//! take an advisory lock (through `lock.rs`) on the server's maintenance
//! database, so concurrent test processes build it once.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, Config};

use crate::ledger::Ledger;
use crate::lock::{Acquired, ClientRef, LockGuard};
use crate::migrator::Migrator;
use crate::quote::{quote_ident, quote_literal};
use crate::source::MigrationSet;

use super::error::SetupError;
use super::ready::ReadyPool;
use super::server::{TestDatabase, TestServer, execute_once, unique_name};

/// Older templates of the same migration history kept beside the newest, so
/// that two checkouts testing different versions of a set against one server
/// do not keep rebuilding each other's template.
const KEEP_PREVIOUS: i64 = 2;

/// How long to wait for another process building the same template.
const BUILD_LOCK_WAIT: Duration = Duration::from_secs(600);

/// The prefix of the databases cloned for a test on demand.
const CLONE_PREFIX: &str = "pgskein_test";
/// The prefix of the databases cloned ahead by [`Template::prepare_ahead`].
const READY_PREFIX: &str = "pgskein_ready";

/// SQLSTATE `invalid_catalog_name`: the template was dropped under us.
const NO_SUCH_DATABASE: &str = "3D000";

/// A template database at head of one migrator, on one server: the source of
/// [`MigratedDatabase`]s.
///
/// [`Template::shared`] gives the template of a migrator on the shared test
/// server, built on first use and kept for the rest of the process;
/// [`MigratedDatabase::new`] uses it. Cloning a `Template` is cheap.
///
/// ```no_run
/// use include_dir::{include_dir, Dir};
/// use pgskein::MigrationSet;
/// use pgskein::testing::Template;
///
/// static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let set = MigrationSet::from_embedded(&MIGRATIONS)?;
/// let template = Template::shared(&set).await?;
/// // Keep two databases ready, so that later tests do not wait for a clone.
/// template.prepare_ahead(2);
/// let db = template.database().await?;
/// let client = db.connect().await?;
/// client.batch_execute("INSERT INTO folders (name) VALUES ('inbox')").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Template {
    inner: Arc<TemplateInner>,
}

struct TemplateInner {
    server: TestServer,
    name: String,
    /// What it was built from, to build it again if it is dropped under us.
    set: MigrationSet,
    config: crate::Config,
    /// ` STRATEGY FILE_COPY` on servers that have the option, else empty.
    strategy: &'static str,
    ready: OnceLock<Arc<ReadyPool>>,
}

impl Drop for TemplateInner {
    fn drop(&mut self) {
        if let Some(pool) = self.ready.get() {
            pool.close();
        }
    }
}

/// The templates of this process on the shared server, by name.
type Cache = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Template>>>>;
static SHARED: OnceLock<Cache> = OnceLock::new();

impl Template {
    /// The template of `migrator` on [`TestServer::shared`], built (or found
    /// built by an earlier run or another test process) on first use and
    /// kept for the rest of the process. Concurrent callers wait for the
    /// same build.
    pub async fn shared<M: Migrator>(migrator: &M) -> Result<Template, SetupError> {
        let server = TestServer::shared()?;
        let name = template_name(migrator).map_err(load_error)?;
        let cell = {
            let mut cache = SHARED.get_or_init(Cache::default).lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(cache.entry(name).or_default())
        };
        cell.get_or_try_init(|| Template::on(server, migrator)).await.cloned()
    }

    /// The template of `migrator` on `server`, building it unless it exists.
    /// Unlike [`Template::shared`] this looks at the server on every call.
    pub async fn on<M: Migrator>(server: &TestServer, migrator: &M) -> Result<Template, SetupError> {
        let name = template_name(migrator).map_err(load_error)?;
        let version = ensure_built(server, migrator, &name).await?;
        Ok(Template {
            inner: Arc::new(TemplateInner {
                server: server.handle(),
                name,
                set: migrator.migrations().map_err(load_error)?.clone(),
                config: migrator.config().into_owned(),
                strategy: if version >= 150000 { " STRATEGY FILE_COPY" } else { "" },
                ready: OnceLock::new(),
            }),
        })
    }

    /// The template database's name: `pgskein_t_<history>_<set>`, where
    /// `<history>` identifies the migration history (its root revisions and
    /// bookkeeping schema) and `<set>` this version of it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A new database at head, cloned from the template (or taken from the
    /// databases prepared ahead, if any are ready).
    ///
    /// If the template was dropped meanwhile (by a newer version of the set
    /// tidying up old templates), it is built again.
    pub async fn database(&self) -> Result<MigratedDatabase, SetupError> {
        if let Some(name) = self.inner.ready.get().and_then(|pool| pool.take()) {
            return Ok(self.adopt(name));
        }
        let name = unique_name(CLONE_PREFIX);
        let sql = clone_sql(&name, &self.inner.name, self.inner.strategy);
        let admin = self.inner.server.admin_config();
        match execute_once(&admin, &sql).await {
            Ok(()) => Ok(self.adopt(name)),
            Err(e) if e.code().map(|c| c.code()) == Some(NO_SUCH_DATABASE) => {
                tracing::debug!(template = %self.inner.name, "template vanished; building it again");
                self.rebuild().await?;
                execute_once(&admin, &sql).await.map_err(SetupError::db("create database", &name))?;
                Ok(self.adopt(name))
            }
            Err(e) => Err(SetupError::db("create database", &name)(e)),
        }
    }

    /// Keeps `count` databases cloned ahead, in a background thread of its
    /// own, so that [`database`](Template::database) hands one out at once
    /// instead of waiting for a clone (some 40 ms for a 100-revision set,
    /// more on a disk that is slow to create files).
    /// Calling it again changes the count; 0 stops preparing.
    ///
    /// Pays off when many tests run in one process. The databases still
    /// waiting at exit are dropped then (a process killed with `SIGKILL`
    /// leaves them behind on a `DATABASE_URL` server, named `pgskein_ready_*`).
    pub fn prepare_ahead(&self, count: usize) {
        let pool = self.inner.ready.get_or_init(|| {
            ReadyPool::start(
                self.inner.server.admin_config(),
                READY_PREFIX,
                self.inner.name.clone(),
                self.inner.strategy,
            )
        });
        pool.set_target(count);
    }

    /// How many databases prepared ahead are waiting to be handed out.
    pub fn ready(&self) -> usize {
        self.inner.ready.get().map_or(0, |pool| pool.ready())
    }

    fn adopt(&self, name: String) -> MigratedDatabase {
        tracing::debug!(database = %name, template = %self.inner.name, "handed out a migrated test database");
        MigratedDatabase {
            db: Some(self.inner.server.adopt(name)),
            template: self.inner.name.clone(),
            throwaway: self.inner.server.is_throwaway(),
        }
    }

    async fn rebuild(&self) -> Result<(), SetupError> {
        let migrator = self.inner.set.clone().with_config(self.inner.config.clone());
        ensure_built(&self.inner.server, &migrator, &self.inner.name).await.map(|_| ())
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

/// A database at head of a migrator, for one test: a clone of the
/// migrator's [`Template`]. Dereferences to [`TestDatabase`] for
/// [`connect`](TestDatabase::connect), [`pool`](TestDatabase::pool),
/// [`name`](TestDatabase::name) and [`url`](TestDatabase::url).
///
/// Dropped at the end of the test, with any sessions still connected to it.
/// When the test panicked (a failed assertion), the database is kept instead
/// and its name printed with the test's output, to look at with `psql`. A
/// throwaway server, and everything on it, is still removed when the test
/// process exits: set `DATABASE_URL` to keep failed tests' databases.
///
/// ```no_run
/// use include_dir::{include_dir, Dir};
/// use pgskein::MigrationSet;
/// use pgskein::testing::MigratedDatabase;
/// use std::sync::LazyLock;
///
/// static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
/// static SET: LazyLock<MigrationSet> =
///     LazyLock::new(|| MigrationSet::from_embedded(&MIGRATIONS).expect("migrations load"));
///
/// #[tokio::test]
/// async fn folders_start_empty() {
///     let db = MigratedDatabase::new(&*SET).await.unwrap();
///     let client = db.connect().await.unwrap();
///     let n: i64 = client.query_one("SELECT count(*) FROM folders", &[]).await.unwrap().get(0);
///     assert_eq!(n, 0);
/// }
/// ```
pub struct MigratedDatabase {
    /// `None` once kept.
    db: Option<TestDatabase>,
    template: String,
    throwaway: bool,
}

impl MigratedDatabase {
    /// A new database at head of `migrator` on [`TestServer::shared`]:
    /// `Template::shared(migrator).await?.database().await`.
    ///
    /// The first call in a process finds or builds the template (a build
    /// runs every migration once); later calls only clone it.
    pub async fn new<M: Migrator>(migrator: &M) -> Result<MigratedDatabase, SetupError> {
        Template::shared(migrator).await?.database().await
    }

    /// The template this database was cloned from.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Keeps the database after this value is gone, and returns its name:
    /// to look at it after the test, whatever its outcome.
    pub fn keep(mut self) -> String {
        self.db.take().map(TestDatabase::into_kept).unwrap_or_default()
    }

    fn database(&self) -> &TestDatabase {
        self.db.as_ref().expect("present until kept or dropped")
    }
}

impl Deref for MigratedDatabase {
    type Target = TestDatabase;
    fn deref(&self) -> &TestDatabase {
        self.database()
    }
}

impl fmt::Debug for MigratedDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigratedDatabase")
            .field("database", &self.db)
            .field("template", &self.template)
            .finish()
    }
}

impl Drop for MigratedDatabase {
    /// Drops the database, or keeps it when the thread is panicking.
    fn drop(&mut self) {
        let Some(db) = self.db.take() else { return };
        if std::thread::panicking() {
            let name = db.into_kept();
            let note = if self.throwaway {
                " (on the throwaway server, removed when the test process exits; set DATABASE_URL to keep it)"
            } else {
                ""
            };
            eprintln!("pgskein: kept database {name} of the failed test{note}");
        }
    }
}

/// The migrator as test support runs it: with backfills inline, so that a
/// database at head has its data changes done, and a revision that depends
/// on a backfill can be applied.
pub(super) fn for_tests<M: Migrator>(migrator: &M) -> crate::Configured<&M> {
    migrator.with_config(migrator.config().into_owned().inline_backfills(true))
}

/// `pgskein_t_<history>_<set>`: 35 bytes, well within PostgreSQL's 63.
/// `<set>` changes with any revision, backfill, the bookkeeping schema or
/// this crate's version; `<history>` only with the root revisions.
pub(super) fn template_name<M: Migrator>(migrator: &M) -> Result<String, crate::Error> {
    let set = migrator.migrations()?;
    let schema = migrator.config().schema_name().to_owned();
    let mut history = Sha256::new();
    history.update(schema.as_bytes());
    for root in set.revisions().filter(|r| r.revises().is_empty() && !r.is_repeatable()) {
        history.update(b"\0");
        history.update(root.id().as_str().as_bytes());
        history.update(b"\0");
        history.update(root.checksum().to_hex().as_bytes());
    }
    let mut version = Sha256::new();
    for part in [env!("CARGO_PKG_VERSION"), &schema, set.fingerprint()] {
        version.update(part.as_bytes());
        version.update(b"\0");
    }
    // The template runs the backfills, which the fingerprint does not cover:
    // a SQL backfill by its statement, a Rust one by its name.
    for backfill in set.declared_backfills() {
        let sql = match &backfill.kind {
            crate::backfill::Kind::Sql { key, sql } => [key.as_str(), sql.as_str()],
            crate::backfill::Kind::Rust(_) => ["", ""],
        };
        let table = backfill.table.as_deref().unwrap_or_default();
        for part in [backfill.name(), backfill.after_revision(), table, sql[0], sql[1]] {
            version.update(part.as_bytes());
            version.update(b"\0");
        }
    }
    Ok(format!(
        "pgskein_t_{}_{}",
        crate::id::hex(&history.finalize()[..4]),
        crate::id::hex(&version.finalize()[..8])
    ))
}

/// Why a migrator's set does not load, as a setup error.
fn load_error(source: crate::Error) -> SetupError {
    SetupError::Load { source }
}

pub(super) fn clone_sql(clone: &str, template: &str, strategy: &str) -> String {
    format!("CREATE DATABASE {} TEMPLATE {}{strategy}", quote_ident(clone), quote_ident(template))
}

/// Makes sure the template exists and is complete; returns the server's
/// `server_version_num`.
async fn ensure_built<M: Migrator>(server: &TestServer, migrator: &M, name: &str) -> Result<i32, SetupError> {
    let admin_config = server.admin_config();
    let admin_db = admin_config.get_dbname().unwrap_or("postgres").to_owned();
    let admin = connect(&admin_config).await.map_err(SetupError::db("connect to", &admin_db))?;
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(SetupError::db("query", &admin_db))?
        .get(0);
    if is_ready(&admin, name).await? {
        tracing::debug!(template = %name, "reusing the template database");
        return Ok(version);
    }
    let lock = format!("template {name}");
    let acquired = LockGuard::acquire(
        ClientRef::Borrowed(&admin),
        &Ledger::new(&lock),
        Some(BUILD_LOCK_WAIT),
        None,
        None,
        None,
    )
    .await
    .map_err(|source| SetupError::TemplateLock { template: name.to_owned(), source })?;
    let Acquired::Locked(guard, waited) = acquired else {
        unreachable!("without a settled check the lock is always taken")
    };
    let result = async {
        // Someone else may have built it while we waited.
        if is_ready(&admin, name).await? {
            tracing::debug!(template = %name, ?waited, "another process built the template database");
            return Ok(());
        }
        build(server, &admin, migrator, name).await?;
        remove_older(&admin, name).await;
        Ok(())
    }
    .await;
    guard.release().await;
    result.map(|()| version)
}

async fn is_ready(admin: &Client, name: &str) -> Result<bool, SetupError> {
    let row = admin
        .query_opt("SELECT datistemplate AND NOT datallowconn FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(SetupError::db("look up", name))?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// Migrates a new database and renames it to `name`. Runs under the lock.
async fn build<M: Migrator>(
    server: &TestServer,
    admin: &Client,
    migrator: &M,
    name: &str,
) -> Result<(), SetupError> {
    let started = Instant::now();
    let building = format!("{name}_build");
    // Left by a builder that died: the lock was released with its session.
    drop_database(admin, &building).await?;
    // An incomplete database under the final name (a failed tidy-up).
    drop_database(admin, name).await?;
    let create = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&building));
    admin.batch_execute(&create).await.map_err(SetupError::db("create database", &building))?;

    let config = server.config(&building);
    let migrated = async {
        let client = connect(&config).await.map_err(SetupError::db("connect to", &building))?;
        let report = for_tests(migrator)
            .run(&client)
            .await
            .map_err(|source| SetupError::Migrate { object: building.clone(), source })?;
        Ok::<_, SetupError>(report.steps.len())
    }
    .await;
    let steps = match migrated {
        Ok(steps) => steps,
        Err(e) => {
            let _ = drop_database(admin, &building).await;
            return Err(e);
        }
    };
    wait_for_no_sessions(admin, &building).await?;
    let comment = format!(
        "pgskein test template: migration set {} at head ({steps} revisions), pgskein {}",
        migrator.migrations().map_err(load_error)?.fingerprint(),
        env!("CARGO_PKG_VERSION")
    );
    let finish = format!(
        "ALTER DATABASE {b} ALLOW_CONNECTIONS false; \
         ALTER DATABASE {b} IS_TEMPLATE true; \
         COMMENT ON DATABASE {b} IS {comment}; \
         ALTER DATABASE {b} RENAME TO {n};",
        b = quote_ident(&building),
        n = quote_ident(name),
        comment = quote_literal(&comment),
    );
    admin.batch_execute(&finish).await.map_err(SetupError::db("finish template", &building))?;
    tracing::debug!(template = %name, steps, elapsed = ?started.elapsed(), "built the template database");
    Ok(())
}

/// The migration session has closed its connection, but its backend may not
/// have exited yet; renaming would then fail (or wait in 100 ms steps).
async fn wait_for_no_sessions(admin: &Client, db: &str) -> Result<(), SetupError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&db])
            .await
            .map_err(SetupError::db("look up sessions of", db))?
            .get(0);
        if n == 0 || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn drop_database(admin: &Client, name: &str) -> Result<(), SetupError> {
    let exists = admin
        .query_opt("SELECT datistemplate FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(SetupError::db("look up", name))?;
    let Some(row) = exists else { return Ok(()) };
    if row.get::<_, bool>(0) {
        let sql = format!("ALTER DATABASE {} IS_TEMPLATE false", quote_ident(name));
        admin.batch_execute(&sql).await.map_err(SetupError::db("unmark template", name))?;
    }
    let sql = super::server::drop_database_sql(name);
    admin.batch_execute(&sql).await.map_err(SetupError::db("drop database", name))
}

/// Drops the templates of the same history older than the newest
/// [`KEEP_PREVIOUS`]. Best effort: a template being cloned right now makes
/// the drop wait or fail, and a process that still wanted it builds it again.
async fn remove_older(admin: &Client, name: &str) {
    let Some(history) = name.get(..name.len() - 17) else { return };
    let pattern = format!("^{history}_[0-9a-f]{{16}}$");
    let rows = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname ~ $1 AND datname <> $2 AND datistemplate \
             ORDER BY oid DESC OFFSET $3",
            &[&pattern, &name, &KEEP_PREVIOUS],
        )
        .await;
    for row in rows.into_iter().flatten() {
        let old: String = row.get(0);
        match drop_database(admin, &old).await {
            Ok(()) => tracing::debug!(template = %old, "dropped an outdated template database"),
            Err(e) => {
                tracing::debug!(template = %old, error = %e, "could not drop an outdated template database")
            }
        }
    }
}

/// Connects, driving the connection on the current runtime.
pub(super) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(super::server::tls_for(config)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "test support connection ended");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::Backfill;

    fn set(second_up: &str, fill: &str) -> MigrationSet {
        MigrationSet::builder()
            .file("0001_a.sql", b"-- pgskein: up\nCREATE TABLE a (id int, x int);\n")
            .file(
                "0002_b.sql",
                format!("-- pgskein: revises 0001_a\n-- pgskein: up\n{second_up}\n").as_bytes(),
            )
            .backfill(Backfill::sql("fill", "0001_a").table("a").key("id").statement(fill))
            .build()
            .unwrap()
    }

    const FILL: &str = "UPDATE a SET x = 1 WHERE id >= $1 AND id < $2";

    #[test]
    fn template_name_is_stable_for_an_unchanged_set() {
        let name = template_name(&set("SELECT 1;", FILL)).unwrap();
        assert_eq!(name, template_name(&set("SELECT 1;", FILL)).unwrap());
        assert_eq!(name.len(), 35);
        assert!(name.starts_with("pgskein_t_"), "{name}");
    }

    #[test]
    fn an_edited_revision_keeps_the_history_and_changes_the_version() {
        let (a, b) = (
            template_name(&set("SELECT 1;", FILL)).unwrap(),
            template_name(&set("SELECT 2;", FILL)).unwrap(),
        );
        assert_ne!(a, b);
        assert_eq!(a[..18], b[..18], "same history: {a} {b}");
    }

    #[test]
    fn an_edited_backfill_or_another_ledger_schema_changes_the_name() {
        let base = template_name(&set("SELECT 1;", FILL)).unwrap();
        let refill =
            template_name(&set("SELECT 1;", "UPDATE a SET x = 2 WHERE id >= $1 AND id < $2")).unwrap();
        assert_ne!(base, refill);
        assert_eq!(base[..18], refill[..18]);
        let other_schema = set("SELECT 1;", FILL).with_config(crate::Config::default().schema("ledger"));
        let other = template_name(&other_schema).unwrap();
        assert_ne!(base[..18], other[..18], "another history: {base} {other}");
    }
}
