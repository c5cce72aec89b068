//! `RustRevision`: a Rust-coded revision's place in the graph (id, parents,
//! transaction mode, version), and its code in each direction. `source`
//! turns it into a graph node.

use std::panic::Location;
use std::sync::Arc;

use super::{Closure, Conn, Down, MigrationFuture, ReversibleMigration, RustCode, RustMigration, Up};
use crate::migration::Transaction;

/// A Rust-coded revision's place in the graph: id, parents, transaction mode,
/// and a version string that stands in for a checksum. Change the version when
/// you change what the code does: applied revisions are compared by it.
///
/// ```
/// use pgskein::rust::RustRevision;
/// use pgskein::MigrationSet;
///
/// let backfill = RustRevision::from_fn("0002_default_names", "1", |db| {
///     Box::pin(async move {
///         db.execute("UPDATE people SET name = 'anonymous' WHERE name IS NULL", &[]).await?;
///         Ok(())
///     })
/// })
/// .revises(["0001_people"]);
///
/// let set = MigrationSet::builder()
///     .file("0001_people.sql", b"-- pgskein: up\nCREATE TABLE people (id bigint, name text);\n-- pgskein: down\nDROP TABLE people;\n")
///     .rust(backfill)
///     .build()?;
/// assert_eq!(set.len(), 2);
/// # Ok::<(), pgskein::Error>(())
/// ```
pub struct RustRevision {
    pub(crate) id: String,
    pub(crate) version: String,
    pub(crate) revises: Vec<String>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) branch: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) tx: Transaction,
    pub(crate) up: RustCode,
    pub(crate) down: Option<RustCode>,
    pub(crate) origin: String,
}

impl std::fmt::Debug for RustRevision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustRevision")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl RustRevision {
    /// An irreversible revision running `migration`. Errors in the id are
    /// reported by [`SetBuilder::build`](crate::SetBuilder::build), naming the
    /// place this was called from.
    #[track_caller]
    pub fn new(id: impl Into<String>, version: impl Into<String>, migration: impl RustMigration) -> Self {
        Self::with_code(id, version, RustCode(Arc::new(Up(Arc::new(migration)))), Location::caller())
    }

    /// A revision that can be reverted, running `migration`'s `up` and `down`.
    #[track_caller]
    pub fn reversible(
        id: impl Into<String>,
        version: impl Into<String>,
        migration: impl ReversibleMigration,
    ) -> Self {
        let migration = Arc::new(migration);
        let mut rev =
            Self::with_code(id, version, RustCode(Arc::new(Up(migration.clone()))), Location::caller());
        rev.down = Some(RustCode(Arc::new(Down(migration))));
        rev
    }

    /// A revision whose `up` is a closure; add a down with [`with_down`](RustRevision::with_down).
    #[track_caller]
    pub fn from_fn<F>(id: impl Into<String>, version: impl Into<String>, up: F) -> Self
    where
        F: for<'a> Fn(&'a Conn<'a>) -> MigrationFuture<'a> + Send + Sync + 'static,
    {
        Self::with_code(id, version, RustCode(Arc::new(Closure(Box::new(up)))), Location::caller())
    }

    fn with_code(id: impl Into<String>, version: impl Into<String>, up: RustCode, at: &Location<'_>) -> Self {
        Self {
            id: id.into(),
            version: version.into(),
            revises: Vec::new(),
            depends_on: Vec::new(),
            branch: None,
            message: None,
            tx: Transaction::Transactional,
            up,
            down: None,
            origin: format!("{}:{}", at.file(), at.line()),
        }
    }

    /// Makes the revision reversible with `down` as its down (replacing the
    /// down of a [`ReversibleMigration`], if it had one).
    pub fn with_down<F>(mut self, down: F) -> Self
    where
        F: for<'a> Fn(&'a Conn<'a>) -> MigrationFuture<'a> + Send + Sync + 'static,
    {
        self.down = Some(RustCode(Arc::new(Closure(Box::new(down)))));
        self
    }

    /// The parents (none: a root).
    pub fn revises<S: Into<String>>(mut self, parents: impl IntoIterator<Item = S>) -> Self {
        self.revises = parents.into_iter().map(Into::into).collect();
        self
    }

    /// Extra ordering edges to revisions on other branches.
    pub fn depends_on<S: Into<String>>(mut self, deps: impl IntoIterator<Item = S>) -> Self {
        self.depends_on = deps.into_iter().map(Into::into).collect();
        self
    }

    /// A branch label.
    pub fn branch(mut self, label: impl Into<String>) -> Self {
        self.branch = Some(label.into());
        self
    }

    /// A one-line description.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Runs outside a transaction (the handle then has no open transaction).
    pub fn no_transaction(mut self) -> Self {
        self.tx = Transaction::None;
        self
    }
}
