//! SIGINT and SIGTERM while a command runs. The first signal cancels the
//! statement running on the server (a `transaction none` revision is then
//! recorded as failed at that statement, a transactional one rolls back) and
//! stops the run before its next step; the command then ends as it would on
//! any failure, having recorded what it knows. A second signal exits at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio_postgres::CancelToken;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::BoxError;
use crate::{Hooks, Step};

/// The exit code after a second signal: 128 + SIGINT, as shells report it.
pub(crate) const INTERRUPTED: u8 = 130;

/// The connections a command opened, and whether it was interrupted.
#[derive(Default)]
pub(crate) struct Interrupt {
    /// Each connection's cancel token, with the TLS connector its cancel request needs.
    tokens: Mutex<Vec<(CancelToken, Option<MakeRustlsConnect>)>>,
    interrupted: AtomicBool,
}

impl Interrupt {
    /// Remembers a connection, to cancel its statement on a signal.
    pub(crate) fn register(&self, token: CancelToken, tls: Option<MakeRustlsConnect>) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.push((token, tls));
        }
    }

    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Waits for signals: cancels on the first, returns on the second.
    pub(crate) async fn watch(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            // Without signal handlers the default behaviour stays: never return.
            return std::future::pending().await;
        };
        let mut next = async || {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        };
        let name = next().await;
        self.interrupted.store(true, Ordering::SeqCst);
        eprintln!(
            "pgskein: {name}: cancelling the running statement and stopping after it; \
             what ran is recorded (signal again to exit at once)"
        );
        let tokens = self.tokens.lock().map(|t| t.clone()).unwrap_or_default();
        for (token, tls) in tokens {
            let cancelled = match tls {
                Some(tls) => token.cancel_query(tls).await,
                None => token.cancel_query(tokio_postgres::NoTls).await,
            };
            if let Err(e) = cancelled {
                eprintln!("pgskein: could not cancel the running statement: {e}");
            }
        }
        let name = next().await;
        eprintln!("pgskein: {name} again: exiting without waiting");
    }
}

/// Stops a run before it starts (an interrupt while it waited for the lock)
/// or before its next step, once the command was interrupted.
pub(crate) struct StopOnInterrupt(pub(crate) std::sync::Arc<Interrupt>);

#[async_trait]
impl Hooks for StopOnInterrupt {
    async fn before_run(&self, _plan: &crate::Plan) -> Result<(), BoxError> {
        if self.0.interrupted() {
            return Err("interrupted before the first step".into());
        }
        Ok(())
    }

    async fn before_step(&self, step: &Step) -> Result<(), BoxError> {
        if self.0.interrupted() {
            return Err(format!("interrupted before {} {}", step.direction, step.id).into());
        }
        Ok(())
    }
}
