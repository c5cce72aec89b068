//! Offline SQL: a plan rendered as one script, bookkeeping included, for
//! review or for running with psql where pgskein cannot run. Values are
//! rendered as literals through the one quoting helper; identifiers through
//! the other.

use std::fmt::Write;

use crate::config::TransactionMode;
use crate::error::Error;
use crate::graph::Graph;
use crate::id::Checksum;
use crate::ledger::Ledger;
use crate::migration::{Body, Revision, Transaction};
use crate::plan::{Direction, check_single};
use crate::quote::{quote_ident, quote_literal};
use crate::source::MigrationSet;

impl MigrationSet {
    /// The offline script from a list of applied revision ids to `target`,
    /// without a database: what [`Migrator::sql`](crate::Migrator::sql) renders
    /// after reading the ledger. `schema` is the bookkeeping schema.
    pub fn render_sql<'a>(
        &self,
        applied: impl IntoIterator<Item = &'a str>,
        target: &crate::Target,
        schema: &str,
        style: TransactionMode,
    ) -> Result<String, Error> {
        let rec = self.reconcile_ids(applied);
        let steps = crate::plan::either_way(&self.graph, &rec, target)?;
        render(&self.graph, &steps, schema, style)
    }
}

/// Renders `steps`. The bookkeeping tables keep their digest by trigger, so
/// the script writes only the rows and events.
pub(crate) fn render(
    graph: &Graph,
    steps: &[(usize, Direction)],
    schema: &str,
    style: TransactionMode,
) -> Result<String, Error> {
    if style == TransactionMode::Single {
        check_single(graph, steps)?;
    }
    let revs: Vec<(&Revision, Direction)> = steps.iter().map(|&(i, d)| (&graph.revs[i], d)).collect();
    let s = quote_ident(schema);
    let mut out = String::new();
    let _ = writeln!(out, "-- pgskein offline script: {} step(s), bookkeeping in schema {s}", steps.len());
    let _ = writeln!(
        out,
        "-- Style: {style:?}. Review before running; stop on the first error (psql -v ON_ERROR_STOP=1)."
    );
    let _ = writeln!(out, "\n-- Bookkeeping tables (no-ops when they exist)");
    out.push_str(&Ledger::new(schema).bootstrap_sql());
    let _ = writeln!(out, "SET standard_conforming_strings = on;");
    for (rev, dir) in revs {
        step(&mut out, &s, rev, dir, style);
    }
    Ok(out)
}

/// One step of the script: its body (wrapped in a transaction for a
/// per-revision script) and its bookkeeping rows, in schema `s` (quoted).
fn step(out: &mut String, s: &str, rev: &Revision, dir: Direction, style: TransactionMode) {
    let _ = writeln!(out, "\n-- {dir} {} ({})", rev.id, rev.origin);
    let body = match dir {
        Direction::Up => Some(&rev.up),
        Direction::Down => rev.down.as_ref(),
    };
    let sql = match body {
        Some(Body::Sql(sql)) => sql.as_str(),
        Some(Body::Rust(_)) => {
            let _ = writeln!(
                out,
                "-- WARNING: Rust-coded revision {} cannot be rendered as SQL: this script neither runs nor records it.\n\
                 -- Steps after it may depend on it; apply it with pgskein.",
                rev.id
            );
            return;
        }
        None => "",
    };
    let wrap = style == TransactionMode::PerRevision && rev.tx == Transaction::Transactional;
    if wrap {
        out.push_str("BEGIN;\n");
    }
    out.push_str(sql.trim_end());
    out.push('\n');
    if let (Direction::Up, Some(verify)) = (dir, rev.verify.as_deref()) {
        let _ = writeln!(out, "-- verify (each statement's first column must be true):");
        for line in verify.trim_end().lines() {
            let _ = writeln!(out, "-- {line}");
        }
    }
    let id = quote_literal(rev.id.as_str());
    let checksum = rev.checksum.to_hex();
    // A repeatable revision applied again replaces its row; a versioned
    // one is inserted (a duplicate is then an error, as in a live run).
    if dir == Direction::Down || rev.repeatable {
        let _ = writeln!(out, "DELETE FROM {s}.\"applied\" WHERE id = {id};");
    }
    if dir == Direction::Up {
        let list = |ids: &[crate::RevisionId]| {
            let items: Vec<String> = ids.iter().map(|i| quote_literal(i.as_str())).collect();
            format!("ARRAY[{}]::text[]", items.join(", "))
        };
        let _ = writeln!(
            out,
            "INSERT INTO {s}.\"applied\" (id, revises, depends_on, checksum, checksum_version, kind, state, app_version)\n    \
             VALUES ({id}, {}, {}, {}, {}, {}, 'applied', 'offline');",
            list(&rev.revises),
            list(&rev.depends_on),
            quote_literal(&checksum),
            Checksum::VERSION,
            quote_literal(rev.kind()),
        );
    }
    let event = if dir == Direction::Up { "apply" } else { "revert" };
    let _ = writeln!(
        out,
        "INSERT INTO {s}.\"events\" (kind, revision, detail) VALUES ('{event}', {id}, '{{\"offline\": true}}');"
    );
    if wrap {
        out.push_str("COMMIT;\n");
    }
}
