//! The server tests run against: `DATABASE_URL`'s, or a throwaway one this
//! process starts (see `supervisor`), and the databases created on it for
//! tests. Invariant: a throwaway server is removed when the process exits,
//! however it exits, and a test database is dropped when its handle is
//! (unless kept for a failed test).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::connstr::ConnStr;
use crate::quote::quote_ident;

/// The environment variable naming an existing server to use instead of a
/// throwaway one.
const DATABASE_URL: &str = "DATABASE_URL";

/// PostgreSQL's limit for identifiers, in bytes; longer names are truncated
/// silently by the server, which would break the uniqueness suffix.
const MAX_IDENTIFIER_LEN: usize = 63;

/// How long dropping a database may take before it is given up, so that a
/// wedged server cannot hang a test forever in `Drop`.
const DROP_TIMEOUT: Duration = Duration::from_secs(60);

static SHARED: OnceLock<Result<TestServer, StartError>> = OnceLock::new();

/// A PostgreSQL server for tests.
///
/// There is one per process, obtained with [`TestServer::shared`]: either the
/// server named by `DATABASE_URL`, or a throwaway server started from the
/// machine's PostgreSQL binaries. Tests create their own databases on it with
/// [`TestServer::create_database`].
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use pgskein::testing::TestServer;
///
/// let server = TestServer::shared()?;
/// let db = server.create_database("my_test").await?;
/// let client = db.connect().await?;
/// let row = client.query_one("SELECT 1 + 1", &[]).await?;
/// assert_eq!(row.get::<_, i32>(0), 2);
/// # Ok(())
/// # }
/// ```
pub struct TestServer {
    inner: Arc<Inner>,
}

/// How a private throwaway server is set up ([`TestServer::start_private_with`]).
///
/// By default it is the server [`TestServer::start_private`] starts: no TCP,
/// reachable through the socket in its own directory only.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    tcp: bool,
    tls: Option<(String, String)>,
    hba: Vec<String>,
    settings: Vec<(String, String)>,
}

impl ServerOptions {
    /// The default: no TCP, socket only.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// Also listen on `127.0.0.1`, on a free port ([`TestServer::tcp_port`]).
    /// `pg_hba.conf` trusts loopback connections unless [`hba`](Self::hba)
    /// lines say otherwise.
    pub fn tcp(mut self) -> ServerOptions {
        self.tcp = true;
        self
    }

