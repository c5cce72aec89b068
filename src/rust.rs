//! Rust-coded revisions: a trait with `up` and an optional `down`, the
//! `MigrationDb` handle they receive, and `RustRevision`, the metadata that
//! places one in the graph next to SQL files. The executor owns the
//! transaction; the handle only runs statements inside it.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::types::{BorrowToSql, ToSql};
use tokio_postgres::{Client, Row, RowStream, SimpleQueryMessage, Statement, ToStatement};

use crate::id::{Checksum, RevisionId};
use crate::migration::{Body, Revision, TxMode};

/// The error a Rust-coded revision returns: anything that is an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A Rust-coded revision's code: its `up`. A revision made from it with
/// [`RustRevision::new`] is irreversible; to make one that can be reverted,
/// implement [`ReversibleMigration`] too and use [`RustRevision::reversible`],
/// or add a down closure with [`RustRevision::with_down`].
///
/// `up` runs inside the revision's transaction (or on a plain connection for
/// `TxMode::None` revisions); returning an error rolls the transaction back
/// and fails the run with [`Error::RustRevisionFailed`](crate::Error::RustRevisionFailed).
///
/// ```
/// use pgskein::{BoxError, MigrationDb, ReversibleMigration, RustMigration, RustRevision};
///
/// struct SplitNames;
///
/// #[pgskein::async_trait]
/// impl RustMigration for SplitNames {
///     async fn up(&self, db: &MigrationDb<'_>) -> Result<(), BoxError> {
///         db.batch_execute("ALTER TABLE people ADD COLUMN first text, ADD COLUMN last text").await?;
///         for row in db.query("SELECT id, name FROM people", &[]).await? {
///             let (id, name): (i64, String) = (row.get(0), row.get(1));
///             let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
///             db.execute("UPDATE people SET first = $1, last = $2 WHERE id = $3", &[&first, &last, &id]).await?;
///         }
///         Ok(())
///     }
/// }
///
/// #[pgskein::async_trait]
/// impl ReversibleMigration for SplitNames {
///     async fn down(&self, db: &MigrationDb<'_>) -> Result<(), BoxError> {
///         db.batch_execute("ALTER TABLE people DROP COLUMN first, DROP COLUMN last").await?;
///         Ok(())
///     }
/// }
///
/// let revision = RustRevision::reversible("0002_split_names", "1", SplitNames).revises(["0001_people"]);
/// ```
#[async_trait]
pub trait RustMigration: Send + Sync + 'static {
    /// Applies the revision.
    async fn up(&self, db: &MigrationDb<'_>) -> Result<(), BoxError>;
}

/// A Rust-coded revision that can be reverted: plans may downgrade through a
/// revision made from it with [`RustRevision::reversible`].
#[async_trait]
pub trait ReversibleMigration: RustMigration {
    /// Reverts the revision.
    async fn down(&self, db: &MigrationDb<'_>) -> Result<(), BoxError>;
}

/// One direction of a Rust-coded revision, as a revision's [`Body::Rust`]
/// holds it: the up, or the down, ready to run. Made by [`RustRevision`].
#[derive(Clone)]
pub struct RustCode(Arc<dyn Step>);

/// What [`RustCode`] runs.
#[async_trait]
trait Step: Send + Sync {
    async fn run(&self, db: &MigrationDb<'_>) -> Result<(), BoxError>;
}

impl RustCode {
    pub(crate) async fn run(&self, db: &MigrationDb<'_>) -> Result<(), BoxError> {
        self.0.run(db).await
    }
}

impl PartialEq for RustCode {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RustCode {}

impl std::fmt::Debug for RustCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RustCode")
    }
}

struct Up<M>(Arc<M>);
struct Down<M>(Arc<M>);
struct Closure(MigrationFn);

#[async_trait]
impl<M: RustMigration> Step for Up<M> {
    async fn run(&self, db: &MigrationDb<'_>) -> Result<(), BoxError> {
        self.0.up(db).await
    }
}

#[async_trait]
impl<M: ReversibleMigration> Step for Down<M> {
    async fn run(&self, db: &MigrationDb<'_>) -> Result<(), BoxError> {
        self.0.down(db).await
    }
}

#[async_trait]
impl Step for Closure {
    async fn run(&self, db: &MigrationDb<'_>) -> Result<(), BoxError> {
        (self.0)(db).await
    }
}

/// The handle a Rust-coded revision runs its statements through: the
/// tokio-postgres query methods, on the connection that holds the open
/// transaction (or, for `TxMode::None`, a plain connection).
///
/// Do not run `COMMIT` or `ROLLBACK` through it: the revision and its ledger
/// row must commit together.
pub struct MigrationDb<'a> {
    client: &'a Client,
    in_transaction: bool,
}

