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
//! use include_dir::{include_dir, Dir};
//! use pgskein::{MigrationSet, Migrator};
//!
//! static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
//!
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, connection) =
//!     tokio_postgres::connect("host=localhost user=app dbname=app", tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let report = MigrationSet::from_embedded(&MIGRATIONS)?.run(&client).await?;
//! for step in &report.steps {
//!     println!("{} {} in {:?}", step.direction, step.id, step.duration);
//! }
//! # Ok(()) }
//! ```
//!
//! Fifty replicas may call `run` at once: one takes the lock and applies what is
//! pending, the others wait, find nothing left, and return. A database already at
//! head costs one query and no lock.
//!
//! ## Layout
//!
//! | module | owns |
//! |---|---|
//! | [`MigrationSet`] | loading revision files (embedded or from disk) and validating the graph |
//! | [`Target`], [`Plan`] | targets and deterministic plans |
//! | [`Migrator`], [`Config`] | running upgrades, downgrades, stamps; status |
//! | [`Error`] | every failure, with the revision and file it concerns |
//! | [`build`] | the build-script helper |
//! | [`MigrationSet::lint`] | warnings about statements that hold heavy locks for long |
//! | [`Backfill`], [`BackfillHandle`] | batched, resumable data backfills attached to revisions |
//! | [`RustMigration`], [`RustRevision`] | Rust-coded revisions in the same graph as SQL files |
//! | [`Hooks`] | callbacks around runs and steps (backups, metrics) |
//! | [`SqlStyle`], [`Preflight`] | offline SQL scripts and pre-flight checks |
//! | `testing` | a throwaway PostgreSQL server, per-test databases, reversibility checks (feature `testing`) |
//! | `cli` | the operator commands of the `pgskein` binary, embeddable in a service's binary (feature `cli`) |
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `testing` | `testing::TestServer` (a throwaway PostgreSQL), `MigratedDatabase` (a database at head per test), `assert_reversible` and catalog `Snapshot`s |
//! | `fuzzing` | internal entry points for the fuzz targets in `fuzz/`; not a stable API |
//! | `cli` | the `pgskein` binary and `cli::run_with`, to offer its commands from a service's own binary (see `docs/cli.md`) |
//!
//! ## Locking
//!
//! A run takes a session-level advisory lock keyed by the bookkeeping schema on
//! the one connection it uses; waiters poll `pg_try_advisory_lock` and log the
//! holder. See `docs/locking.md`.
//!
//! ## Backfills
//!
//! A [`Backfill`] is a named, batched data change attached to a revision: SQL
//! over a key range, or a Rust [`BackfillStep`]. Each batch commits together
//! with its checkpoint in the `backfills` table, so a crash resumes where it
//! stopped; batch sizes adapt to a target duration, with throttles and health
//! checks. A revision may `depends-on` a backfill and is not applied until the
//! backfill is done. See `docs/backfills.md`.
//!
//! ```no_run
//! use pgskein::{Backfill, MigrationSet, Migrator};
//!
//! # async fn start(pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
//! let set = MigrationSet::builder()
//!     .dir("migrations")
//!     .backfill(Backfill::sql(
//!         "documents_sha256_fill",
//!         "0003_enhance_documents",
//!         "documents",
//!         "id",
//!         "UPDATE documents SET sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex') WHERE id >= $1 AND id < $2",
//!     ))
//!     .build()?;
//! set.run(&pool).await?;
//! let backfills = set.spawn_backfills(&pool); // or `set.run_backfills(&pool).await?` to wait
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod backfill;
pub mod build;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
#[cfg(any(feature = "cli", feature = "testing"))]
// Each of the two features uses a part of it.
#[cfg_attr(not(all(feature = "cli", feature = "testing")), allow(dead_code))]
mod connstr;
mod error;
mod executor;
mod graph;
mod hooks;
mod id;
mod ledger;
mod lint;
mod lock;
mod migration;
mod migrator;
mod offline;
mod plan;
mod preflight;
mod quote;
mod report;
mod rust;
mod session;
mod source;
mod split;
mod state;
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

pub use backfill::{
    Backfill, BackfillHandle, BackfillOutcome, BackfillReport, BackfillRun, BackfillState, BackfillStatus,
    BackfillStep, Batch, Health, HealthCheck, Progress,
};
pub use config::{Config, TransactionMode};
pub use error::{Error, ParseErrorKind};
pub use hooks::Hooks;
pub use id::{Checksum, RevisionId};
pub use lint::{LintRule, LintWarning};
pub use lock::LockMode;
pub use migration::{Body, Revision, TxMode};
pub use migrator::{Blocked, Configured, Db, Migrator, Resolution, Status, VerifyReport};
pub use offline::SqlStyle;
pub use plan::{Direction, DriftPolicy, Plan, Policy, Step, Target};
pub use preflight::{Preflight, Problem, ProblemKind};
pub use report::{Report, StepReport, Warning};
pub use rust::{BoxError, MigrationDb, MigrationFuture, RustMigration, RustRevision};
pub use source::{MigrationSet, SetBuilder};
pub use state::{BlockedState, LockHolder};

/// Re-exported so users can name the embedded directory type.
pub use include_dir;
