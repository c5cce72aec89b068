//! # pgskein
//!
//! Embeddable PostgreSQL migrations for Rust services: plain SQL revision files
//! bundled into the binary, arranged as a revision graph (branches, merges,
//! `depends_on`), upgraded and downgraded to any target under an advisory lock,
//! with checksums, an audit log and verify sections.
//!
//! ## Quick start
//!
//! ```no_run
//! static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
//!
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, connection) =
//!     tokio_postgres::connect("host=localhost user=app dbname=app", tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let report = MIGRATIONS.run(&client).await?;
//! for step in &report.steps {
//!     println!("{} {} in {:?}", step.direction, step.id, step.duration);
//! }
//! # Ok(()) }
//! ```
//!
//! [`embed_migrations!`] reads `migrations/` while the crate compiles, with the
//! same parser as the runtime: a malformed file is a compile error naming the
//! file and line. Fifty replicas may call `run` at once: one takes the lock and
//! applies what is pending, the others wait, find nothing left, and return. A
//! database already at head costs one query and no lock, and nothing is parsed:
//! the set's digest was computed at compile time (see
//! [running](guide::running#what-a-start-at-head-does-not-do-parse)). The files
//! are parsed, once, when a run has work to do.
//!
//! ## Guide
//!
//! The [`guide`] module holds the user guide: [getting started](guide::getting_started),
//! [the file format](guide::file_format), [the graph and targets](guide::graph),
//! [running](guide::running), [connections](guide::connections), [locking](guide::locking),
//! [Rust-coded revisions](guide::rust_migrations), [hooks](guide::hooks),
//! [backfills](guide::backfills), [testing](guide::testing), [the command line](guide::cli)
//! and [operations](guide::operations).
//!
//! ## Layout
//!
//! The crate root holds the names of the path every user walks; the rest is
//! grouped in modules named after what they hold.
//!
//! | item | what it is |
//! |---|---|
//! | [`embed_migrations!`], [`Embedded`] | revision files read and checked at compile time |
//! | [`MigrationSet`], [`SetBuilder`], [`LazySet`] | loading revision files (embedded or from disk) and validating the graph, at once or when first needed |
//! | [`Migrator`], [`Config`], [`Db`] | running upgrades, downgrades, stamps; status; on a client, a pool or a pooled connection |
//! | [`Target`], [`Plan`], [`Step`] | targets and deterministic plans |
//! | [`Report`], [`StepReport`], [`Status`] | what a run did, what the database holds |
//! | [`Revision`], [`RevisionId`], [`Checksum`] | one revision, its id and its file's checksum |
//! | [`Error`] | every failure, with the revision and file it concerns |
//! | [`Hooks`] | callbacks around runs and steps (backups, metrics) |
//! | [`config`] | settings: transaction mode, lock mode, drift policies |
//! | [`backfill`] | batched, resumable data backfills attached to revisions |
//! | [`rust`] | Rust-coded revisions in the same graph as SQL files |
//! | [`migration`] | the revision model: bodies and their transaction mode |
//! | [`status`], [`report`] | status details, blocked revisions and their resolution; report details |
//! | [`preflight`], [`lint`] | pre-flight checks; warnings about statements that hold heavy locks for long |
//! | [`error`] | the error's parts: hook stages, parse error kinds, boxed errors of user code |
//! | `testing` | a throwaway PostgreSQL server, per-test databases, reversibility checks (feature `testing`) |
//! | `cli` | the operator commands of the `pgskein` binary, embeddable in a service's binary (feature `cli`) |
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `macros` (default) | [`embed_migrations!`] and, with `testing`, `#[pgskein::test]` |
//! | `testing` | `testing::TestServer` (a throwaway PostgreSQL), `MigratedDatabase` (a database at head per test), `#[pgskein::test]`, `assert_reversible` and catalog `Snapshot`s |
//! | `fuzzing` | internal entry points for the fuzz targets in `fuzz/`; not a stable API |
//! | `cli` | the `pgskein` binary and `cli::run_with`, to offer its commands from a service's own binary (see `docs/cli.md`) |
//!
//! ## Locking
//!
//! A run takes a session-level advisory lock keyed by the bookkeeping schema on
//! the one connection it uses; waiters poll `pg_try_advisory_lock` and log the
//! holder. Through a connection pooler (PgBouncer in transaction mode, the
//! Supabase and Neon poolers, RDS Proxy), recognised before anything is
//! changed, it takes the lease instead: a row of the bookkeeping schema with
//! an owner, an expiry and a fencing token that every ledger write proves
//! ([`config::LockMode`]). See `docs/locking.md`.
//!
//! ## Backfills
//!
//! A [`Backfill`](backfill::Backfill) is a named, batched data change attached to a revision: SQL
//! over a key range, or a Rust [`BackfillStep`](backfill::BackfillStep). Each batch commits together
//! with its checkpoint in the `backfills` table, so a crash resumes where it
//! stopped; batch sizes adapt to a target duration, with throttles and health
//! checks. A revision may `depends-on` a backfill and is not applied until the
//! backfill is done. See `docs/backfills.md`.
//!
//! ```no_run
//! use pgskein::backfill::Backfill;
//! use pgskein::{MigrationSet, Migrator};
//!
//! # async fn start(pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
//! let set = MigrationSet::builder()
//!     .dir("migrations")
//!     .backfill(
//!         Backfill::sql("documents_sha256_fill", "0003_enhance_documents")
//!             .table("documents")
//!             .key("id")
//!             .statement(
//!                 "UPDATE documents SET sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex') \
//!                  WHERE id >= $1 AND id < $2",
//!             ),
//!     )
//!     .build()?;
//! set.run(&pool).await?;
//! let backfills = set.backfills()?.spawn(&pool); // or `set.backfills()?.run(&pool).await?` to wait
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The examples of a `build.rs` show its whole `fn main`.
#![allow(clippy::needless_doctest_main)]

