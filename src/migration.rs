//! The revision model: what one migration is, independent of where it came
//! from. SQL files become `Revision`s through `source::parse`; Rust-coded
//! revisions (`rust::RustRevision`) are the other `Body` kind, with the same
//! metadata.

use std::fmt;

use crate::id::{Checksum, RevisionId};
use crate::rust::RustCode;

/// How a revision's body is wrapped in transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transaction {
    /// The body, its verify section and its ledger row commit together (the default).
    #[default]
    Transactional,
    /// `-- pgskein: transaction none`: the body runs statement by statement outside a
    /// transaction, for `CREATE INDEX CONCURRENTLY`, `VACUUM` and the like.
    None,
}

/// A revision's executable body.
#[derive(Clone)]
#[non_exhaustive]
pub enum Body {
    /// SQL text, run as one script (or statement by statement for `transaction none`).
    Sql(String),
    /// Rust code: one direction of a Rust-coded revision.
    Rust(RustCode),
}

impl Body {
    /// The SQL text of the body; `None` for Rust code.
    pub fn sql(&self) -> Option<&str> {
        match self {
            Body::Sql(sql) => Some(sql),
            Body::Rust(_) => None,
        }
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Body::Sql(a), Body::Sql(b)) => a == b,
            (Body::Rust(a), Body::Rust(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Body {}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Sql(sql) => write!(f, "Sql({} bytes)", sql.len()),
            Body::Rust(_) => f.write_str("Rust"),
        }
    }
}

/// One migration: a node of the revision graph.
///
/// Built from a file by [`MigrationSet::from_dir`](crate::MigrationSet::from_dir) or
/// [`MigrationSet::from_embedded`](crate::MigrationSet::from_embedded).
#[derive(Debug, Clone)]
pub struct Revision {
    pub(crate) id: RevisionId,
    pub(crate) revises: Vec<RevisionId>,
    pub(crate) depends_on: Vec<RevisionId>,
    pub(crate) branch: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) release: Option<semver::Version>,
    pub(crate) tx: Transaction,
    pub(crate) up: Body,
    pub(crate) up_line: usize,
    pub(crate) down: Option<Body>,
    pub(crate) down_line: usize,
    pub(crate) verify: Option<String>,
    pub(crate) checksum: Checksum,
    pub(crate) origin: String,
    /// `-- pgskein: repeatable`: re-applied whenever its checksum changes, after
    /// the versioned revisions; outside the graph's edges.
    pub(crate) repeatable: bool,
    /// `-- pgskein: lock-timeout`: overrides the run's lock timeout.
    pub(crate) lock_timeout: Option<std::time::Duration>,
    /// `-- pgskein: statement-timeout`: overrides the run's statement timeout.
    pub(crate) statement_timeout: Option<std::time::Duration>,
}

impl Revision {
    /// The revision id.
    pub fn id(&self) -> &RevisionId {
        &self.id
    }
    /// Parents: none for a root, one for a linear step, several for a merge.
    pub fn revises(&self) -> &[RevisionId] {
        &self.revises
    }
    /// Extra ordering edges to revisions on other branches.
    pub fn depends_on(&self) -> &[RevisionId] {
        &self.depends_on
    }
    /// The branch label, if the file declares one.
    pub fn branch(&self) -> Option<&str> {
        self.branch.as_deref()
    }
    /// The one-line description, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
    /// The release this revision belongs to, if declared.
    pub fn release(&self) -> Option<&semver::Version> {
        self.release.as_ref()
    }
    /// The transaction mode.
    pub fn transaction(&self) -> Transaction {
        self.tx
    }
    /// The up body.
    pub fn up(&self) -> &Body {
        &self.up
    }
    /// The down body; `None` makes the revision irreversible.
    pub fn down(&self) -> Option<&Body> {
        self.down.as_ref()
    }
    /// The verify section, run after `up` in the same transaction.
    pub fn verify(&self) -> Option<&str> {
        self.verify.as_deref()
    }
    /// Whether the revision is repeatable (`-- pgskein: repeatable`): applied
    /// after the versioned revisions and again whenever its file changes.
    pub fn is_repeatable(&self) -> bool {
        self.repeatable
    }
    /// The revision's own `lock_timeout`, if its file declares one.
    pub fn lock_timeout(&self) -> Option<std::time::Duration> {
        self.lock_timeout
    }
    /// The revision's own `statement_timeout`, if its file declares one.
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.statement_timeout
    }
    /// The checksum stored in the ledger when the revision is applied.
    pub fn checksum(&self) -> Checksum {
        self.checksum
    }
    /// Where the revision came from, e.g. `migrations/0001_extensions.sql`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// The kind stored in the ledger (`sql`, `repeatable` or `rust`).
    pub fn kind(&self) -> &'static str {
        match self.up {
            Body::Sql(_) if self.repeatable => "repeatable",
            Body::Sql(_) => "sql",
            Body::Rust(_) => "rust",
        }
    }
}
