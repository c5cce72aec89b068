//! The throwaway server: its binaries, directory, processes and clean-up.
//!
//! Invariant: the server dies with the process that started it, however
//! that process ends: a watchdog in its own process group stops it and
//! removes its directory when its parent is gone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{DATABASE_URL, ServerOptions, nanos_since_epoch};

/// The superuser created by initdb, and the role tests connect as.
pub(super) const SUPERUSER: &str = "postgres";

/// Any port will do without TCP: nobody else can reach the private socket directory.
const PORT: u16 = 5432;

/// Starts tried with a new free TCP port, when another process took the one picked.
const TCP_ATTEMPTS: usize = 5;

/// sun_path is 108 bytes on Linux (104 on the BSDs), including the NUL.
const MAX_SOCKET_PATH: usize = 100;

/// Polls once a second whether the test process (`$1`, started at clock
/// tick `$2`) is still alive; once it is gone, stops the server whose
/// directory is `$3` and removes that directory. Stands in for the
/// atexit handler when the test process is killed. Start times and
/// zombie states are checked because a dead process can linger as a
/// zombie and its pid can be reused; the postmaster's working directory
/// is checked so that a stale pid file can never make it signal an
/// unrelated process.
const WATCHDOG: &str = r#"
trap '' HUP INT
alive() {
if [ ! -e "/proc/$1/stat" ]; then
    [ ! -d /proc/self ] && kill -0 "$1" 2>/dev/null
    return
fi
want=$2
s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null)
[ -n "$s" ] || return 1
set -- $s
[ "$1" != Z ] && [ "$1" != X ] && { [ -z "$want" ] || [ "${20}" = "$want" ]; }
}
while alive "$1" "$2"; do sleep 1; done
dir=$3
pm=$(sed -n 1p "$dir/data/postmaster.pid" 2>/dev/null)
ours() { [ ! -d /proc/self ] || [ "$(readlink "/proc/$1/cwd")" = "$dir/data" ]; }
if [ -n "$pm" ] && alive "$pm" && ours "$pm"; then
kill -QUIT "$pm" 2>/dev/null
n=0
while alive "$pm" && [ $n -lt 50 ]; do sleep 0.2 2>/dev/null || sleep 1; n=$((n + 1)); done
alive "$pm" && kill -KILL "$pm" 2>/dev/null
fi
rm -rf "$dir"
"#;

/// A running throwaway server.
pub(super) struct Instance {
    pub(super) dir: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) port: u16,
    /// Whether it listens on `127.0.0.1:port` too.
    pub(super) tcp: bool,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<User>,
    /// The process that started the server, and alone may stop it.
    pub(super) owner_pid: u32,
    /// The watchdog's pid, which is also its process group; `None` once
    /// cleaned up.
    watchdog: Mutex<Option<u32>>,
}

#[derive(Clone, Copy, Debug)]
struct User {
    uid: u32,
    gid: u32,
}

impl Instance {
    pub(super) fn start(options: &ServerOptions) -> io::Result<Instance> {
        if !options.tcp {
            return Self::start_on(options, PORT);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Free now; another process may take it before the server binds it.
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
            match Self::start_on(options, port) {
                Err(e) if attempt < TCP_ATTEMPTS && e.to_string().contains("Address already in use") => {
                    tracing::debug!(port, "the port was taken meanwhile; trying another");
                }
                other => return other,
            }
        }
    }