    /// Serve TLS on the TCP port (implies [`tcp`](Self::tcp)) with this
    /// certificate chain and private key, both in PEM form.
    pub fn tls(mut self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> ServerOptions {
        self.tls = Some((cert_pem.into(), key_pem.into()));
        self.tcp = true;
        self
    }

    /// A `pg_hba.conf` line, placed before the default `trust` lines (so it
    /// takes precedence), e.g. `hostnossl all all 127.0.0.1/32 reject`.
    pub fn hba(mut self, line: impl Into<String>) -> ServerOptions {
        self.hba.push(line.into());
        self
    }

    /// A server setting (`-c name=value`), e.g. `("log_connections", "on")`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> ServerOptions {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// A database created for a test on a [`TestServer`], dropped (with any
/// sessions still connected to it) when this value is dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use pgskein::testing::TestServer;
///
/// let db = TestServer::shared()?.create_database("pool_test").await?;
/// let pool = db.pool(4);
/// let client = pool.get().await?;
/// client.batch_execute("CREATE TABLE t (id int)").await?;
/// # Ok(())
/// # }
/// ```
pub struct TestDatabase {
    name: String,
    server: Arc<Inner>,
}

struct Inner {
    /// Everything needed to connect, TLS options included; the database
    /// name is set per database.
    conn: ConnStr,
    /// The database that `CREATE DATABASE` and `DROP DATABASE` are run from.
    admin_db: String,
    kind: Kind,
}

enum Kind {
    #[cfg(unix)]
    Throwaway(throwaway::Instance),
    External,
}

/// A start failure, kept so that every caller of [`TestServer::shared`] gets
/// the same answer instead of each retrying a slow, failing start.
struct StartError {
    kind: io::ErrorKind,
    message: String,
}

impl TestServer {
    /// The server of this process: `DATABASE_URL`'s when set, else a throwaway
    /// server started on first call and removed when the process exits.
    ///
    /// Blocks while the throwaway server starts (a second or two); concurrent
    /// callers wait for the same start. If the start fails, this call and all
    /// later ones return an error with the same message, which includes the
    /// end of the server's log when there is one.
    ///
    /// ```no_run
    /// use pgskein::testing::TestServer;
    ///
    /// let server = TestServer::shared().expect("a PostgreSQL server for tests");
    /// println!("psql {}", server.url("postgres"));
    /// ```
    pub fn shared() -> io::Result<&'static TestServer> {
        match SHARED.get_or_init(|| {
            TestServer::start().map_err(|e| StartError { kind: e.kind(), message: e.to_string() })
        }) {
            Ok(server) => Ok(server),
            Err(e) => Err(io::Error::new(e.kind, e.message.clone())),
        }
    }

    fn start() -> io::Result<TestServer> {
        let inner = match std::env::var(DATABASE_URL) {
            Ok(url) if !url.trim().is_empty() => Inner::external(&url, DATABASE_URL)?,
            _ => Inner::throwaway()?,
        };
        Ok(TestServer { inner: Arc::new(inner) })
    }

    /// The existing server `url` names, as [`TestServer::shared`] takes
    /// `DATABASE_URL`: a `postgres://` URL or a `key=value` string, TLS
    /// options included (`sslmode` up to `verify-full`, `sslrootcert`,
    /// `sslcert`, `sslkey`). Its database is the one `CREATE DATABASE` runs
    /// from (default `postgres`); the role needs `CREATEDB`.
    ///
    /// Nothing is connected yet: an unreachable server shows in the first
    /// [`create_database`](TestServer::create_database).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `url` cannot be read, or when its
    /// TLS files cannot be; the message never holds the password.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use pgskein::testing::TestServer;
    ///
    /// let server = TestServer::external("postgresql://ci@db.internal/postgres?sslmode=verify-full")?;
    /// let db = server.create_database("over_tls").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn external(url: &str) -> io::Result<TestServer> {
        Ok(TestServer { inner: Arc::new(Inner::external(url, "the connection string")?) })
    }

