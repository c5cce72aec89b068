//! What the database says, typed: the bookkeeping format and digest, the
//! ledger's records with their states, and who holds the migration lock.
//! Pure data: `ledger` parses rows into these types where it reads them, so
//! no string or flag carries a revision's state through the rest of the code.

use std::fmt;

use crate::report::Direction;

/// Who held a migration or backfill lock when pgskein looked: a session
/// holding the advisory lock, or the process holding the migration lease.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockHolder {
    /// The holder's backend pid (`pg_stat_activity.pid`); for the lease, the
    /// process id of the holding process on its host.
    pub pid: i32,
    /// Its `application_name`.
    pub application_name: String,
    /// When its session started (`backend_start`), or when it took the lease,
    /// as PostgreSQL prints it.
    pub since: String,
    /// Its client address, or `local` for a Unix socket; for the lease, the
    /// name of the holding process's host.
    pub client: String,
    /// For the lease, its fencing token; `None` for a session holding the advisory lock.
    pub lease_token: Option<i64>,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lease_token {
            None => write!(
                f,
                "pid {} (application_name {:?}, client {}, session started {})",
                self.pid, self.application_name, self.client, self.since
            ),
            Some(token) => write!(
                f,
                "the lease (token {token}) of process {} on host {} (application_name {:?}, taken at {})",
                self.pid, self.client, self.application_name, self.since
            ),
        }
    }
}

/// What the fast path learned from `meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Meta {
    /// The bookkeeping tables do not exist yet.
    Missing,
    /// The recorded format, the oldest format that may use the tables, the
    /// digest of the applied set, and whether the digest triggers are in
    /// place (without them the digest may be stale and proves nothing).
    Present { format: i32, readable_by: i32, digest: String, trusted: bool },
}

impl Meta {
    /// True when the database provably holds exactly the applied set whose digest is `digest`.
    pub(crate) fn at(&self, digest: &str) -> bool {
        matches!(self, Meta::Present { digest: d, trusted: true, .. } if d == digest)
    }
}

/// Where a `transaction none` revision that blocks runs stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockedState {
    /// Recorded as started and never finished: the process running it died or
    /// lost its connection, or it is running right now (see [`Blocked::holder`](crate::status::Blocked::holder)).
    Running,
    /// One of its statements failed.
    Failed,
}

impl BlockedState {
    /// `running` or `failed`, as the ledger writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedState::Running => "running",
            BlockedState::Failed => "failed",
        }
    }
}

impl fmt::Display for BlockedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a ledger record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowState {
    Applied,
    /// A `transaction none` revision started in this direction and did not finish.
    Blocked(BlockedState, Direction),
}

/// A row of `applied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) revises: Vec<String>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) checksum: String,
    pub(crate) state: RowState,
    /// For a running revision, the 1-based statement it was about to run; for
    /// a failed one, the statement that failed.
    pub(crate) statement: Option<usize>,
    pub(crate) last_error: Option<String>,
    pub(crate) applied_at: String,
    /// The invalid indexes of the database when a `transaction none` revision started.
    pub(crate) invalid_before: Vec<u32>,
}

impl Record {
    /// An applied record, as planning without a database assumes.
    pub(crate) fn applied(id: &str, checksum: String) -> Self {
        Record {
            id: id.to_owned(),
            revises: Vec::new(),
            depends_on: Vec::new(),
            checksum,
            state: RowState::Applied,
            statement: None,
            last_error: None,
            applied_at: String::new(),
            invalid_before: Vec::new(),
        }
    }

    pub(crate) fn is_applied(&self) -> bool {
        self.state == RowState::Applied
    }
}

/// The database's side of a run, read in one round trip.
#[derive(Debug, Clone)]
pub(crate) struct LedgerState {
    pub(crate) meta: Meta,
    /// The rows of `applied`, oldest first.
    pub(crate) records: Vec<Record>,
    /// Another session holding the migration lock, when the read looked for one.
    pub(crate) holder: Option<LockHolder>,
}

impl LedgerState {
    /// A database pgskein never migrated.
    pub(crate) fn empty() -> Self {
        LedgerState { meta: Meta::Missing, records: Vec::new(), holder: None }
    }
}