    fn start_on(options: &ServerOptions, port: u16) -> io::Result<Instance> {
        let bin_dir = find_bin_dir()?;
        let run_as = unprivileged_user()?;
        let dir = create_dir(run_as)?;
        let watchdog = match spawn_watchdog(&dir) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let instance = Instance {
            socket_dir: dir.join("socket"),
            data_dir: dir.join("data"),
            dir,
            port,
            tcp: options.tcp,
            bin_dir,
            run_as,
            owner_pid: std::process::id(),
            watchdog: Mutex::new(Some(watchdog)),
        };
        match instance.init_and_start(options) {
            Ok(()) => {
                // Once per process, however many private servers start.
                static AT_EXIT: std::sync::Once = std::sync::Once::new();
                AT_EXIT.call_once(|| {
                    // SAFETY: registers a plain function taking no arguments.
                    if unsafe { libc::atexit(super::stop_at_exit) } != 0 {
                        tracing::warn!(
                            "could not register the clean-up of the test server at exit; \
                             its watchdog will do it"
                        );
                    }
                });
                tracing::info!(
                    dir = %instance.dir.display(),
                    "started a throwaway PostgreSQL server for tests"
                );
                Ok(instance)
            }
            Err(e) => {
                let message = format!(
                    "could not start a throwaway PostgreSQL server for tests ({e}); \
                     set {DATABASE_URL} to use an existing server instead\n\
                     --- end of the server log ---\n{}",
                    instance.log_tail()
                );
                instance.stop();
                Err(io::Error::new(e.kind(), message))
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn init_and_start(&self, options: &ServerOptions) -> io::Result<()> {
        let log = self.log_path();
        File::create(&log)?;
        fs::DirBuilder::new().mode(0o700).create(&self.socket_dir)?;
        if let Some(user) = self.run_as {
            // The server writes its log and socket as that user.
            std::os::unix::fs::chown(&log, Some(user.uid), Some(user.gid))?;
            std::os::unix::fs::chown(&self.socket_dir, Some(user.uid), Some(user.gid))?;
        }

        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(&self.data_dir).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        self.run(initdb)?;
        self.configure(options)?;

        let options = [
            "-k".to_owned(),
            // The setting is a list; quoting keeps the path one entry
            // whatever characters it holds.
            format!("\"{}\"", self.socket_dir.display().to_string().replace('"', "\"\"")),
            "-p".to_owned(),
            self.port.to_string(),
        ]
        .into_iter()
        .chain(
            [
                // No TCP unless asked for: the socket directory is the only way in.
                if self.tcp { "listen_addresses=127.0.0.1" } else { "listen_addresses=" },
                // Durability is pointless for a server removed at exit.
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                // Tests run in parallel, each with its own pools.
                "max_connections=300",
                "shared_buffers=128MB",
                "log_statement=none",
            ]
            .into_iter()
            .map(str::to_owned)
            .chain(options.settings.iter().map(|(name, value)| format!("{name}={value}")))
            .flat_map(|setting| ["-c".to_owned(), setting]),
        )
        // pg_ctl hands these to the server through `sh -c`.
        .map(|arg| shell_quote(&arg))
        .collect::<Vec<_>>()
        .join(" ");
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&self.data_dir)
            // With -l the server's output goes to the log, never to the
            // test's stdout or stderr: a server holding those pipes open
            // would hang `cargo test | tee ...` after the tests finish.
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "-s", "-o", &options, "start"]);
        self.run(pg_ctl)
    }

