//! Views of what a run would do: `plan`, the SQL script of `--sql`, and
//! `preflight`, with how a pre-flight problem is named and whether it
//! stops a run.

use serde_json::{Value, json};

use super::View;
use crate::Target;
use crate::cli::ui::{Style, Ui, count};
use crate::plan::Step;
use crate::preflight::ProblemKind;

/// `plan`: the steps a run towards `target` takes.
pub(crate) struct Plan<'a> {
    pub(crate) target: &'a Target,
    pub(crate) plan: crate::Plan,
}

impl View for Plan<'_> {
    fn json(&self) -> Value {
        json!({ "target": self.target.to_string(), "steps": steps_json(&self.plan.steps) })
    }

    fn text(&self, ui: &Ui) {
        if self.plan.is_empty() {
            ui.line(format!("nothing to do: the database is at {}", self.target));
        }
        for s in &self.plan.steps {
            ui.line(format!("{:<4} {}", s.direction, s.id));
        }
    }
}

fn steps_json(steps: &[Step]) -> Vec<Value> {
    steps.iter().map(|s| json!({ "id": s.id.as_str(), "direction": s.direction.to_string() })).collect()
}

/// `--sql`: the script a run towards `target` would execute.
pub(crate) struct Sql<'a> {
    pub(crate) target: &'a Target,
    pub(crate) single_transaction: bool,
    pub(crate) script: String,
}

impl View for Sql<'_> {
    fn json(&self) -> Value {
        json!({
            "target": self.target.to_string(),
            "style": if self.single_transaction { "single" } else { "per_revision" },
            "sql": self.script,
        })
    }

    fn text(&self, ui: &Ui) {
        ui.line(self.script.trim_end());
    }
}

/// `preflight`: the server, the plan, and what would get in its way.
pub(crate) struct Preflight<'a> {
    /// The connection, without its password.
    pub(crate) database: String,
    pub(crate) target: &'a Target,
    pub(crate) found: crate::preflight::Preflight,
}

impl Preflight<'_> {
    /// How many problems would stop the run.
    pub(crate) fn stopping(&self) -> usize {
        self.found.problems.iter().filter(|p| blocking(p.kind)).count()
    }
}

impl View for Preflight<'_> {
    fn json(&self) -> Value {
        json!({
            "server_version": self.found.server_version,
            "target": self.target.to_string(),
            "steps": steps_json(&self.found.plan.steps),
            "problems": self.found.problems.iter().map(|p| json!({
                "kind": problem_kind(p.kind),
                "blocking": blocking(p.kind),
                "revision": p.revision.as_ref().map(|r| r.as_str()),
                "message": p.message,
            })).collect::<Vec<_>>(),
            "ok": self.stopping() == 0,
        })
    }

    fn text(&self, ui: &Ui) {
        ui.key("database", &self.database);
        ui.key("server", &self.found.server_version);
        let steps: Vec<String> =
            self.found.plan.steps.iter().map(|s| format!("{} {}", s.direction, s.id)).collect();
        if steps.is_empty() {
            ui.key("plan", "nothing to do");
        } else {
            let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
            ui.key_list("plan", &format!("{}: ", count(steps.len(), "step")), &steps, Style::Bold);
        }
        for p in &self.found.problems {
            let label = if blocking(p.kind) {
                ui.paint(Style::Red, "problem")
            } else {
                ui.paint(Style::Yellow, "warning")
            };
            ui.line(format!("{label}: {} [{}]", p.message, problem_kind(p.kind)));
        }
        let stopping = self.stopping();
        ui.line(if stopping == 0 {
            ui.paint(Style::Green, "pre-flight: ok")
        } else {
            format!("pre-flight: {} would stop the run", count(stopping, "problem"))
        });
    }
}

/// Whether a pre-flight problem stops a run: a missing privilege or
/// extension would fail it part-way. Locks and long transactions are
/// reported but do not stop it: an ordinary query holds a lock for an
/// instant, and lock timeouts with retries deal with the lasting ones.
pub(crate) fn blocking(kind: ProblemKind) -> bool {
    match kind {
        ProblemKind::MissingPrivilege
        | ProblemKind::MissingExtension
        | ProblemKind::ExtensionNotCreatable => true,
        ProblemKind::LockHeld | ProblemKind::LongTransaction => false,
    }
}

pub(crate) fn problem_kind(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::MissingPrivilege => "missing_privilege",
        ProblemKind::MissingExtension => "missing_extension",
        ProblemKind::ExtensionNotCreatable => "extension_not_creatable",
        ProblemKind::LockHeld => "lock_held",
        ProblemKind::LongTransaction => "long_transaction",
    }
}