pub mod backfill;
pub mod build;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
#[cfg(any(feature = "cli", feature = "testing"))]
// Each of the two features uses a part of it.
#[cfg_attr(not(all(feature = "cli", feature = "testing")), allow(dead_code))]
mod connstr;
mod digest;
pub mod error;
mod executor;
mod graph;
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub mod guide;
mod hooks;
mod id;
mod ledger;
pub mod lint;
mod lock;
pub mod migration;
mod migrator;
mod offline;
mod plan;
mod pooler;
pub mod preflight;
mod quote;
pub mod report;
pub mod rust;
mod session;
mod source;
mod split;
mod state;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;

/// Internal functions for fuzz targets and property tests (feature `fuzzing`); not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    /// The statement splitter of `transaction none` bodies: each statement's
    /// text and the 1-based line of its first token.
    pub fn split(sql: &str) -> Vec<(String, usize)> {
        crate::split::split(sql).into_iter().map(|s| (s.text.to_owned(), s.line)).collect()
    }
}

pub use config::Config;
pub use error::Error;
pub use hooks::Hooks;
pub use id::{Checksum, RevisionId};
pub use migration::Revision;
pub use migrator::{Configured, Migrator};
pub use plan::{Plan, Step, Target};
pub use report::{Report, StepReport};
pub use session::Db;
#[cfg(feature = "macros")]
#[doc(hidden)]
pub use source::EmbeddedState;
#[cfg(feature = "macros")]
pub use source::{Embedded, EmbeddedFile};
pub use source::{LazySet, MigrationSet, SetBuilder};
pub use status::Status;

/// Embeds a directory of revision files at compile time, checked by the
/// runtime's own parser, as an [`Embedded`] value.
///
/// ```
/// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
/// # assert_eq!(MIGRATIONS.len(), 10);
/// ```
///
/// The path is relative to the crate's directory (where its `Cargo.toml` is);
/// `embed_migrations!()` means `embed_migrations!("migrations")`. Only the
/// `*.sql` files at the top of the directory are embedded, as at run time.
///
/// - **Checked while compiling.** Every file is parsed as [`MigrationSet`]
///   parses it at run time: a malformed file is a compile error that names the
///   file and line (every bad file, not only the first). The graph (parents,
///   cycles, heads) is checked when the set is built, since Rust-coded
///   revisions may join it.
/// - **Computed once, at compile time.** The value holds each file's bytes
///   and checksum and the set's digest: [`Embedded::digest`] costs nothing at
///   run time, and the files are parsed only when [`Embedded::set`] (or
///   [`Embedded::run`]) first needs them.
/// - **Rebuilt when a file changes.** Each file is embedded with
///   `include_bytes!`, so editing one rebuilds the crate. Cargo does not watch
///   the directory itself, so for a *new* file to rebuild the crate, add a
///   `build.rs` (no dependency needed):
///
///   ```no_run
///   fn main() {
///       println!("cargo:rerun-if-changed=migrations");
///   }
///   ```
///
///   In debug builds, [`Embedded`] warns at run time when the files on disk
///   differ from the embedded ones.
///
/// The expansion names `::pgskein`, so the dependency must keep that name.
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use pgskein_macros::embed_migrations;

/// Runs an async test against a fresh database at head of a migration set
/// (features `testing` and `macros`).
///
/// The test takes one argument, chosen by its type: a
/// `deadpool_postgres::Pool` or a `tokio_postgres::Client` connected to the
/// database, or the [`MigratedDatabase`](crate::testing::MigratedDatabase)
/// itself. The database is cloned from a template migrated once per set and
/// process (see [`testing::Template`]) on the
/// shared test server (`DATABASE_URL`, or a throwaway server), and dropped
/// after the test; when the test panics or returns an `Err`, it is kept and
/// its name printed, to look at.
///
/// ```no_run
/// #[pgskein::test]
/// async fn folders_start_empty(client: tokio_postgres::Client) {
///     let n: i64 = client.query_one("SELECT count(*) FROM folders", &[]).await.unwrap().get(0);
///     assert_eq!(n, 0);
/// }
/// ```
///
/// The migrations are `embed_migrations!("migrations")` unless the attribute
/// says otherwise:
///
/// - `#[pgskein::test(migrations = "db/migrations")]`: another directory,
///   embedded at compile time;
/// - `#[pgskein::test(migrations = crate::MIGRATIONS)]`: a static
///   [`Embedded`], a [`MigrationSet`] (e.g. in a `LazyLock`, written
///   `*crate::SET`) or any other [`Migrator`], for sets with Rust-coded
///   revisions, backfills or a [`Config`].
///
/// Each test runs on a current-thread tokio runtime of its own, as
/// `#[tokio::test]` does; it may return `()` or a `Result`.
#[cfg(all(feature = "testing", feature = "macros"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "testing", feature = "macros"))))]
pub use pgskein_macros::test;

/// Re-exported so Rust-coded revisions and backfill steps can use
/// `#[pgskein::async_trait]` without a dependency of their own.
pub use async_trait::async_trait;
/// Re-exported so users of [`MigrationSet::from_embedded`] can name the
/// directory type; `include_dir!` itself needs the `include_dir` dependency.
pub use include_dir;
