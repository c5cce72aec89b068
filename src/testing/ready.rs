//! Databases cloned ahead of demand from one template, by a background thread
//! with a runtime of its own (a test's runtime ends with the test, so it
//! cannot host work that outlives it).
//!
//! Invariant: every database this pool created is either handed out (and
//! then owned by a `MigratedDatabase`) or listed in `ready`; closing the pool
//! (when its template is dropped, or at process exit) drops the listed ones
//! after the clone in flight, if any, has finished.

use std::collections::VecDeque;
#[cfg(unix)]
use std::sync::Once;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio_postgres::Config;

use super::server::{execute_once, unique_name};
use super::template::clone_sql;

/// Consecutive failed clones after which the pool stops trying.
const MAX_FAILURES: u32 = 3;
/// How long one clone or drop may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long process exit waits for the pool to tidy up.
#[cfg(unix)]
const EXIT_WAIT: Duration = Duration::from_secs(10);

pub(super) struct ReadyPool {
    state: Mutex<State>,
    changed: Condvar,
    admin: Config,
    prefix: &'static str,
    template: String,
    strategy: &'static str,
}

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    target: usize,
    failures: u32,
    closing: bool,
    done: bool,
}

/// Every pool of the process, for the exit handler.
static POOLS: Mutex<Vec<Weak<ReadyPool>>> = Mutex::new(Vec::new());

impl ReadyPool {
    pub(super) fn start(
        admin: Config,
        prefix: &'static str,
        template: String,
        strategy: &'static str,
    ) -> Arc<ReadyPool> {
        let pool = Arc::new(ReadyPool {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            admin,
            prefix,
            template,
            strategy,
        });
        register_exit_handler();
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        drop(pools);
        let worker = Arc::clone(&pool);
        let spawned =
            std::thread::Builder::new().name("pgskein-prepare-databases".into()).spawn(move || worker.run());
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start the thread preparing test databases; cloning on demand");
            pool.lock().done = true;
        }
        pool
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_target(&self, target: usize) {
        let mut state = self.lock();
        state.target = target;
        state.failures = 0;
        self.changed.notify_all();
    }

    /// How many databases are ready.
    pub(super) fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    /// A ready database's name, if one is waiting.
    pub(super) fn take(&self) -> Option<String> {
        let mut state = self.lock();
        let name = state.ready.pop_front();
        if name.is_some() {
            self.changed.notify_all();
        }
        name
    }

    /// Asks the worker to drop what is ready and stop; returns at once.
    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    /// Closes and waits (at most `timeout`) until the worker has tidied up.
    #[cfg(unix)]
    fn close_and_wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        state.closing = true;
        self.changed.notify_all();
        while !state.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn run(self: Arc<Self>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::warn!(%error, "could not start a runtime to prepare test databases");
                self.lock().done = true;
                self.changed.notify_all();
                return;
            }
        };
        loop {
            let mut state = self.lock();
            while !state.closing && (state.ready.len() >= state.target || state.failures >= MAX_FAILURES) {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.closing {
                let names: Vec<String> = state.ready.drain(..).collect();
                drop(state);
                runtime.block_on(self.drop_all(&names));
                self.lock().done = true;
                self.changed.notify_all();
                return;
            }
            drop(state);

            let name = unique_name(self.prefix);
            let sql = clone_sql(&name, &self.template, self.strategy);
            let result = runtime.block_on(async {
                match tokio::time::timeout(STATEMENT_TIMEOUT, execute_once(&self.admin, &sql)).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("timed out after {STATEMENT_TIMEOUT:?}")),
                }
            });
            let mut state = self.lock();
            match result {
                Ok(()) => {
                    state.failures = 0;
                    state.ready.push_back(name);
                }
                Err(error) => {
                    state.failures += 1;
                    tracing::warn!(template = %self.template, %error, "could not prepare a test database");
                }
            }
            self.changed.notify_all();
        }
    }

    async fn drop_all(&self, names: &[String]) {
        for name in names {
            let sql = super::server::drop_database_sql(name);
            match tokio::time::timeout(STATEMENT_TIMEOUT, execute_once(&self.admin, &sql)).await {
                Ok(Ok(())) => tracing::debug!(database = %name, "dropped an unused prepared test database"),
                Ok(Err(error)) => {
                    tracing::warn!(database = %name, %error, "could not drop a prepared test database")
                }
                Err(_) => tracing::warn!(database = %name, "timed out dropping a prepared test database"),
            }
        }
    }
}

/// Elsewhere than on Unix, prepared databases left at exit stay on the server.
fn register_exit_handler() {
    #[cfg(unix)]
    {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: `close_pools_at_exit` is an `extern "C" fn()` that never unwinds.
            unsafe {
                libc::atexit(close_pools_at_exit);
            }
        });
    }
}

/// Drops the prepared databases nobody took. Registered after the throwaway
/// server's own exit handler, so it runs before the server stops.
#[cfg(unix)]
extern "C" fn close_pools_at_exit() {
    // Unwinding out of an `extern "C"` function aborts the process.
    let _ = std::panic::catch_unwind(|| {
        let pools: Vec<Arc<ReadyPool>> =
            POOLS.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
        for pool in &pools {
            pool.close();
        }
        for pool in &pools {
            pool.close_and_wait(EXIT_WAIT);
        }
    });
}
