//! The testing module's two error types: [`SetupError`] when a test cannot be
//! given its database or schema, and [`ReversibilityError`] when a migration
//! set fails one of the reversibility checks. Like the crate's own error,
//! causes are `#[source]`s and never repeated in the message; a schema
//! difference is part of the message, since it is the point of the report.

use std::io;

use crate::id::RevisionId;
use crate::plan::Direction;

use super::snapshot::SnapshotDiff;

/// Why a test could not be given a migrated database or schema.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// No server for tests: `DATABASE_URL` is invalid, or the throwaway server
    /// could not start.
    #[error("no PostgreSQL server for tests")]
    Server {
        /// The cause, from [`TestServer::shared`](super::TestServer::shared).
        #[source]
        source: io::Error,
    },
    /// A statement on the server failed.
    #[error("could not {operation} {object}")]
    Database {
        /// What was being done, e.g. `create database`.
        operation: &'static str,
        /// The database or schema concerned.
        object: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The migrations do not load: a file does not parse, or the graph is invalid.
    #[error("the migrations do not load")]
    Load {
        /// Why, naming the file or revisions.
        #[source]
        source: crate::Error,
    },
    /// Migrating the template database (or the fresh schema) failed.
    #[error("could not migrate {object} to head")]
    Migrate {
        /// The template database or schema.
        object: String,
        /// What the migrator reported.
        #[source]
        source: crate::Error,
    },
    /// Another process building the same template held its lock for too long.
    #[error("could not take the build lock of template {template}")]
    TemplateLock {
        /// The template database.
        template: String,
        /// The lock error.
        #[source]
        source: crate::Error,
    },
}

impl SetupError {
    pub(super) fn db(operation: &'static str, object: &str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let object = object.to_owned();
        move |source| SetupError::Database { operation, object, source }
    }
}

impl From<io::Error> for SetupError {
    fn from(source: io::Error) -> Self {
        SetupError::Server { source }
    }
}

/// A migration set that failed [`check_reversible`](super::check_reversible)
/// or [`check_up_down_up`](super::check_up_down_up).
///
/// The variants about schemas carry the difference, which the message prints
/// grouped by object: `-` lines were in the schema before, `+` lines are in
/// it after.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReversibilityError {
    /// A revision's down section left the schema different from what its up
    /// section found.
    #[error(
        "revision {revision}: its down section does not restore the schema its up section found \
         (- before the up, + after the down):\n{diff}"
    )]
    NotRestored {
        /// The revision.
        revision: RevisionId,
        /// Before its up (`-`) against after its down (`+`).
        diff: SnapshotDiff,
    },
    /// Applying a revision again after its down gave another schema than the
    /// first time: the down left something behind that the up builds on.
    #[error(
        "revision {revision}: applied again after its down, its up gives another schema than the first time \
         (- first up, + second up):\n{diff}"
    )]
    NotRepeatable {
        /// The revision.
        revision: RevisionId,
        /// After the first up (`-`) against after the second (`+`).
        diff: SnapshotDiff,
    },
    /// Downgrading from head to base left a schema different from the one the
    /// upgrade started from.
    #[error(
        "downgrading from head to base does not restore the schema the upgrade started from \
         (- before the upgrade, + after the downgrade):\n{diff}"
    )]
    BaseNotRestored {
        /// Before the upgrade (`-`) against after the downgrade (`+`).
        diff: SnapshotDiff,
    },
    /// Upgrading again after a downgrade to base gave another schema than the
    /// first upgrade.
    #[error(
        "upgrading again after a downgrade to base gives another schema than the first upgrade \
         (- first upgrade, + second upgrade):\n{diff}"
    )]
    HeadNotRepeatable {
        /// After the first upgrade (`-`) against after the second (`+`).
        diff: SnapshotDiff,
    },
    /// A revision has no down section, so it cannot be checked.
    #[error("revision {revision} ({path}) has no down section, so it cannot be reverted")]
    Irreversible {
        /// The revision.
        revision: RevisionId,
        /// Its file.
        path: String,
    },
    /// Applying or reverting a revision failed.
    #[error("the {direction} section of revision {revision} failed")]
    Step {
        /// The revision.
        revision: RevisionId,
        /// Which section.
        direction: Direction,
        /// What the migrator reported.
        #[source]
        source: crate::Error,
    },
    /// A whole upgrade or downgrade failed.
    #[error("{operation} failed")]
    Run {
        /// `upgrade to head`, `downgrade to base`, `planning` or `loading the migrations`.
        operation: &'static str,
        /// What the migrator reported.
        #[source]
        source: crate::Error,
    },
    /// A step touched another revision than the one under test, which happens
    /// when the database starts with revisions applied out of plan order.
    #[error(
        "expected to {direction} revision {expected} alone, but the migrator ran [{}]; start from an empty database",
        actual.iter().map(|id| id.as_str()).collect::<Vec<_>>().join(", ")
    )]
    UnexpectedSteps {
        /// The revision under test.
        expected: RevisionId,
        /// Up or down.
        direction: Direction,
        /// What ran instead.
        actual: Vec<RevisionId>,
    },
    /// Reading the catalog failed.
    #[error("could not take a snapshot of the schema")]
    Snapshot {
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be taken from the pool.
    #[error("could not get a connection from the pool")]
    Pool {
        /// The pool's error.
        #[source]
        source: deadpool_postgres::PoolError,
    },
}

/// An error and its sources on one line, as the `assert_*` functions print it:
/// handy in a test's failure message.
///
/// ```
/// let e = std::io::Error::other("disk full");
/// assert_eq!(pgskein::testing::error_chain(&e), "disk full");
/// ```
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
