//! Views of the revision files `new` and `merge` write.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::View;
use crate::cli::ui::Ui;

/// `new`: the revision file written, and what its header says.
pub(crate) struct Created {
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    pub(crate) revises: Vec<String>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) branch: Option<String>,
    pub(crate) no_transaction: bool,
    pub(crate) repeatable: bool,
    pub(crate) message: String,
}

impl View for Created {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "path": self.path.display().to_string(),
            "revises": self.revises,
            "depends_on": self.depends_on,
            "branch": self.branch,
            "transaction": if self.no_transaction { "none" } else { "transactional" },
            "repeatable": self.repeatable,
            "message": self.message,
        })
    }

    fn text(&self, ui: &Ui) {
        let parent = if self.repeatable {
            "repeatable".to_owned()
        } else if self.revises.is_empty() {
            "a new root".to_owned()
        } else {
            format!("revises {}", self.revises.join(", "))
        };
        ui.line(format!("created {} ({parent})", self.path.display()));
    }
}

/// `merge`: the merge revision written, and the heads it revises.
pub(crate) struct Merged {
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    pub(crate) revises: Vec<String>,
    pub(crate) message: String,
}

impl View for Merged {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "path": self.path.display().to_string(),
            "revises": self.revises,
            "message": self.message,
        })
    }

    fn text(&self, ui: &Ui) {
        ui.line(format!("created {} (merges {})", self.path.display(), self.revises.join(", ")));
    }
}
