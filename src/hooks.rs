//! Hooks: async callbacks around a run and each of its steps, for backups,
//! metrics and notifications. They run on the migrating task with the lock
//! held; a failing `before_*` hook stops the run before anything it guards is
//! recorded.

use async_trait::async_trait;

use crate::error::Error;
use crate::plan::{Plan, Step};
use crate::report::{Report, StepReport};
use crate::rust::BoxError;

/// Callbacks around upgrades and downgrades (not stamps). Every method has a
/// default that does nothing; implement the ones you need and install them
/// with [`Config::hooks`](crate::Config::hooks).
///
/// Taking a backup before a run that has work to do:
///
/// ```no_run
/// use pgskein::error::BoxError;
/// use pgskein::{Hooks, Plan};
///
/// struct Backup { url: String }
///
/// #[pgskein::async_trait]
/// impl Hooks for Backup {
///     async fn before_run(&self, plan: &Plan) -> Result<(), BoxError> {
///         let file = format!("before-{}.dump", plan.steps[0].id);
///         let status = tokio::process::Command::new("pg_dump")
///             .args(["--format=custom", "--file", &file, &self.url])
///             .status()
///             .await?;
///         if !status.success() {
///             return Err(format!("pg_dump exited with {status}").into());
///         }
///         Ok(())
///     }
/// }
/// ```
///
/// Sending a metric per revision:
///
/// ```
/// use pgskein::{Error, Hooks, Step, StepReport};
///
/// struct Metrics;
///
/// #[pgskein::async_trait]
/// impl Hooks for Metrics {
///     async fn after_step(&self, step: &Step, outcome: Result<&StepReport, &Error>) {
///         match outcome {
///             Ok(r) => tracing::info!(revision = %step.id, ms = r.duration.as_millis() as u64, "migration_step_ok"),
///             Err(e) => tracing::warn!(revision = %step.id, error = %e, "migration_step_failed"),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Before the first step, with the lock held and the plan known (never
    /// called when there is nothing to do). An error aborts the run: nothing is
    /// applied or recorded.
    async fn before_run(&self, plan: &Plan) -> Result<(), BoxError> {
        let _ = plan;
        Ok(())
    }

    /// Before each step. An error stops the run before the step; the steps
    /// before it stay applied (in single-transaction mode, nothing is).
    async fn before_step(&self, step: &Step) -> Result<(), BoxError> {
        let _ = step;
        Ok(())
    }

    /// After each step that was attempted, with its report or its error.
    async fn after_step(&self, step: &Step, outcome: Result<&StepReport, &Error>) {
        let _ = (step, outcome);
    }

    /// After a run that had a plan, with its report or its error.
    async fn after_run(&self, outcome: Result<&Report, &Error>) {
        let _ = outcome;
    }
}

/// The hooks a [`Config`](crate::Config) carries.
#[derive(Clone, Default)]
pub(crate) struct Installed(pub(crate) Option<std::sync::Arc<dyn Hooks>>);

impl Installed {
    /// These hooks, then `more`.
    pub(crate) fn and(self, more: std::sync::Arc<dyn Hooks>) -> Installed {
        Installed(Some(match self.0 {
            None => more,
            Some(first) => std::sync::Arc::new(Chain(first, more)),
        }))
    }
}

/// Two sets of hooks, called in order.
struct Chain(std::sync::Arc<dyn Hooks>, std::sync::Arc<dyn Hooks>);

#[async_trait]
impl Hooks for Chain {
    async fn before_run(&self, plan: &Plan) -> Result<(), BoxError> {
        self.0.before_run(plan).await?;
        self.1.before_run(plan).await
    }
    async fn before_step(&self, step: &Step) -> Result<(), BoxError> {
        self.0.before_step(step).await?;
        self.1.before_step(step).await
    }
    async fn after_step(&self, step: &Step, outcome: Result<&StepReport, &Error>) {
        self.0.after_step(step, outcome).await;
        self.1.after_step(step, outcome).await;
    }
    async fn after_run(&self, outcome: Result<&Report, &Error>) {
        self.0.after_run(outcome).await;
        self.1.after_run(outcome).await;
    }
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(<hooks>)" } else { "None" })
    }
}
