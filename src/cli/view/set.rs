//! Views of the revision graph alone, no database: `heads`, `history`,
//! `graph` and `check`.

use serde_json::{Value, json};

use super::View;
use crate::cli::args::GraphFormat;
use crate::cli::render;
use crate::cli::ui::{Failure, Style, Ui, count, ids, list_or};
use crate::lint::LintWarning;
use crate::migration::Transaction;
use crate::{MigrationSet, Revision};

/// `heads`: the revisions nothing revises.
pub(crate) struct Heads<'a> {
    pub(crate) heads: Vec<&'a Revision>,
}

impl View for Heads<'_> {
    fn json(&self) -> Value {
        json!({
            "heads": self.heads.iter().map(|r| json!({
                "id": r.id().as_str(),
                "branch": r.branch(),
                "path": r.origin(),
            })).collect::<Vec<_>>(),
        })
    }

    fn text(&self, ui: &Ui) {
        for r in &self.heads {
            match r.branch() {
                Some(b) => ui.line(format!("{} (branch {b})", r.id())),
                None => ui.line(r.id().as_str()),
            }
        }
    }
}

/// `history`: every revision, newest first, beside a drawing of the graph.
pub(crate) struct History<'a> {
    pub(crate) set: &'a MigrationSet,
}

impl View for History<'_> {
    fn json(&self) -> Value {
        let mut newest_first: Vec<Value> = self.set.revisions().map(|r| revision_json(self.set, r)).collect();
        newest_first.reverse();
        json!({ "revisions": newest_first })
    }

    fn text(&self, ui: &Ui) {
        for line in render::history_text(self.set) {
            ui.line(line);
        }
    }
}

/// `graph`: the revisions and their edges, as a diagram's source in text.
pub(crate) struct Graph<'a> {
    pub(crate) set: &'a MigrationSet,
    pub(crate) format: GraphFormat,
}

impl View for Graph<'_> {
    fn json(&self) -> Value {
        let mut edges = Vec::new();
        for r in self.set.revisions() {
            for p in r.revises() {
                edges.push(json!({ "from": p.as_str(), "to": r.id().as_str(), "kind": "revises" }));
            }
            for d in r.depends_on() {
                edges.push(json!({ "from": d.as_str(), "to": r.id().as_str(), "kind": "depends_on" }));
            }
        }
        let nodes: Vec<Value> = self.set.revisions().map(|r| revision_json(self.set, r)).collect();
        json!({ "nodes": nodes, "edges": edges })
    }

    fn text(&self, ui: &Ui) {
        let text = match self.format {
            GraphFormat::Dot => render::dot(self.set),
            GraphFormat::Mermaid => render::mermaid(self.set),
        };
        ui.line(text.trim_end());
    }
}

/// A revision in `history` and `graph`.
fn revision_json(set: &MigrationSet, r: &Revision) -> Value {
    json!({
        "id": r.id().as_str(),
        "revises": ids(r.revises()),
        "depends_on": ids(r.depends_on()),
        "branch": r.branch(),
        "message": r.message(),
        "release": r.release().map(|v| v.to_string()),
        "transaction": if r.transaction() == Transaction::None { "none" } else { "transactional" },
        "kind": r.kind(),
        "reversible": r.down().is_some(),
        "repeatable": r.is_repeatable(),
        "head": set.heads().contains(&r.id()),
        "path": r.origin(),
    })
}

/// `check`: the set's size and heads, what is wrong with the graph, and
/// what the linter warns of.
pub(crate) struct Check<'a> {
    pub(crate) revisions: usize,
    pub(crate) heads: Vec<&'a str>,
    pub(crate) errors: Vec<String>,
    pub(crate) warnings: Vec<LintWarning>,
}

impl View for Check<'_> {
    fn json(&self) -> Value {
        json!({
            "revisions": self.revisions,
            "heads": self.heads,
            "errors": self.errors,
            "warnings": self.warnings.iter().map(|w| json!({
                "path": w.path,
                "line": w.line,
                "revision": w.revision.as_str(),
                "rule": w.rule.name(),
                "table": w.table,
                "message": w.message,
                "suggestion": w.suggestion,
            })).collect::<Vec<_>>(),
        })
    }

    fn text(&self, ui: &Ui) {
        for w in &self.warnings {
            let label = ui.paint(Style::Yellow, "warning");
            ui.line(format!("{}:{}: {label}: {} [{}]", w.path, w.line, w.message, w.rule));
            ui.line(format!("    instead, {}", w.suggestion));
        }
        for e in &self.errors {
            ui.line(format!("{}: {e}", ui.paint(Style::Red, "error")));
        }
        let graph = if self.errors.is_empty() { "the graph is valid" } else { "the graph has errors" };
        ui.line(format!(
            "{} revisions, {} ({}): {graph}; {}",
            self.revisions,
            count(self.heads.len(), "head"),
            list_or(&self.heads, "none"),
            count(self.warnings.len(), "warning"),
        ));
    }
}

/// `check` on a set that did not load: every error, with its causes in the
/// JSON document and on standard error in text.
pub(crate) struct LoadErrors {
    pub(crate) failures: Vec<Failure>,
}

impl View for LoadErrors {
    fn json(&self) -> Value {
        let messages: Vec<String> = self
            .failures
            .iter()
            .map(|f| f.causes.iter().fold(f.message.clone(), |m, c| format!("{m}: {c}")))
            .collect();
        json!({ "revisions": 0, "heads": [], "errors": messages, "warnings": [] })
    }

    fn text(&self, ui: &Ui) {
        for f in &self.failures {
            ui.failure(f);
        }
        ui.note(format!("{} loading the set", count(self.failures.len(), "error")));
    }
}