    /// Writes the TLS files and `pg_hba.conf` lines of `options` into
    /// the data directory, owned by the server's user.
    fn configure(&self, options: &ServerOptions) -> io::Result<()> {
        let write = |name: &str, content: &[u8], mode: u32| -> io::Result<()> {
            let path = self.data_dir.join(name);
            fs::write(&path, content)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            if let Some(user) = self.run_as {
                std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))?;
            }
            Ok(())
        };
        if let Some((cert, key)) = &options.tls {
            write("server.crt", cert.as_bytes(), 0o644)?;
            write("server.key", key.as_bytes(), 0o600)?;
            let conf = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
            let mut file = OpenOptions::new().append(true).open(self.data_dir.join("postgresql.conf"))?;
            std::io::Write::write_all(&mut file, conf.as_bytes())?;
        }
        if !options.hba.is_empty() {
            let path = self.data_dir.join("pg_hba.conf");
            let old = fs::read_to_string(&path)?;
            write("pg_hba.conf", format!("{}\n{old}", options.hba.join("\n")).as_bytes(), 0o600)?;
        }
        Ok(())
    }

    /// A command for one of the server binaries, as the unprivileged user
    /// when running as root (the binaries refuse to run as root).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.dir).stdin(Stdio::null());
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    /// Runs `command` to completion with its output appended to the log.
    fn run(&self, mut command: Command) -> io::Result<()> {
        let log = OpenOptions::new().append(true).open(self.log_path())?;
        let program = command.get_program().to_owned();
        let status = command
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .map_err(|e| context(e, format!("could not run {}", program.to_string_lossy())))?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("{} failed: {status}", program.to_string_lossy())))
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read(self.log_path()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        const MAX: u64 = 4096;
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        if text.trim().is_empty() { "(empty)".to_owned() } else { text }
    }

    /// `pg_ctl restart -m immediate`, with the options of the first start
    /// (pg_ctl keeps them in `postmaster.opts`).
    pub(super) fn restart_immediate(&self) -> io::Result<()> {
        if self.watchdog.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the server was stopped"));
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("-D").arg(&self.data_dir).arg("-l").arg(self.log_path()).args([
            "-m",
            "immediate",
            "-w",
            "-t",
            "120",
            "-s",
            "restart",
        ]);
        self.run(pg_ctl).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "could not restart the throwaway server ({e})\n--- end of the server log ---\n{}",
                    self.log_tail()
                ),
            )
        })
    }

    /// Stops the server, removes its directory and ends the watchdog.
    /// Idempotent.
    pub(super) fn stop(&self) {
        let Some(watchdog) = self.watchdog.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        if self.data_dir.join("postmaster.pid").exists() {
            let mut pg_ctl = self.command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-t", "30", "-s", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = pg_ctl.status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        let watchdog = watchdog as libc::pid_t;
        // SAFETY: signals the watchdog's own process group (it runs
        // `sleep` as a child), then reaps the watchdog, a child of this
        // process that nothing else waits for; both are plain syscalls on
        // a pid this process owns.
        unsafe {
            libc::kill(-watchdog, libc::SIGTERM);
            libc::waitpid(watchdog, std::ptr::null_mut(), 0);
        }
    }
}

