//! The guide: the pages of the repository's `docs/` directory, one module
//! each, with their links between pages and into the source rewritten for
//! rustdoc (by `pgskein-macros`; feature `macros`, on by default).
//!
//! | page | about |
//! |---|---|
//! | [`getting_started`] | Getting started: from an empty crate to a service that migrates itself. |
//! | [`file_format`] | The revision file format: directives, sections, checksums, load-time checks. |
//! | [`graph`] | The revision graph and targets: branches, merges, heads, releases. |
//! | [`running`] | Running migrations: transactions, failures, drift, the fast path. |
//! | [`connections`] | Connections: connection strings, TLS, poolers, secrets. |
//! | [`locking`] | Locking and many replicas: the advisory lock, waiters, poolers. |
//! | [`rust_migrations`] | Rust-coded revisions in the same graph as SQL files. |
//! | [`hooks`] | Hooks around runs and steps: backups, metrics, notifications. |
//! | [`backfills`] | Data backfills: batched, resumable, throttled. |
//! | [`testing`] | Testing: a throwaway PostgreSQL, a migrated database per test, reversibility checks. |
//! | [`cli`] | The command line, standalone and embedded in a service's binary. |
//! | [`operations`] | Operations runbook. |
//! | [`reliability`] | Reliability: what is tested and how. |
//! | [`compatibility`] | PostgreSQL versions. |
//! | [`benchmarks`] | Benchmarks against psql and the peers. |

#[doc = pgskein_macros::__guide_page!("docs/getting-started.md")]
pub mod getting_started {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/getting-started.md");
}

#[doc = pgskein_macros::__guide_page!("docs/file-format.md")]
pub mod file_format {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/file-format.md");
}

#[doc = pgskein_macros::__guide_page!("docs/graph.md")]
pub mod graph {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/graph.md");
}

#[doc = pgskein_macros::__guide_page!("docs/running.md")]
pub mod running {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/running.md");
}

#[doc = pgskein_macros::__guide_page!("docs/connections.md")]
pub mod connections {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/connections.md");
}

#[doc = pgskein_macros::__guide_page!("docs/locking.md")]
pub mod locking {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/locking.md");
}

#[doc = pgskein_macros::__guide_page!("docs/rust-migrations.md")]
pub mod rust_migrations {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/rust-migrations.md");
}

#[doc = pgskein_macros::__guide_page!("docs/hooks.md")]
pub mod hooks {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/hooks.md");
}

#[doc = pgskein_macros::__guide_page!("docs/backfills.md")]
pub mod backfills {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/backfills.md");
}

#[doc = pgskein_macros::__guide_page!("docs/testing.md")]
pub mod testing {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/testing.md");
}

#[doc = pgskein_macros::__guide_page!("docs/cli.md")]
pub mod cli {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/cli.md");
}

#[doc = pgskein_macros::__guide_page!("docs/operations.md")]
pub mod operations {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/operations.md");
}

#[doc = pgskein_macros::__guide_page!("docs/reliability.md")]
pub mod reliability {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/reliability.md");
}

#[doc = pgskein_macros::__guide_page!("docs/compatibility.md")]
pub mod compatibility {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/compatibility.md");
}

#[doc = pgskein_macros::__guide_page!("docs/benchmarks.md")]
pub mod benchmarks {
    // Rebuilds the documentation when the page changes.
    const _: &str = include_str!("../docs/benchmarks.md");
}
