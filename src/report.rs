//! What a run reports: its steps, the drift it accepted, and its timing.
//! Shared vocabulary of the planner, the executor, the orchestrator, hooks
//! and errors, with the direction of a step.

use std::fmt;
use std::time::Duration;

use crate::id::RevisionId;

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

/// Drift a run accepted because of its [`DriftPolicy`](crate::config::DriftPolicy).
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

/// Which way a step goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Apply the revision's up body.
    Up,
    /// Apply the revision's down body.
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}
