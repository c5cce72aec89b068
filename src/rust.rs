//! Rust-coded revisions: the traits of their code (`RustMigration` for `up`,
//! `ReversibleMigration` for `down`), the `Conn` handle they receive,
//! and, in `revision`, `RustRevision`, the metadata that places one in the
//! graph next to SQL files. The executor owns the
//! transaction; the handle only runs statements inside it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::types::{BorrowToSql, ToSql};
use tokio_postgres::{Client, Row, RowStream, SimpleQueryMessage, Statement, ToStatement};

mod revision;
pub use revision::RustRevision;

pub(crate) use crate::error::BoxError;

/// A Rust-coded revision's code: its `up`. A revision made from it with
/// [`RustRevision::new`] is irreversible; to make one that can be reverted,
/// implement [`ReversibleMigration`] too and use [`RustRevision::reversible`],
/// or add a down closure with [`RustRevision::with_down`].
///
/// `up` runs inside the revision's transaction (or on a plain connection for
/// `Transaction::None` revisions); returning an error rolls the transaction back
/// and fails the run with [`Error::RustRevisionFailed`](crate::Error::RustRevisionFailed).
///
/// ```
/// use pgskein::error::BoxError;
/// use pgskein::rust::{Conn, ReversibleMigration, RustMigration, RustRevision};
///
/// struct SplitNames;
///
/// #[pgskein::async_trait]
/// impl RustMigration for SplitNames {
///     async fn up(&self, db: &Conn<'_>) -> Result<(), BoxError> {
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
///     async fn down(&self, db: &Conn<'_>) -> Result<(), BoxError> {
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
    async fn up(&self, db: &Conn<'_>) -> Result<(), BoxError>;
}

/// A Rust-coded revision that can be reverted: plans may downgrade through a
/// revision made from it with [`RustRevision::reversible`].
#[async_trait]
pub trait ReversibleMigration: RustMigration {
    /// Reverts the revision.
    async fn down(&self, db: &Conn<'_>) -> Result<(), BoxError>;
}

/// One direction of a Rust-coded revision, as a revision's [`Body::Rust`](crate::migration::Body::Rust)
/// holds it: the up, or the down, ready to run. Made by [`RustRevision`].
#[derive(Clone)]
pub struct RustCode(pub(crate) Arc<dyn Step>);

/// What [`RustCode`] runs.
#[async_trait]
pub(crate) trait Step: Send + Sync {
    async fn run(&self, db: &Conn<'_>) -> Result<(), BoxError>;
}

impl RustCode {
    pub(crate) async fn run(&self, db: &Conn<'_>) -> Result<(), BoxError> {
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

pub(crate) struct Up<M>(pub(crate) Arc<M>);
pub(crate) struct Down<M>(pub(crate) Arc<M>);
pub(crate) struct Closure(pub(crate) MigrationFn);

#[async_trait]
impl<M: RustMigration> Step for Up<M> {
    async fn run(&self, db: &Conn<'_>) -> Result<(), BoxError> {
        self.0.up(db).await
    }
}

#[async_trait]
impl<M: ReversibleMigration> Step for Down<M> {
    async fn run(&self, db: &Conn<'_>) -> Result<(), BoxError> {
        self.0.down(db).await
    }
}

#[async_trait]
impl Step for Closure {
    async fn run(&self, db: &Conn<'_>) -> Result<(), BoxError> {
        (self.0)(db).await
    }
}

/// The handle a Rust-coded revision runs its statements through: the
/// tokio-postgres query methods, on the connection that holds the open
/// transaction (or, for `Transaction::None`, a plain connection).
///
/// Do not run `COMMIT` or `ROLLBACK` through it: the revision and its ledger
/// row must commit together.
pub struct Conn<'a> {
    client: &'a Client,
    in_transaction: bool,
}

impl<'a> Conn<'a> {
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

pub(crate) type MigrationFn = Box<dyn for<'a> Fn(&'a Conn<'a>) -> MigrationFuture<'a> + Send + Sync>;
