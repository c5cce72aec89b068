//! What `#[pgskein::test]` expands to calls: a runtime per test, a database
//! at head cloned from the set's shared template, the test's argument made
//! from it by type, and the database kept when the test fails. Public only
//! for the generated code; not a stable API.

use std::future::Future;

use crate::migrator::Migrator;

use super::error::error_chain;
use super::template::{MigratedDatabase, Template};

/// Connections in the pool a test receives.
const POOL_SIZE: usize = 8;

/// Where a test's migrations come from: any [`Migrator`] (an `Embedded`
/// set, a `MigrationSet`, one with a `Config`).
#[diagnostic::on_unimplemented(
    message = "`migrations = ...` of #[pgskein::test] must be an `Embedded`, a `MigrationSet` or another `Migrator`",
    label = "not a migration set"
)]
pub trait TestMigrations: Sync {
    /// The shared template of these migrations; the error is a message.
    fn template(&self) -> impl Future<Output = Result<Template, String>>;
}

impl<M: Migrator> TestMigrations for M {
    async fn template(&self) -> Result<Template, String> {
        Template::shared(self).await.map_err(|e| error_chain(&e))
    }
}

/// What a `#[pgskein::test]` function may take: the database itself, a pool
/// or a client connected to it.
#[diagnostic::on_unimplemented(
    message = "a #[pgskein::test] function takes a `deadpool_postgres::Pool`, a `tokio_postgres::Client` or a `pgskein::testing::MigratedDatabase`, not `{Self}`",
    label = "unsupported argument type"
)]
pub trait TestArgument: Sized {
    /// Makes the argument from the test's database; takes the database out
    /// of `slot` only when the test is to own it.
    fn from_database(slot: &mut Option<MigratedDatabase>) -> impl Future<Output = Result<Self, String>>;
}

impl TestArgument for MigratedDatabase {
    async fn from_database(slot: &mut Option<MigratedDatabase>) -> Result<Self, String> {
        slot.take().ok_or_else(|| "the test database was already handed out".to_owned())
    }
}

impl TestArgument for deadpool_postgres::Pool {
    async fn from_database(slot: &mut Option<MigratedDatabase>) -> Result<Self, String> {
        let db = slot.as_ref().ok_or_else(|| "the test database was already handed out".to_owned())?;
        Ok(db.pool(POOL_SIZE))
    }
}

impl TestArgument for tokio_postgres::Client {
    async fn from_database(slot: &mut Option<MigratedDatabase>) -> Result<Self, String> {
        let db = slot.as_ref().ok_or_else(|| "the test database was already handed out".to_owned())?;
        db.connect().await.map_err(|e| format!("cannot connect to {}: {}", db.name(), error_chain(&e)))
    }
}

/// What a test function returns: `()` or a `Result`.
pub trait TestOutcome {
    /// Whether the test failed without panicking.
    fn failed(&self) -> bool;
}

impl TestOutcome for () {
    fn failed(&self) -> bool {
        false
    }
}

impl<T, E> TestOutcome for Result<T, E> {
    fn failed(&self) -> bool {
        self.is_err()
    }
}

/// Runs `test` on a current-thread runtime with a database at head of
/// `migrations`. Setup failures panic, which fails the test with the cause.
/// A test that panics or returns an error leaves its database behind,
/// named on stderr; one taking a `MigratedDatabase` owns it, and keeps it
/// only by panicking (or with `MigratedDatabase::keep`).
pub fn run_test<S, A, R, F, Fut>(migrations: &S, module: &str, name: &str, test: F) -> R
where
    S: TestMigrations + ?Sized,
    A: TestArgument,
    R: TestOutcome,
    F: FnOnce(A) -> Fut,
    Fut: Future<Output = R>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{module}::{name}: cannot start a tokio runtime: {e}"));
    runtime.block_on(async move {
        let template = migrations
            .template()
            .await
            .unwrap_or_else(|e| panic!("{module}::{name}: no migrated template database: {e}"));
        let database = template
            .database()
            .await
            .unwrap_or_else(|e| panic!("{module}::{name}: no test database: {}", error_chain(&e)));
        // Dropped while the test panics, the database is kept and named.
        let mut slot = Some(database);
        let argument = A::from_database(&mut slot).await.unwrap_or_else(|e| panic!("{module}::{name}: {e}"));
        let outcome = test(argument).await;
        if outcome.failed() {
            if let Some(database) = slot.take() {
                let kept = database.keep();
                eprintln!("pgskein: kept database {kept} of the failed test {module}::{name}");
            }
        }
        outcome
    })
}
