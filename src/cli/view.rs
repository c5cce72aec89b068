//! What each command shows. A command gathers what it found into a view, a
//! plain struct, and hands it to [`Ui::show`], which prints it one way: as
//! one JSON document with `--json`, as lines of text otherwise. The JSON
//! shapes are documented in `docs/cli.md`.
//!
//! - [`set`]: the revision graph alone (`heads`, `history`, `graph`, `check`);
//! - [`files`]: the revision files `new` and `merge` write;
//! - [`database`]: what the database holds (`status`, `current`, `verify`);
//! - [`plan`]: what a run would do (`plan`, `--sql`, `preflight`);
//! - [`run`]: what a command that changes the database did (`upgrade`,
//!   `downgrade`, `stamp`, `resolve`, `repair`).
//!
//! - [`backfill`]: backfills (`backfill status`, `run`, `pause`, `resume`, `reset`).

use serde_json::Value;

use super::ui::Ui;

mod backfill;
mod database;
mod files;
mod plan;
mod run;
mod set;

pub(crate) use backfill::{BackfillList, BackfillPaused, BackfillReset, BackfillsRan, thousands};
pub(crate) use database::{Current, Status, Verify};
pub(crate) use files::{Created, Merged};
pub(crate) use plan::{Plan, Preflight, Sql, blocking, problem_kind};
pub(crate) use run::{Ran, Repaired, Resolved};
pub(crate) use set::{Check, Graph, Heads, History, LoadErrors};

/// The output of a command, in both forms.
pub(crate) trait View {
    /// The document `--json` prints.
    fn json(&self) -> Value;
    /// The lines of text, printed through `ui`.
    fn text(&self, ui: &Ui);
}

#[cfg(test)]
mod tests;
