//! Progress bars on standard error, only when it is a terminal and the output
//! is text: one bar for the steps of a run, one per backfill that reports
//! progress. Fed by the library's hooks and by each backfill's progress
//! callback; nothing here decides anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backfill::{Backfill, Progress};
use crate::error::BoxError;
use crate::{Error, Hooks, MigrationSet, Plan, Report, Step, StepReport};

/// The bars of one command.
pub(crate) struct Bars {
    multi: MultiProgress,
    steps: Mutex<Option<ProgressBar>>,
    backfills: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub(crate) fn new() -> Arc<Bars> {
        Arc::new(Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            steps: Mutex::new(None),
            backfills: Mutex::new(HashMap::new()),
        })
    }

    /// `set` with each backfill also reporting to these bars (after the
    /// callback the service gave it, if any).
    pub(crate) fn on_backfills(self: &Arc<Self>, set: &mut MigrationSet) {
        set.map_backfills(|b| {
            let mut b: Backfill = b.clone();
            let previous = b.opts.progress.clone();
            let bars = Arc::clone(self);
            b.opts.progress = Some(Arc::new(move |p: &Progress| {
                if let Some(f) = &previous {
                    f(p);
                }
                bars.backfill(p);
            }));
            b
        });
    }

    fn backfill(&self, p: &Progress) {
        let mut bars = self.backfills.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(p.name.clone()).or_insert_with(|| {
            let bar = match p.estimated_total {
                Some(total) => ProgressBar::new(total).with_style(style(
                    "{prefix} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta} {msg}",
                )),
                None => {
                    ProgressBar::new_spinner().with_style(style("{prefix} {spinner} {human_pos} rows {msg}"))
                }
            };
            let bar = self.multi.add(bar.with_prefix(format!("backfill {}", p.name)));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if let Some(total) = p.estimated_total {
            bar.set_length(total.max(p.rows_done));
        }
        bar.set_position(p.rows_done);
        bar.set_message(p.waiting.clone().map(|w| format!("(waiting: {w})")).unwrap_or_default());
        if p.fraction == Some(1.0) {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The hooks that move the steps' bar.
pub(crate) struct StepBar(pub(crate) Arc<Bars>);

#[async_trait]
impl Hooks for StepBar {
    async fn before_run(&self, plan: &Plan) -> Result<(), BoxError> {
        let bar = ProgressBar::new(plan.steps.len() as u64)
            .with_style(style("[{bar:30}] {pos}/{len} {elapsed} {msg}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.0.steps.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.0.multi.add(bar));
        Ok(())
    }

    async fn before_step(&self, step: &Step) -> Result<(), BoxError> {
        if let Some(bar) = &*self.0.steps.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.set_message(format!("{} {}", step.direction, step.id));
        }
        Ok(())
    }

    async fn after_step(&self, _step: &Step, _outcome: Result<&StepReport, &Error>) {
        if let Some(bar) = &*self.0.steps.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.inc(1);
        }
    }

    async fn after_run(&self, _outcome: Result<&Report, &Error>) {
        if let Some(bar) = self.0.steps.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}
