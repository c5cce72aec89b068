//! A real PgBouncer in front of a test server, for the tests of running
//! through a transaction pooler: [`PgBouncer::start`] runs Debian's
//! `pgbouncer` with an ini of its own on a free loopback port, in
//! transaction pooling mode, and stops it (by its pid) when dropped.
//!
//! When `pgbouncer` cannot be found, `start` prints a note and returns
//! `None`, so a test skips; with `CI=true` it panics instead: CI installs it
//! (`.ci/run`).

use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgskein::testing::TestServer;
use tokio_postgres::config::Host;

/// How long PgBouncer may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running PgBouncer, stopped when dropped.
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    dbname: String,
    user: String,
}

impl PgBouncer {
    /// PgBouncer in transaction pooling mode in front of `dbname` on
    /// `server`, or `None` (after a note on stdout) when it is not installed
    /// and not in CI.
    pub fn start(server: &TestServer, dbname: &str) -> Option<PgBouncer> {
        Self::start_with(server, dbname, &[])
    }

    /// As [`start`](PgBouncer::start), with more `[pgbouncer]` settings (they
    /// win over the defaults), e.g. `("default_pool_size", "4")` or
    /// `("pool_mode", "session")`.
    pub fn start_with(server: &TestServer, dbname: &str, settings: &[(&str, &str)]) -> Option<PgBouncer> {
        let binary = binary()?;
        let config = server.config(dbname);
        let run_as = run_as(&config);
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::spawn(&binary, &config, dbname, &user, run_as, settings) {
                Ok(bouncer) => return Some(bouncer),
                // Another process took the free port before PgBouncer bound it.
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("PgBouncer did not start:\n{log}"),
            }
        }
    }

    fn spawn(
        binary: &Path,
        config: &tokio_postgres::Config,
        dbname: &str,
        user: &str,
        run_as: Option<(u32, u32)>,
        settings: &[(&str, &str)],
    ) -> Result<PgBouncer, String> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("pgskein-pgbouncer-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

        let host = match config.get_hosts().first() {
            Some(Host::Unix(path)) => path.display().to_string(),
            Some(Host::Tcp(name)) => name.clone(),
            None => "localhost".to_owned(),
        };
        let server_port = config.get_ports().first().copied().unwrap_or(5432);
        let password = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
        let mut database = format!("{dbname} = host={host} port={server_port} dbname={dbname} user={user}");
        if let Some(p) = &password {
            database.push_str(&format!(" password='{}'", p.replace('\'', "''")));
        }
        let mut ini = vec![
            ("listen_addr", "127.0.0.1".to_owned()),
            ("listen_port", port.to_string()),
            ("unix_socket_dir", String::new()),
            ("auth_type", "trust".to_owned()),
            ("auth_file", dir.join("userlist.txt").display().to_string()),
            ("pool_mode", "transaction".to_owned()),
            ("max_client_conn", "500".to_owned()),
            ("default_pool_size", "20".to_owned()),
            ("ignore_startup_parameters", "extra_float_digits,options".to_owned()),
            ("logfile", dir.join("pgbouncer.log").display().to_string()),
            ("admin_users", user.to_owned()),
        ];
        for (key, value) in settings {
            ini.retain(|(k, _)| k != key);
            ini.push((key, (*value).to_owned()));
        }
        let mut text = format!("[databases]\n{database}\n\n[pgbouncer]\n");
        for (key, value) in &ini {
            text.push_str(&format!("{key} = {value}\n"));
        }
        let ini_path = dir.join("pgbouncer.ini");
        std::fs::write(&ini_path, text).unwrap();
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        std::fs::write(dir.join("pgbouncer.log"), "").unwrap();
        if let Some((uid, gid)) = run_as {
            for entry in ["", "pgbouncer.ini", "userlist.txt", "pgbouncer.log"] {
                std::os::unix::fs::chown(dir.join(entry), Some(uid), Some(gid)).unwrap();
            }
        }

        let mut command = Command::new(binary);
        command
            .arg(&ini_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // PgBouncer refuses to run as root: as the server's own user instead.
        if let Some((uid, gid)) = run_as {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let log = |dir: &Path| std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let text = format!("pgbouncer exited ({status}):\n{}", log(&dir));
                let _ = std::fs::remove_dir_all(&dir);
                return Err(text);
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(PgBouncer { child, dir, port, dbname: dbname.to_owned(), user: user.to_owned() });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pgbouncer did not listen on port {port} within {START_TIMEOUT:?}:\n{}", log(&dir));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port PgBouncer listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL that connects through PgBouncer to the database.
    pub fn url(&self) -> String {
        format!("postgresql://{}@127.0.0.1:{}/{}", self.user, self.port, self.dbname)
    }

    /// A connection config through PgBouncer.
    pub fn config(&self) -> tokio_postgres::Config {
        self.url().parse().unwrap()
    }

    /// Connects through PgBouncer, spawning the connection.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = self.config().connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SAFETY: signals our own child, which is not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pgbouncer binary: `PGSKEIN_PGBOUNCER`, else on PATH, else Debian's
/// `/usr/sbin/pgbouncer`. `None` with a note, outside CI, when there is none.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::var_os("PGSKEIN_PGBOUNCER")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path).map(|dir| dir.join("pgbouncer")))
        .chain([PathBuf::from("/usr/sbin/pgbouncer")])
        .find(|p| p.is_file());
    if found.is_none() {
        println!(
            "note: pgbouncer not found (install it: apt-get install pgbouncer); skipping this pooler test"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: pgbouncer must be installed (see .ci/run)"
        );
    }
    found
}

/// The user to run PgBouncer as when this process is root: the owner of
/// the throwaway server's socket directory (the server's own user), else
/// `postgres` or `nobody`.
fn run_as(config: &tokio_postgres::Config) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    if let Some(Host::Unix(dir)) = config.get_hosts().first() {
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.uid() != 0 {
                return Some((meta.uid(), meta.gid()));
            }
        }
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    ["postgres", "nobody"].iter().find_map(|wanted| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(wanted))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))?
        })
    })
}

