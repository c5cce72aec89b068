//! Test support: a PostgreSQL server for tests, and databases on it.
//!
//! Available with the `testing` feature. Meant for test suites (this crate's
//! own and those of applications using it), not for production code.
//!
//! [`TestServer::shared`] gives the server of the current process:
//!
//! - when the `DATABASE_URL` environment variable is set (a
//!   `postgres://`/`postgresql://` URL or a `key=value` connection string),
//!   the server it names; the role it connects as needs the `CREATEDB`
//!   privilege, and the server must be PostgreSQL 13 or newer;
//! - otherwise a throwaway server, started from the machine's PostgreSQL
//!   binaries (`PGSKEIN_PG_BIN` when set, else `initdb`/`pg_ctl`/`postgres`
//!   on `PATH`, else `/usr/lib/postgresql/<newest>/bin`) on first use in a fresh directory (in `/dev/shm` when it has room, else the temporary directory), reachable only
//!   through a Unix socket in that directory, and removed (server and
//!   directory) when the process exits, even when it is killed.
//!
//! All tests of a process share that one server; each test creates its own
//! databases with [`TestServer::create_database`], so tests running in
//! parallel do not see each other's data. A [`TestDatabase`] drops its
//! database when it goes out of scope.
//!
//! Connections follow the TLS options of `DATABASE_URL` (libpq's `sslmode`,
//! `disable` to `verify-full`, with `sslrootcert`, `sslcert` and `sslkey`),
//! through rustls; the throwaway server is reached through its socket,
//! without TLS. [`TestServer::external`] takes a connection string of its own.
//!
//! On top of the server:
//!
//! - [`#[pgskein::test]`](crate::test): an async test that receives a
//!   database at head as a pool, a client or a [`MigratedDatabase`].
//! - [`MigratedDatabase`]: a database at head of a migrator for each test,
//!   cloned from a [`Template`] migrated once per migration set (and reused by
//!   later runs while the set is unchanged); [`MigratedSchema`] when the role
//!   cannot create databases.
//! - [`Snapshot`]: the schema of a database read from the catalogs, and a
//!   readable diff of two snapshots.
//! - [`assert_reversible`], [`assert_up_down_up`] and [`assert_single_head`]
//!   (and their `check_*` forms returning a [`ReversibilityError`]): one-line
//!   checks of a migration set for a test suite.
//!
//! ```no_run
//! use pgskein::testing::TestServer;
//!
//! #[tokio::test]
//! async fn creates_a_table() {
//!     let server = TestServer::shared().expect("a PostgreSQL server for tests");
//!     let db = server.create_database("creates_a_table").await.unwrap();
//!     let client = db.connect().await.unwrap();
//!     client.batch_execute("CREATE TABLE t (id int)").await.unwrap();
//! }
//! ```

mod attribute;
mod error;
mod ready;
mod reversible;
mod schema;
mod server;
mod snapshot;
mod template;

pub use error::{ReversibilityError, SetupError, error_chain};
pub use reversible::{
    assert_reversible, assert_single_head, assert_up_down_up, check_reversible, check_single_head,
    check_up_down_up,
};
pub use schema::MigratedSchema;
pub use server::{ServerOptions, TestDatabase, TestServer};
pub use snapshot::{ItemDiff, ObjectChange, ObjectDiff, Snapshot, SnapshotDiff};
pub use template::{MigratedDatabase, Template};

/// What `#[pgskein::test]` expands to calls; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use super::attribute::{TestArgument, TestMigrations, TestOutcome, run_test};
}