/// A directory of server binaries: `PGSKEIN_PG_BIN` when set (to test
/// against another major version), else the first on PATH that has them
/// all, else Debian's layout, newest version first.
fn find_bin_dir() -> io::Result<PathBuf> {
    let has_all =
        |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|bin| is_executable(&dir.join(bin)));
    if let Some(dir) = std::env::var_os("PGSKEIN_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_all(&dir) {
            return Ok(dir);
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("PGSKEIN_PG_BIN={} has no initdb, pg_ctl and postgres", dir.display()),
        ));
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|dir| dir.is_absolute() && has_all(dir)) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.split('.').map(|part| part.parse().ok()).collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.into_iter().rev().map(|(_, dir)| dir).find(|dir| has_all(dir)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in \
                     /usr/lib/postgresql/*/bin: install PostgreSQL \
                     (e.g. `apt-get install postgresql`) \
                     or set {DATABASE_URL} to an existing server"
            ),
        )
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `None` unless running as root; then `postgres`, else `nobody`.
fn unprivileged_user() -> io::Result<Option<User>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    if let Some(user) = choose_user(&passwd) {
        return Ok(Some(user));
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "running as root, which PostgreSQL refuses, and there is no `postgres` or \
             `nobody` user in /etc/passwd to run it as instead; set {DATABASE_URL} to an \
             existing server"
        ),
    ))
}

/// `postgres` if it exists, else `nobody`, from /etc/passwd's text.
fn choose_user(passwd: &str) -> Option<User> {
    ["postgres", "nobody"].into_iter().find_map(|wanted| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != wanted {
                return None;
            }
            let uid = fields.nth(1)?.trim().parse().ok()?;
            let gid = fields.next()?.trim().parse().ok()?;
            Some(User { uid, gid }).filter(|user| user.uid != 0)
        })
    })
}

/// A fresh, private directory for one server, owned by the user the
/// server runs as.
fn create_dir(run_as: Option<User>) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "pgskein-test-{}-{}-{}",
        std::process::id(),
        nanos_since_epoch(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let temp = std::env::temp_dir();
    let usable = |base: &Path| {
        let socket = base.join(&name).join("socket/.s.PGSQL.65535");
        socket.as_os_str().len() <= MAX_SOCKET_PATH
            && !socket.as_os_str().as_encoded_bytes().contains(&b',')
            && run_as.is_none_or(|user| traversable(base, user))
    };
    // Memory first: cloning a template copies its files, and on a slow
    // disk that is most of a test's setup. A long or private TMPDIR would
    // make the socket path too long or the directory unreachable for the
    // server's user; a comma would make libpq (psql) read the socket
    // directory as a list of hosts.
    let base = match memory_dir() {
        Some(shm) if usable(&shm) => shm,
        _ if usable(&temp) => temp,
        _ => PathBuf::from("/tmp"),
    };
    let dir = base.join(&name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| context(e, format!("could not create {}", dir.display())))?;
    // The watchdog compares this with the postmaster's working directory,
    // which the kernel reports with symlinks resolved.
    let dir = match fs::canonicalize(&dir) {
        Ok(dir) => dir,
        Err(e) => {
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
    };
    if let Some(user) = run_as {
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)) {
            let _ = fs::remove_dir(&dir);
            return Err(e);
        }
    }
    Ok(dir)
}

/// `/dev/shm` when it is a tmpfs with room for a server and its
/// databases (a container's default 64 MiB is not).
#[allow(clippy::useless_conversion)] // the field types differ between targets
fn memory_dir() -> Option<PathBuf> {
    const ROOM: u64 = 1 << 30;
    let path = c"/dev/shm";
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer statvfs fills on success.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    (free >= ROOM).then(|| PathBuf::from("/dev/shm"))
}

/// Whether `user` can reach into `dir` (supplementary groups ignored).
fn traversable(dir: &Path, user: User) -> bool {
    dir.ancestors().all(|dir| {
        fs::metadata(dir).is_ok_and(|m| {
            let mode = m.mode();
            if m.uid() == user.uid {
                mode & 0o100 != 0
            } else if m.gid() == user.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        })
    })
}

fn spawn_watchdog(dir: &Path) -> io::Result<u32> {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("pgskein-test-watchdog")
        .arg(std::process::id().to_string())
        .arg(own_start_time().unwrap_or_default())
        .arg(dir)
        // Holding none of the test runner's pipes, so that it never
        // keeps `cargo test | ...` waiting, and no directory that could
        // be removed.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        // Out of the terminal's foreground group, so that Ctrl-C on the
        // tests does not also kill the watchdog before it cleans up.
        .process_group(0)
        .spawn()
        .map_err(|e| context(e, "could not start the watchdog process (/bin/sh)"))?;
    Ok(child.id())
}

/// This process's start time in clock ticks since boot (field 22 of
/// /proc/self/stat), which together with the pid identifies it.
fn own_start_time() -> Option<String> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let (_, after_comm) = stat.rsplit_once(") ")?;
    after_comm.split_whitespace().nth(19).map(str::to_owned)
}

fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_postgres_then_nobody_never_root() {
        let both = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n\
                    postgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
        let user = choose_user(both).unwrap();
        assert_eq!((user.uid, user.gid), (101, 104));
        let user = choose_user("nobody:x:65534:65533::/:/bin/false\n").unwrap();
        assert_eq!((user.uid, user.gid), (65534, 65533));
        assert!(choose_user("postgres:x:0:0::/:/bin/sh\nroot:x:0:0::/:/bin/sh\n").is_none());
    }

    #[test]
    fn quotes_for_the_shell() {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("it's a $dir")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a $dir");
    }
}
