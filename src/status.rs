//! What the database says about a migration set: [`Status`] (applied,
//! pending, heads, drift), the [`Blocked`] revisions that stop a run, who holds the
//! lock, what [`Migrator::verify`](crate::Migrator::verify) found, and how an
//! operator settles a blocked revision ([`Resolution`]).

use crate::id::RevisionId;
use crate::report::Direction;
pub use crate::state::{BlockedState, LockHolder};

/// What `status` reports.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Status {
    /// Applied revisions known to the code, in canonical order.
    pub applied: Vec<RevisionId>,
    /// The applied revisions that no applied revision builds on (Alembic's "current").
    pub current: Vec<RevisionId>,
    /// The code's heads.
    pub heads: Vec<RevisionId>,
    /// Revisions not yet applied, in the order `run` would apply them.
    pub pending: Vec<RevisionId>,
    /// `transaction none` revisions recorded as failed or running.
    pub blocked: Vec<Blocked>,
    /// Applied revisions unknown to the code.
    pub unknown: Vec<String>,
    /// Whether the unknown revisions descend from the code's heads.
    pub ahead: bool,
    /// Applied revisions whose file changed since.
    pub changed: Vec<RevisionId>,
    /// The newest release whose revisions are all applied, if the set declares releases.
    pub release: Option<semver::Version>,
}

/// A revision that blocks runs until resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blocked {
    /// Its id.
    pub id: String,
    /// Whether it failed or never finished.
    pub state: BlockedState,
    /// The direction it was going.
    pub direction: Direction,
    /// The 1-based statement that failed, or that was about to run.
    pub statement: Option<usize>,
    /// The recorded error.
    pub error: Option<String>,
    /// The session holding the migration lock when status was read: a
    /// `running` revision is then most likely running right now, not stuck.
    pub holder: Option<LockHolder>,
}

impl Blocked {
    /// True when the revision is recorded as running and a migrator holds the
    /// lock: it is being applied right now, not blocking anything yet.
    pub fn is_running_now(&self) -> bool {
        self.state == BlockedState::Running && self.holder.is_some()
    }
}

/// How an operator settles a failed or interrupted `transaction none` revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// Run it again from the statement that failed (after dropping an invalid
    /// index that statement left behind), then record it.
    Retry,
    /// The remaining statements were completed by hand: record it as applied.
    MarkApplied,
    /// What it did was undone by hand: forget it, so the next run applies it again.
    MarkReverted,
}

/// What [`Migrator::verify`](crate::Migrator::verify) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Applied revisions whose verify section ran, in canonical order.
    pub checked: Vec<RevisionId>,
    /// Those whose verify section failed: the revision and why.
    pub failed: Vec<(RevisionId, String)>,
}
