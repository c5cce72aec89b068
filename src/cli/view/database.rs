//! Views of what the database holds: `status`, `current` and `verify`.

use serde_json::{Value, json};

use super::View;
use crate::RevisionId;
use crate::backfill::BackfillState;
use crate::cli::ui::{Style, Ui, count, ids, list_or};
use crate::status::{Blocked, VerifyReport};

/// `status`: where the database is against the set, and what needs attention.
pub(crate) struct Status {
    /// The connection, without its password.
    pub(crate) database: String,
    pub(crate) schema: String,
    pub(crate) status: crate::status::Status,
    /// How many revisions the set has.
    pub(crate) revisions: usize,
    /// Whether a revision of the set names a release: the text then shows the database's.
    pub(crate) has_releases: bool,
    pub(crate) backfills: Vec<crate::backfill::BackfillStatus>,
}

impl Status {
    /// A revision stuck part-way, changed checksums or a diverged history:
    /// what `status` exits with 4 for.
    pub(crate) fn needs_attention(&self) -> bool {
        let st = &self.status;
        let diverged = !st.unknown.is_empty() && !st.ahead;
        // A revision recorded as running while a migrator holds the lock is being applied now: not stuck.
        let stuck = st.blocked.iter().any(|b| !b.is_running_now());
        stuck || !st.changed.is_empty() || diverged
    }

    /// Applied revisions whose files changed, and applied revisions the set
    /// does not have.
    fn drift_text(&self, ui: &Ui) {
        let st = &self.status;
        if !st.changed.is_empty() {
            let text = format!("{} (edited since applied)", ids(&st.changed).join(", "));
            ui.key("changed", ui.paint(Style::Red, &text));
            ui.key("", format!("restore the files, or record the new checksums with {} repair", ui.bin));
        }
        if !st.unknown.is_empty() {
            let why = if st.ahead {
                "applied by a newer release: the database is ahead of the code"
            } else {
                "not in the code and not built on its heads: the histories have diverged"
            };
            let style = if st.ahead { Style::Yellow } else { Style::Red };
            ui.key("unknown", ui.paint(style, &format!("{} ({why})", st.unknown.join(", "))));
        }
    }
}

impl View for Status {
    fn json(&self) -> Value {
        let st = &self.status;
        json!({
            "database": self.database,
            "schema": self.schema,
            "current": ids(&st.current),
            "heads": ids(&st.heads),
            "applied": ids(&st.applied),
            "pending": ids(&st.pending),
            "release": st.release.as_ref().map(|v| v.to_string()),
            "blocked": st.blocked.iter().map(|b| json!({
                "id": b.id,
                "state": b.state.as_str(),
                "direction": b.direction.to_string(),
                "statement": b.statement,
                "error": b.error,
                "running_now": b.is_running_now(),
                "lock_holder_pid": b.holder.as_ref().map(|h| h.pid),
            })).collect::<Vec<_>>(),
            "changed": ids(&st.changed),
            "unknown": st.unknown,
            "ahead": st.ahead,
            "at_head": st.pending.is_empty() && st.blocked.is_empty(),
            "needs_attention": self.needs_attention(),
            "backfills": self.backfills.iter().map(super::backfill::json).collect::<Vec<_>>(),
        })
    }

    fn text(&self, ui: &Ui) {
        let st = &self.status;
        ui.key("database", &self.database);
        ui.key("schema", &self.schema);
        ui.key("current", list_or(&ids(&st.current), "base (nothing applied)"));
        ui.key("heads", list_or(&ids(&st.heads), "none"));
        if self.has_releases {
            let release =
                st.release.as_ref().map_or_else(|| "none fully applied".to_owned(), |v| v.to_string());
            ui.key("release", release);
        }
        ui.key("applied", format!("{} of {} revisions", st.applied.len(), self.revisions));
        if st.pending.is_empty() {
            ui.key("pending", ui.paint(Style::Green, "none: at head"));
        } else {
            ui.key_list("pending", &format!("{}: ", st.pending.len()), &ids(&st.pending), Style::Yellow);
        }
        for b in &self.backfills {
            let style = match b.state {
                BackfillState::Done => Style::Green,
                BackfillState::Failed => Style::Red,
                _ => Style::Yellow,
            };
            ui.key("backfill", ui.paint(style, &super::backfill::line(b)));
        }
        for b in &st.blocked {
            blocked_text(ui, b);
        }
        self.drift_text(ui);
    }
}

/// A revision being applied now, or one a failed run left blocked and
/// the command that settles it.
fn blocked_text(ui: &Ui, b: &Blocked) {
    if let (true, Some(h)) = (b.is_running_now(), &b.holder) {
        let at = b.statement.map(|s| format!(", at statement {s}")).unwrap_or_default();
        let text = format!(
            "{} is running now ({} {}{at}; the lock is held by pid {})",
            b.id, b.direction, b.state, h.pid
        );
        ui.key("running", ui.paint(Style::Yellow, &text));
        return;
    }
    let at = b.statement.map(|s| format!(" at statement {s}")).unwrap_or_default();
    let error = b.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
    ui.key("blocked", ui.paint(Style::Red, &format!("{} is {}{at}{error}", b.id, b.state)));
    ui.key("", format!("settle it: {} resolve {} --retry | --mark-applied | --mark-reverted", ui.bin, b.id));
}

/// `current`: the revisions the database is at.
pub(crate) struct Current {
    pub(crate) current: Vec<RevisionId>,
}

impl View for Current {
    fn json(&self) -> Value {
        json!({ "current": ids(&self.current) })
    }

    fn text(&self, ui: &Ui) {
        if self.current.is_empty() {
            ui.line("base");
        }
        for id in &self.current {
            ui.line(id.as_str());
        }
    }
}

/// `verify`: the applied revisions' verify sections, and which failed.
pub(crate) struct Verify {
    pub(crate) report: VerifyReport,
}

impl Verify {
    fn failure(&self, id: &RevisionId) -> Option<&str> {
        self.report.failed.iter().find(|(f, _)| f == id).map(|(_, why)| why.as_str())
    }
}

impl View for Verify {
    fn json(&self) -> Value {
        json!({
            "revisions": self.report.checked.iter().map(|id| json!({
                "id": id.as_str(),
                "ok": self.failure(id).is_none(),
                "error": self.failure(id),
            })).collect::<Vec<_>>(),
            "failed": self.report.failed.len(),
        })
    }

    fn text(&self, ui: &Ui) {
        for id in &self.report.checked {
            match self.failure(id) {
                None => ui.line(format!("{}  {id}", ui.paint(Style::Green, "ok    "))),
                Some(e) => ui.line(format!("{}  {id}: {e}", ui.paint(Style::Red, "FAILED"))),
            }
        }
        let sections = count(self.report.checked.len(), "verify section");
        ui.line(format!("{sections} run, {} failed", self.report.failed.len()));
    }
}
