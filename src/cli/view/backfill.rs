//! Views of backfills: `backfill status`, `backfill run`, `pause`,
//! `resume` and `reset`, and the backfill lines of `status`.

use serde_json::{Value, json};

use super::View;
use crate::backfill::{BackfillOutcome, BackfillRun, BackfillState, BackfillStatus};
use crate::cli::ui::{Ui, ms, ms_text};

/// `backfill status`: every declared backfill.
pub(crate) struct BackfillList(pub(crate) Vec<BackfillStatus>);

impl View for BackfillList {
    fn json(&self) -> Value {
        json!({ "backfills": self.0.iter().map(json).collect::<Vec<_>>() })
    }

    fn text(&self, ui: &Ui) {
        if self.0.is_empty() {
            ui.line("no backfills are declared");
        }
        for b in &self.0 {
            ui.line(line(b));
        }
    }
}

/// `backfill run`: what each backfill's run came to.
pub(crate) struct BackfillsRan(pub(crate) Vec<BackfillRun>);

impl View for BackfillsRan {
    fn json(&self) -> Value {
        json!({
            "backfills": self.0.iter().map(|b| json!({
                "name": b.name,
                "outcome": outcome_name(b.outcome),
                "rows": b.rows,
                "batches": b.batches,
                "duration_ms": ms(b.duration),
            })).collect::<Vec<_>>(),
        })
    }

    fn text(&self, ui: &Ui) {
        if self.0.is_empty() {
            ui.line("no backfills are declared");
        }
        for b in &self.0 {
            let what = match b.outcome {
                BackfillOutcome::Done => {
                    format!(
                        "done: {} rows in {} batches, {}",
                        thousands(b.rows),
                        b.batches,
                        ms_text(b.duration)
                    )
                }
                other => outcome_name(other).replace('_', " "),
            };
            ui.line(format!("{}: {what}", b.name));
        }
    }
}

/// `backfill pause` and `backfill resume`: the state afterwards, and what comes next.
pub(crate) struct BackfillPaused<'a> {
    pub(crate) name: &'a str,
    pub(crate) state: BackfillState,
    pub(crate) next: String,
}

impl View for BackfillPaused<'_> {
    fn json(&self) -> Value {
        json!({ "name": self.name, "state": self.state.as_str() })
    }

    fn text(&self, ui: &Ui) {
        ui.line(format!("{}: {}; {}", self.name, self.state.as_str(), self.next));
    }
}

/// `backfill reset`: the state it was reset from; `None` when it was pending already.
pub(crate) struct BackfillReset<'a> {
    pub(crate) name: &'a str,
    pub(crate) from: Option<BackfillState>,
    pub(crate) bin: &'a str,
}

impl View for BackfillReset<'_> {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "reset_from": self.from.map(BackfillState::as_str),
            "state": "pending",
        })
    }

    fn text(&self, ui: &Ui) {
        match self.from {
            Some(was) => ui.line(format!(
                "{}: reset from {was} to pending; the next run, or `{} backfill run`, starts it over",
                self.name, self.bin
            )),
            None => ui.line(format!("{}: pending already; nothing to reset", self.name)),
        }
    }
}

/// A backfill's document, in `status` and `backfill status`.
pub(crate) fn json(b: &BackfillStatus) -> Value {
    json!({
        "name": b.name,
        "revision": b.revision,
        "eligible": b.eligible,
        "state": b.state.as_str(),
        "active": b.active,
        "rows_done": b.rows_done,
        "estimated_total": b.estimated_total,
        "fraction": b.fraction,
        "batches": b.batches,
        "last_error": b.last_error,
    })
}

/// `documents_sha256_fill (after 0003_enhance_documents): running, 12,000 of 50,000 rows (24%)`.
pub(crate) fn line(b: &BackfillStatus) -> String {
    let state = match (b.state, b.active, b.eligible) {
        (BackfillState::Pending, _, false) => "waits for its revision".to_owned(),
        (BackfillState::Running, false, _) => "interrupted (resumes on the next run)".to_owned(),
        (state, _, _) => state.as_str().to_owned(),
    };
    let rows = match (b.estimated_total, b.fraction) {
        (Some(total), Some(f)) => {
            format!("{} of {} rows ({:.0}%)", thousands(b.rows_done), thousands(total), f * 100.0)
        }
        (Some(total), None) => format!("{} of {} rows", thousands(b.rows_done), thousands(total)),
        (None, _) => format!("{} rows", thousands(b.rows_done)),
    };
    let error = b.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default();
    format!("{} (after {}): {state}, {rows}{error}", b.name, b.revision)
}

/// `16618000` as `16,618,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn outcome_name(o: BackfillOutcome) -> &'static str {
    match o {
        BackfillOutcome::Done => "done",
        BackfillOutcome::AlreadyDone => "already_done",
        BackfillOutcome::Paused => "paused",
        BackfillOutcome::NotEligible => "not_eligible",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: BackfillState, rows_done: u64, total: Option<u64>) -> BackfillStatus {
        BackfillStatus {
            name: "documents_sha256_fill".into(),
            revision: "0003_enhance_documents".into(),
            eligible: true,
            state,
            active: false,
            rows_done,
            estimated_total: total,
            fraction: total.map(|t| rows_done as f64 / t as f64),
            key_range: None,
            cursor: None,
            batch_size: None,
            batches: 3,
            last_error: None,
            started_at: None,
            updated_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn backfill_lines_give_state_and_rows_with_thousands_separators() {
        let b = status(BackfillState::Running, 12_000, Some(50_000));
        assert_eq!(
            line(&b),
            "documents_sha256_fill (after 0003_enhance_documents): interrupted (resumes on the next run), \
             12,000 of 50,000 rows (24%)"
        );
        let done = status(BackfillState::Done, 1_234_567, None);
        assert_eq!(line(&done), "documents_sha256_fill (after 0003_enhance_documents): done, 1,234,567 rows");
    }

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(16_618_000), "16,618,000");
    }
}