    /// A throwaway server of the caller's own, for a test that must disturb
    /// its server (restart it, crash it) without touching the tests that share
    /// [`TestServer::shared`].
    ///
    /// Always started from the machine's PostgreSQL binaries (found as for
    /// [`TestServer::shared`], `PGSKEIN_PG_BIN` first), even when
    /// `DATABASE_URL` is set. Blocks while the server starts (a second or
    /// two). The server is stopped and its directory removed when the last of
    /// this value and the [`TestDatabase`]s created on it is dropped, or when
    /// the process exits.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use pgskein::testing::TestServer;
    ///
    /// let server = TestServer::start_private()?;
    /// let db = server.create_database("survives_a_crash").await?;
    /// let client = db.connect().await?;
    /// // Committed with a flush, so that the crash cannot lose it.
    /// client.batch_execute("SET synchronous_commit = on; CREATE TABLE t (id int)").await?;
    /// server.restart_immediate()?; // the client's connection is gone now
    /// let client = db.connect().await?;
    /// client.batch_execute("SELECT * FROM t").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_private() -> io::Result<TestServer> {
        Self::start_private_with(ServerOptions::new())
    }

    /// A private throwaway server, as [`TestServer::start_private`], with
    /// `options`: listening on a loopback TCP port, with TLS, with
    /// `pg_hba.conf` lines or settings of the test's own.
    ///
    /// ```no_run
    /// # fn example(cert_pem: String, key_pem: String) -> std::io::Result<()> {
    /// use pgskein::testing::{ServerOptions, TestServer};
    ///
    /// let server = TestServer::start_private_with(ServerOptions::new().tls(cert_pem, key_pem))?;
    /// let port = server.tcp_port().expect("TLS listens on loopback");
    /// let url = format!("postgresql://postgres@localhost:{port}/postgres?sslmode=require");
    /// # Ok(()) }
    /// ```
    pub fn start_private_with(options: ServerOptions) -> io::Result<TestServer> {
        Ok(TestServer { inner: Arc::new(Inner::throwaway_with(&options)?) })
    }

    /// The loopback TCP port of a private server started with
    /// [`ServerOptions::tcp`] (or [`ServerOptions::tls`]); `None` for a
    /// server reached through its socket only, or not started here.
    pub fn tcp_port(&self) -> Option<u16> {
        match &self.inner.kind {
            #[cfg(unix)]
            Kind::Throwaway(instance) if instance.tcp => Some(instance.port),
            _ => None,
        }
    }

    /// Restarts a server from [`TestServer::start_private`] in immediate
    /// mode, as a crash would: every session is cut without a clean
    /// shutdown, the server recovers from its write-ahead log and accepts
    /// connections again when this returns. Blocks until then.
    ///
    /// Transactions whose commit was acknowledged shortly before may be lost:
    /// the throwaway server runs with `synchronous_commit=off`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] for the shared server (other tests use
    /// it) and for `DATABASE_URL`'s; otherwise when `pg_ctl restart` fails,
    /// with the end of the server's log.
    pub fn restart_immediate(&self) -> io::Result<()> {
        let shared = matches!(SHARED.get(), Some(Ok(s)) if Arc::ptr_eq(&s.inner, &self.inner));
        match &self.inner.kind {
            #[cfg(unix)]
            Kind::Throwaway(instance) if !shared => instance.restart_immediate(),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only a server from TestServer::start_private can be restarted",
            )),
        }
    }

    /// Everything the server has written to its log so far, for tests that
    /// check what a run makes the server log (operators alert on `ERROR` lines).
    /// `None` for `DATABASE_URL`'s server, whose log this process cannot read.
    pub fn server_log(&self) -> Option<String> {
        match &self.inner.kind {
            #[cfg(unix)]
            Kind::Throwaway(instance) => Some(instance.log()),
            _ => None,
        }
    }

    /// A connection config for database `dbname` on this server (user,
    /// password if the URL had one, host or socket directory, port).
    ///
    /// The config cannot carry `sslrootcert` and the other TLS files: the
    /// helpers of this module that take a config ([`MigratedSchema::in_database`](super::MigratedSchema::in_database))
    /// use the TLS options of the server it points to.
    pub fn config(&self, dbname: &str) -> Config {
        self.inner.config(dbname)
    }

    /// A libpq-style connection URL for `dbname`, rebuilt from the parsed
    /// connection: for the throwaway server
    /// `postgresql://postgres@/DBNAME?host=SOCKET_DIR&port=PORT`, for
    /// `DATABASE_URL` its user, hosts, ports and TLS options with the
    /// database replaced.
    ///
    /// It holds the password when `DATABASE_URL` has one: hand it to a
    /// program through its environment (as `DATABASE_URL`), never on a
    /// command line, which other users see, and do not log it.
    pub fn url(&self, dbname: &str) -> String {
        self.inner.url(dbname)
    }

    /// Creates a new, empty database with a unique name starting with
    /// `prefix`, owned by the connecting role.
    ///
    /// The prefix is lowercased, other characters than `a-z`, `0-9` and `_`
    /// become `_`, and it is shortened so that the whole name fits in 63
    /// bytes. The database is a copy of `template0`, so nothing installed
    /// into `template1` on a shared server leaks into it.
    pub async fn create_database(&self, prefix: &str) -> Result<TestDatabase, tokio_postgres::Error> {
        let name = unique_name(prefix);
        let sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&name));
        execute_once(&self.inner.admin_config(), &sql).await?;
        tracing::debug!(database = %name, "created test database");
        Ok(TestDatabase { name, server: Arc::clone(&self.inner) })
    }
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("TestServer");
        match &self.inner.kind {
            #[cfg(unix)]
            Kind::Throwaway(instance) => s
                .field("kind", &"throwaway")
                .field("dir", &instance.dir)
                .field("url", &self.inner.url(&self.inner.admin_db)),
            Kind::External => {
                s.field("kind", &"external").field("url", &self.inner.redacted_url(&self.inner.admin_db))
            }
        };
        s.finish()
    }
}

impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection config for this database.
    pub fn config(&self) -> Config {
        self.server.config(&self.name)
    }

    /// A libpq-style connection URL for this database (see
    /// [`TestServer::url`]).
    pub fn url(&self) -> String {
        self.server.url(&self.name)
    }

    /// Connects, spawning the connection task on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let config = self.config();
        let (client, connection) = config.connect(tls_for(&config)).await?;
        let name = self.name.clone();
        tokio::spawn(async move {
            // Ends with an error when the database is dropped under it, which
            // is expected at the end of a test.
            if let Err(e) = connection.await {
                tracing::debug!(database = %name, error = %e, "test connection ended");
            }
        });
        Ok(client)
    }

    /// A deadpool-postgres pool of up to `max_size` connections to this
    /// database.
    ///
    /// Connections are opened on first use, on the tokio runtime using the
    /// pool, so a pool belongs to one runtime (one test).
    pub fn pool(&self, max_size: usize) -> deadpool_postgres::Pool {
        pool(self.config(), max_size)
    }
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("url", &self.server.redacted_url(&self.name))
            .finish()
    }
}

impl Drop for TestDatabase {
    /// Drops the database, terminating sessions still connected to it.
    ///
    /// Runs on a thread of its own with its own runtime: the caller may be on
    /// a runtime that is shutting down, on a current-thread runtime that
    /// cannot drive another future while blocked here, or on no runtime at
    /// all. Blocks until done, so that the database is gone when the value is.
    fn drop(&mut self) {
        // Emptied by `into_kept`: the database stays.
        if self.name.is_empty() {
            return;
        }
        let server = Arc::clone(&self.server);
        let name = std::mem::take(&mut self.name);
        let outcome = std::thread::Builder::new()
            .name("pgskein-drop-database".into())
            .spawn({
                let name = name.clone();
                move || drop_database(&server, &name)
            })
            .map_err(|e| e.to_string())
            .and_then(|handle| handle.join().map_err(|_| "the dropping thread panicked".to_string()))
            .and_then(|result| result);
        match outcome {
            Ok(()) => tracing::debug!(database = %name, "dropped test database"),
            Err(error) => tracing::warn!(database = %name, %error, "could not drop test database"),
        }
    }
}

/// What the sibling modules (templates, fresh schemas) need from a server.
impl TestServer {
    /// The config of the database that `CREATE DATABASE` and `DROP DATABASE` run from.
    pub(super) fn admin_config(&self) -> Config {
        self.inner.admin_config()
    }

    /// Whether this is a throwaway server, removed (with its databases) at exit.
    pub(super) fn is_throwaway(&self) -> bool {
        !matches!(self.inner.kind, Kind::External)
    }

    /// Another handle on the same server.
    pub(super) fn handle(&self) -> TestServer {
        TestServer { inner: Arc::clone(&self.inner) }
    }

    /// Takes charge of an existing database: it is dropped with the returned value.
    pub(super) fn adopt(&self, name: String) -> TestDatabase {
        TestDatabase { name, server: Arc::clone(&self.inner) }
    }
}

impl TestDatabase {
    /// Gives the database up without dropping it; returns its name.
    pub(super) fn into_kept(mut self) -> String {
        std::mem::take(&mut self.name)
    }
}

fn drop_database(server: &Inner, name: &str) -> Result<(), String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let sql = drop_database_sql(name);
    runtime.block_on(async {
        match tokio::time::timeout(DROP_TIMEOUT, execute_once(&server.admin_config(), &sql)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("timed out after {DROP_TIMEOUT:?}")),
        }
    })
}

/// Drops a test database even while sessions are connected to it.
pub(super) fn drop_database_sql(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))
}

/// Runs `sql` on a fresh connection that is driven here rather than spawned,
/// so that it works on any runtime and leaves no task behind.
pub(super) async fn execute_once(config: &Config, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = config.connect(tls_for(config)).await?;
    let mut connection = std::pin::pin!(connection);
    let mut connection_done = false;
    let result = {
        let mut query = std::pin::pin!(client.batch_execute(sql));
        tokio::select! {
            biased;
            result = &mut query => result,
            ended = &mut connection => {
                connection_done = true;
                match ended {
                    Err(e) => Err(e),
                    // The query then fails on the closed connection.
                    Ok(()) => query.await,
                }
            }
        }
    };
    // Dropping the client makes the connection say goodbye and finish, so
    // that the server does not log an unexpected EOF.
    drop(client);
    if !connection_done {
        let _ = connection.await;
    }
    result
}

