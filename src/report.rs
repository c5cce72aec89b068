//! What a run reports: its steps, the drift it accepted, and its timing.
//! Shared vocabulary of the executor, the orchestrator, hooks and errors.

use std::time::Duration;

use crate::id::RevisionId;
use crate::plan::Direction;

/// What a run did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// The steps, in the order they ran.
    pub steps: Vec<StepReport>,
    /// Drift that the policy let through.
    pub warnings: Vec<Warning>,
    /// Whether the run returned from the fast path (nothing pending, no lock taken).
    pub fast_path: bool,
    /// How long the run waited for the migration lock.
    pub lock_wait: Duration,
    /// Wall time of the whole run.
    pub duration: Duration,
}

/// One step of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepReport {
    /// The revision.
    pub id: RevisionId,
    /// Up or down.
    pub direction: Direction,
    /// Time from sending the step to its last answer.
    pub duration: Duration,
    /// True for `stamp`: recorded without running the body.
    pub stamped: bool,
}

/// Drift a run accepted because of its [`DriftPolicy`](crate::DriftPolicy).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// Applied revisions unknown to the code that descend from its heads.
    Ahead {
        /// Their ids.
        unknown: Vec<String>,
    },
    /// Applied revisions unknown to the code that do not descend from its heads.
    Diverged {
        /// Their ids.
        unknown: Vec<String>,
    },
    /// Applied revisions whose checksum changed.
    ChecksumChanged {
        /// Their ids.
        changed: Vec<RevisionId>,
    },
}
