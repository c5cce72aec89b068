//! Views of what a command that changes the database did: a run
//! (`upgrade`, `downgrade`, `stamp`), `resolve` and `repair`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::View;
use crate::cli::ui::{Style, Ui, count, ids, list_or, ms_text, report_json};
use crate::report::Direction;
use crate::{Report, RevisionId, Target};

/// A run's steps and where the database is now. Its warnings go to
/// standard error before it, in both modes.
pub(crate) struct Ran<'a> {
    /// `upgrade`, `downgrade` or `stamp`.
    pub(crate) command: &'a str,
    pub(crate) target: &'a Target,
    pub(crate) report: &'a Report,
    /// Whether `--backup` asked for a dump.
    pub(crate) backup_asked: bool,
    /// The dump taken before the run; none when there was nothing to do.
    pub(crate) backup: Option<&'a Path>,
    /// The revisions the database is at; `None` for an `upgrade` that found
    /// the database at head without loading the set to name them, or when
    /// they could not be read after the run.
    pub(crate) current: Option<Vec<RevisionId>>,
}

impl Ran<'_> {
    /// The summary line: what was done in how long, or that nothing was.
    fn done(&self) -> String {
        let no_backup = if self.backup_asked { " (no backup taken)" } else { "" };
        let n = self.report.steps.len();
        if n == 0 {
            return format!("nothing to do for {}{no_backup}", self.target);
        }
        let verb = match self.command {
            "upgrade" => "applied",
            "downgrade" => "reverted",
            _ => "recorded",
        };
        let lock = if self.report.lock_wait >= Duration::from_millis(100) {
            format!(" (waited {} for the lock)", ms_text(self.report.lock_wait))
        } else {
            String::new()
        };
        format!("{verb} {} in {}{lock}", count(n, "revision"), ms_text(self.report.duration))
    }
}

impl View for Ran<'_> {
    fn json(&self) -> Value {
        let mut doc = report_json(self.report);
        doc["command"] = json!(self.command);
        doc["target"] = json!(self.target.to_string());
        doc["backup"] = json!(self.backup.map(|p| p.display().to_string()));
        doc["current"] = json!(self.current.as_deref().map(ids));
        doc
    }

    fn text(&self, ui: &Ui) {
        if self.current.is_none() && self.report.fast_path {
            let no_backup = if self.backup_asked { " (no backup taken)" } else { "" };
            let text = format!("nothing to do for {}: the database is at head{no_backup}", self.target);
            ui.line(ui.paint(Style::Green, &text));
            return;
        };
        if let Some(p) = self.backup {
            ui.line(format!("backup written to {}", p.display()));
        }
        let width = self.report.steps.iter().map(|s| s.id.as_str().len()).max().unwrap_or(0);
        for s in &self.report.steps {
            let what = if s.stamped { "stamped".to_owned() } else { ms_text(s.duration) };
            ui.line(format!("{:<4} {:<width$}  {}", s.direction, s.id, ui.paint(Style::Dim, &what)));
        }
        ui.line(ui.paint(Style::Green, &self.done()));
        match &self.current {
            Some(current) => ui.key("current", list_or(&ids(current), "base (nothing applied)")),
            None => ui.key("current", "unknown (it could not be read after the run)"),
        }
    }
}

/// `resolve`: how a blocked revision was settled.
pub(crate) struct Resolved<'a> {
    pub(crate) revision: &'a str,
    /// Which way the failed step was going.
    pub(crate) direction: Direction,
    /// `retry`, `mark_applied` or `mark_reverted`.
    pub(crate) resolution: &'static str,
    /// What that did, in words.
    pub(crate) outcome: &'static str,
}

impl View for Resolved<'_> {
    fn json(&self) -> Value {
        json!({
            "revision": self.revision,
            "direction": self.direction.to_string(),
            "resolution": self.resolution,
        })
    }

    fn text(&self, ui: &Ui) {
        ui.line(format!("{}: {}", self.revision, self.outcome));
    }
}

/// `repair`: the revisions whose current checksums were recorded.
pub(crate) struct Repaired {
    pub(crate) repaired: Vec<RevisionId>,
}

impl View for Repaired {
    fn json(&self) -> Value {
        json!({ "repaired": ids(&self.repaired) })
    }

    fn text(&self, ui: &Ui) {
        if self.repaired.is_empty() {
            ui.line("nothing to repair: every applied revision matches its file");
        } else {
            ui.line(format!("recorded new checksums: {}", ids(&self.repaired).join(", ")));
        }
    }
}