impl Inner {
    /// `what` names the string in errors (`DATABASE_URL`).
    fn external(url: &str, what: &str) -> io::Result<Inner> {
        let invalid = |e: &dyn std::error::Error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} cannot be used: {}", super::error_chain(e)),
            )
        };
        let conn = ConnStr::parse(url).map_err(|e| invalid(&e))?;
        let tls = crate::connstr::tls::connector(conn.tls_options())
            .map_err(|e| invalid(&crate::connstr::ConnStrError::Tls(e)))?;
        let admin_db = conn.config().get_dbname().unwrap_or("postgres").to_owned();
        register_tls(conn.config(), tls);
        tracing::debug!(url = %conn.with_dbname(&admin_db).display(), "using an existing server for tests");
        Ok(Inner { conn, admin_db, kind: Kind::External })
    }

    fn throwaway() -> io::Result<Inner> {
        Self::throwaway_with(&ServerOptions::new())
    }

    #[cfg(unix)]
    fn throwaway_with(options: &ServerOptions) -> io::Result<Inner> {
        let instance = throwaway::Instance::start(options)?;
        let mut config = Config::new();
        config.user(throwaway::SUPERUSER).host_path(&instance.socket_dir).port(instance.port);
        let conn = ConnStr::from_config(config);
        Ok(Inner { conn, admin_db: "postgres".to_owned(), kind: Kind::Throwaway(instance) })
    }

    #[cfg(not(unix))]
    fn throwaway_with(_: &ServerOptions) -> io::Result<Inner> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "a throwaway PostgreSQL server for tests is only supported on Unix; \
                 set {DATABASE_URL} to a server to use"
            ),
        ))
    }

    fn config(&self, dbname: &str) -> Config {
        self.conn.with_dbname(dbname).config().clone()
    }

    fn admin_config(&self) -> Config {
        self.config(&self.admin_db)
    }

    fn url(&self, dbname: &str) -> String {
        self.conn.with_dbname(dbname).url_with_password()
    }

    fn redacted_url(&self, dbname: &str) -> String {
        self.conn.with_dbname(dbname).display()
    }
}

/// The TLS connectors of the servers given by a connection string, by
/// address: a [`Config`] cannot carry `sslrootcert` and the other TLS files,
/// so the helpers that connect with one find its server's here.
static TLS: Mutex<Vec<(Config, MakeRustlsConnect)>> = Mutex::new(Vec::new());

fn register_tls(config: &Config, tls: MakeRustlsConnect) {
    let mut known = TLS.lock().unwrap_or_else(|e| e.into_inner());
    known.retain(|(c, _)| !same_server(c, config));
    known.push((config.clone(), tls));
}

fn same_server(a: &Config, b: &Config) -> bool {
    a.get_hosts() == b.get_hosts() && a.get_ports() == b.get_ports() && a.get_hostaddrs() == b.get_hostaddrs()
}

/// The TLS connector for a connection with `config`: its server's, or one
/// that checks no certificate (as libpq's `prefer` and `require`; a
/// throwaway server is reached through its socket, without TLS).
pub(crate) fn tls_for(config: &Config) -> MakeRustlsConnect {
    let known = TLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, tls)) = known.iter().find(|(c, _)| same_server(c, config)) {
        return tls.clone();
    }
    static UNCHECKED: OnceLock<MakeRustlsConnect> = OnceLock::new();
    UNCHECKED.get_or_init(crate::connstr::tls::unchecked_connector).clone()
}

/// A private server (from [`TestServer::start_private`]) stops when its last
/// handle goes; the shared one lives in a static and stops at exit instead.
impl Drop for Inner {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Kind::Throwaway(instance) = &self.kind {
            if instance.owner_pid == std::process::id() {
                instance.stop();
            }
        }
    }
}

/// Stops the throwaway server and removes its directory at process exit.
#[cfg(unix)]
extern "C" fn stop_at_exit() {
    // Unwinding out of an `extern "C"` function aborts the process.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(server)) = SHARED.get() {
            if let Kind::Throwaway(instance) = &server.inner.kind {
                // A child forked without exec inherits the handler, and must
                // not stop its parent's server when it exits.
                if instance.owner_pid == std::process::id() {
                    instance.stop();
                }
            }
        }
    });
}