impl<'a> MigrationDb<'a> {
    pub(crate) fn new(client: &'a Client, in_transaction: bool) -> Self {
        Self { client, in_transaction }
    }

    /// Whether the revision runs inside a transaction.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// See [`Client::execute`].
    pub async fn execute<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error>
    where
        T: ?Sized + ToStatement,
    {
        self.client.execute(statement, params).await
    }

    /// See [`Client::query`].
    pub async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error>
    where
        T: ?Sized + ToStatement,
    {
        self.client.query(statement, params).await
    }

    /// See [`Client::query_one`].
    pub async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error>
    where
        T: ?Sized + ToStatement,
    {
        self.client.query_one(statement, params).await
    }

    /// See [`Client::query_opt`].
    pub async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error>
    where
        T: ?Sized + ToStatement,
    {
        self.client.query_opt(statement, params).await
    }

    /// See [`Client::query_raw`]: rows as a stream, for large results.
    pub async fn query_raw<T, P, I>(
        &self,
        statement: &T,
        params: I,
    ) -> Result<RowStream, tokio_postgres::Error>
    where
        T: ?Sized + ToStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        self.client.query_raw(statement, params).await
    }

    /// See [`Client::prepare`].
    pub async fn prepare(&self, query: &str) -> Result<Statement, tokio_postgres::Error> {
        self.client.prepare(query).await
    }

    /// See [`Client::batch_execute`]: several statements, no parameters.
    pub async fn batch_execute(&self, query: &str) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(query).await
    }

    /// See [`Client::simple_query`].
    pub async fn simple_query(&self, query: &str) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
        self.client.simple_query(query).await
    }
}

/// The future a migration closure returns: `Box::pin(async move { ... })`.
pub type MigrationFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

type MigrationFn = Box<dyn for<'a> Fn(&'a MigrationDb<'a>) -> MigrationFuture<'a> + Send + Sync>;

/// A Rust-coded revision's place in the graph: id, parents, transaction mode,
/// and a version string that stands in for a checksum. Change the version when
/// you change what the code does: applied revisions are compared by it.
///
/// ```
/// use pgskein::{MigrationSet, RustRevision};
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
    id: String,
    version: String,
    revises: Vec<String>,
    depends_on: Vec<String>,
    branch: Option<String>,
    message: Option<String>,
    tx: TxMode,
    up: RustCode,
    down: Option<RustCode>,
    origin: String,
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
        F: for<'a> Fn(&'a MigrationDb<'a>) -> MigrationFuture<'a> + Send + Sync + 'static,
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
            tx: TxMode::Transactional,
            up,
            down: None,
            origin: format!("{}:{}", at.file(), at.line()),
        }
    }

    /// Makes the revision reversible with `down` as its down (replacing the
    /// down of a [`ReversibleMigration`], if it had one).
    pub fn with_down<F>(mut self, down: F) -> Self
    where
        F: for<'a> Fn(&'a MigrationDb<'a>) -> MigrationFuture<'a> + Send + Sync + 'static,
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
        self.tx = TxMode::None;
        self
    }

    /// Validates the ids and makes the graph node.
    pub(crate) fn into_revision(self) -> Result<Revision, crate::Error> {
        let bad = |reason: String| crate::Error::Parse {
            path: self.origin.clone(),
            line: None,
            kind: crate::ParseErrorKind::BadFileName(reason),
        };
        let id = RevisionId::new(self.id.clone()).map_err(bad)?;
        let ids =
            |list: &[String]| list.iter().map(|s| RevisionId::new(s.clone())).collect::<Result<Vec<_>, _>>();
        let revises = ids(&self.revises).map_err(bad)?;
        let depends_on = ids(&self.depends_on).map_err(bad)?;
        Ok(Revision {
            checksum: Checksum::of_bytes(format!("rust\n{}\n{}", self.id, self.version).as_bytes()),
            id,
            revises,
            depends_on,
            branch: self.branch,
            message: self.message,
            release: None,
            tx: self.tx,
            up: Body::Rust(self.up),
            up_line: 0,
            down: self.down.map(Body::Rust),
            down_line: 0,
            verify: None,
            origin: self.origin,
            lock_timeout: None,
            statement_timeout: None,
            repeatable: false,
        })
    }
}