/// The backend pid a simple query runs on (no named prepared statements,
/// which a transaction pooler does not keep across transactions).
async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    let messages = client.simple_query("SELECT pg_backend_pid()").await.unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_of_one_client_land_on_different_backends_through_pgbouncer() {
    let server = TestServer::shared().unwrap();
    let db = server.create_database("pgbouncer_smoke").await.unwrap();
    let Some(bouncer) = tokio::task::block_in_place(|| PgBouncer::start(server, db.name())) else { return };
    let a = bouncer.connect().await;
    let b = bouncer.connect().await;

    a.batch_execute("BEGIN").await.unwrap();
    let first = backend_pid(&a).await;
    a.batch_execute("COMMIT").await.unwrap();
    // B's transaction gets the one idle server connection, and holds it...
    b.batch_execute("BEGIN").await.unwrap();
    assert_eq!(backend_pid(&b).await, first, "the pool had one server connection");
    // ...so A's next transaction needs, and gets, another.
    a.batch_execute("BEGIN").await.unwrap();
    let second = backend_pid(&a).await;
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    assert_ne!(first, second, "one client's two transactions ran on two backends");

    let direct = db.connect().await.unwrap();
    let servers: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(servers >= 2, "PgBouncer holds {servers} server connections; its log:\n{}", bouncer.log());
    assert!(bouncer.url().contains(&format!("@127.0.0.1:{}/", bouncer.port())), "{}", bouncer.url());
    let rows = a.simple_query("SELECT 40 + 2").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("42")),
        "a query through the pooler: {rows:?}"
    );
    let pid = bouncer.child.id();
    drop((a, b));
    drop(bouncer);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "PgBouncer stopped with its handle");
}