/// A name that no other test, in this process or another one using the same
/// server, will pick: the pid alone can repeat across containers.
pub(super) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{:x}{:08x}_{}", std::process::id(), random_u32(), n);
    let mut name: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if name.is_empty() {
        name.push_str("test");
    }
    // All characters are ASCII now, so any byte index is a char boundary.
    name.truncate(MAX_IDENTIFIER_LEN.saturating_sub(suffix.len()));
    name.push_str(&suffix);
    name
}

/// Randomness from the standard library's per-process hash keys, mixed with
/// the clock; enough to keep concurrent processes' names apart.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos_since_epoch());
    hasher.finish() as u32
}

fn nanos_since_epoch() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

#[cfg(unix)]
mod throwaway;

/// A pool of up to `max_size` connections with `config`; connections open on first use.
pub(crate) fn pool(config: tokio_postgres::Config, max_size: usize) -> deadpool_postgres::Pool {
    let tls = tls_for(&config);
    let manager = deadpool_postgres::Manager::new(config, tls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(max_size)
        .build()
        .expect("a pool without timeouts needs no runtime to build")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> &'static TestServer {
        TestServer::shared().expect("a PostgreSQL server for tests")
    }

    fn is_throwaway(server: &TestServer) -> bool {
        !matches!(server.inner.kind, Kind::External)
    }

    async fn count_databases(name: &str) -> i64 {
        let admin = server().config("postgres");
        let (client, connection) = admin.connect(tls_for(&admin)).await.unwrap();
        tokio::spawn(connection);
        client
            .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
            .await
            .unwrap()
            .get(0)
    }

    #[test]
    fn types_are_send_sync_debug() {
        fn check<T: Send + Sync + fmt::Debug>() {}
        check::<TestServer>();
        check::<TestDatabase>();
    }

    #[test]
    fn shared_is_one_server_for_all_threads() {
        let addresses: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(|| server() as *const TestServer as usize))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(addresses.windows(2).all(|w| w[0] == w[1]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn databases_are_isolated() {
        let server = server();
        let tasks: Vec<_> = (0..6)
            .map(|i| tokio::spawn(async move { server.create_database(&format!("isolated_{i}")).await }))
            .collect();
        let mut databases = Vec::new();
        for task in tasks {
            databases.push(task.await.unwrap().unwrap());
        }
        let mut names: Vec<&str> = databases.iter().map(TestDatabase::name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), databases.len());

        let a = databases[0].connect().await.unwrap();
        let b = databases[1].connect().await.unwrap();
        a.batch_execute("CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (42)").await.unwrap();
        let x: i32 = a.query_one("SELECT x FROM only_in_a", &[]).await.unwrap().get(0);
        assert_eq!(x, 42);
        let in_b: Option<String> =
            b.query_one("SELECT to_regclass('only_in_a')::text", &[]).await.unwrap().get(0);
        assert_eq!(in_b, None);

        let db: String = b.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
        assert_eq!(db, databases[1].name());
        let pool = databases[1].pool(2);
        let pooled = pool.get().await.unwrap();
        let db: String = pooled.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
        assert_eq!(db, databases[1].name());
    }

    #[tokio::test]
    async fn drop_removes_the_database_even_with_open_connections() {
        let db = server().create_database("dropped").await.unwrap();
        let name = db.name().to_owned();
        assert_eq!(count_databases(&name).await, 1);
        let client = db.connect().await.unwrap();
        client.batch_execute("SELECT 1").await.unwrap();
        drop(db);
        assert_eq!(count_databases(&name).await, 0);
        assert!(client.batch_execute("SELECT 1").await.is_err());
    }

    #[test]
    fn drop_works_outside_any_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let db = runtime.block_on(server().create_database("no_runtime")).unwrap();
        let name = db.name().to_owned();
        drop(runtime);
        drop(db);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(runtime.block_on(count_databases(&name)), 0);
    }

    #[tokio::test]
    async fn url_works_with_psql() {
        let db = server().create_database("psql").await.unwrap();
        let Some(psql) = find_psql() else {
            eprintln!("no psql binary found; not checking the URL with it");
            return;
        };
        let output = std::process::Command::new(psql)
            .arg(db.url())
            .args(["-X", "-A", "-t", "-c", "SELECT current_database()"])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), db.name());
    }

    fn find_psql() -> Option<std::path::PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(
                std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|entry| entry.path().join("bin")),
            )
            .map(|dir| dir.join("psql"))
            .find(|psql| psql.is_file())
    }

    #[tokio::test]
    async fn throwaway_server_has_no_network() {
        let server = server();
        if !is_throwaway(server) {
            return;
        }
        let db = server.create_database("no_network").await.unwrap();
        let client = db.connect().await.unwrap();
        let listen: String =
            client.query_one("SELECT current_setting('listen_addresses')", &[]).await.unwrap().get(0);
        assert_eq!(listen, "");
        let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
        assert_eq!(fsync, "off");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_server_restarts_apart_from_the_shared_one_and_goes_when_dropped() {
        let shared = server();
        let err = shared.restart_immediate().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);

        let private = TestServer::start_private().unwrap();
        let Kind::Throwaway(instance) = &private.inner.kind else { panic!("a private server is throwaway") };
        let dir = instance.dir.clone();
        assert!(dir.is_dir());
        let db = private.create_database("restarted").await.unwrap();
        let client = db.connect().await.unwrap();
        client.batch_execute("SET synchronous_commit = on; CREATE TABLE kept (id int)").await.unwrap();
        let before: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

        let watcher = shared.create_database("not_restarted").await.unwrap();
        let bystander = watcher.connect().await.unwrap();
        tokio::task::block_in_place(|| private.restart_immediate()).unwrap();

        assert!(client.batch_execute("SELECT 1").await.is_err(), "the old session was cut");
        let client = db.connect().await.unwrap();
        let after: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        assert_ne!(before, after);
        client.batch_execute("SELECT * FROM kept").await.unwrap();
        bystander.batch_execute("SELECT 1").await.expect("the shared server's sessions are untouched");

        drop(client);
        drop(private);
        assert!(dir.is_dir(), "the database still holds the server");
        drop(db);
        assert!(!dir.exists(), "the last handle stopped the server and removed {}", dir.display());
    }

    #[test]
    fn names_are_sanitised_unique_and_short() {
        let a = unique_name("Hello, World-ÄÖ!");
        let b = unique_name("Hello, World-ÄÖ!");
        assert_ne!(a, b);
        assert!(a.starts_with("hello__world____"), "{a}");
        let long = unique_name(&"x".repeat(200));
        assert!(long.len() <= MAX_IDENTIFIER_LEN, "{long}");
        assert!(long.starts_with("xxxx"));
        for name in [&a, &b, &long, &unique_name("")] {
            assert!(name.bytes().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_')), "{name}");
        }
    }

    #[test]
    fn urls_are_rebuilt_with_the_database_replaced() {
        let inner =
            Inner::external("postgres://u:p%40ss@db.example:5433/app?sslmode=disable&dbname=x", "url")
                .unwrap();
        assert_eq!(inner.admin_db, "x");
        assert_eq!(inner.url("t_1"), "postgresql://u:p%40ss@db.example:5433/t_1?sslmode=disable");
        assert_eq!(inner.redacted_url("t_1"), "postgresql://u:***@db.example:5433/t_1?sslmode=disable");
        let inner = Inner::external("host=localhost dbname = app password='a b\\'c' user=me", "url").unwrap();
        assert_eq!(inner.url("t_1"), "postgresql://me:a%20b%27c@localhost/t_1");
        let inner = Inner::external("postgresql:///app?host=/run/postgresql", "url").unwrap();
        assert_eq!(inner.url("t_1"), "postgresql:///t_1?host=/run/postgresql");
        for url in [inner.url("t_1"), Inner::external("host=h password=x", "url").unwrap().url("t_1")] {
            ConnStr::parse(&url).unwrap();
        }
    }

    #[test]
    fn passwords_are_redacted() {
        let server = TestServer {
            inner: Arc::new(Inner::external("postgres://u:hunter2@localhost/app", "url").unwrap()),
        };
        let db = TestDatabase { name: String::new(), server: Arc::clone(&server.inner) };
        let debug = format!("{server:?} {db:?} {:?}", server.config("x"));
        // The database is never created; keep Drop from trying to remove it.
        std::mem::forget(db);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("postgresql://u:***@localhost:5432/app"), "{debug}");
        assert!(server.url("x").contains("hunter2"));
        let err = TestServer::external("postgres://u@h/d?PASSWORD=hunter2").unwrap_err();
        assert!(err.to_string().contains("`PASSWORD` must be written in lower case"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
