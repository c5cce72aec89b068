use std::sync::{Arc, Mutex};

use pgskein::error::BoxError;
use pgskein::{Config, Error, Hooks, Migrator, Plan, Report, Step, StepReport};

use crate::common::{fixture, fresh_db, ledger};

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
    fail_before_run: bool,
    fail_before: Option<&'static str>,
}

impl Recorder {
    fn log(&self, line: String) {
        self.calls.lock().unwrap().push(line);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Hooks for Recorder {
    async fn before_run(&self, plan: &Plan) -> Result<(), BoxError> {
        self.log(format!("before_run {}", plan.steps.len()));
        if self.fail_before_run {
            return Err("backup failed: disk full".into());
        }
        Ok(())
    }
    async fn before_step(&self, step: &Step) -> Result<(), BoxError> {
        self.log(format!("before_step {} {}", step.direction, step.id));
        if self.fail_before == Some(step.id.as_str()) {
            return Err("maintenance window closed".into());
        }
        Ok(())
    }
    async fn after_step(&self, step: &Step, outcome: Result<&StepReport, &Error>) {
        self.log(format!(
            "after_step {} {} {}",
            step.direction,
            step.id,
            if outcome.is_ok() { "ok" } else { "err" }
        ));
    }
    async fn after_run(&self, outcome: Result<&Report, &Error>) {
        self.log(format!("after_run {}", if outcome.is_ok() { "ok" } else { "err" }));
    }
}

#[tokio::test]
async fn hooks_run_in_order_around_the_run_and_each_step() {
    let db = fresh_db("hooksorder").await;
    let client = db.connect().await.unwrap();
    let rec = Recorder::default();
    let set = fixture("linear").with_config(Config::default().hooks(rec.clone()));
    set.upgrade(&client, &"0002".parse().unwrap()).await.unwrap();
    assert_eq!(
        rec.calls(),
        [
            "before_run 2",
            "before_step up 0001_items",
            "after_step up 0001_items ok",
            "before_step up 0002_item_price",
            "after_step up 0002_item_price ok",
            "after_run ok",
        ]
    );
    rec.calls.lock().unwrap().clear();
    assert!(set.run(&client).await.is_ok());
    assert_eq!(rec.calls().first().map(String::as_str), Some("before_run 2"));
    rec.calls.lock().unwrap().clear();
    assert!(set.run(&client).await.unwrap().fast_path);
    assert!(rec.calls().is_empty(), "nothing to do: no hook runs");
}

#[tokio::test]
async fn a_failing_before_run_hook_records_nothing() {
    let db = fresh_db("hooksfail").await;
    let client = db.connect().await.unwrap();
    let rec = Recorder { fail_before_run: true, ..Recorder::default() };
    let set = fixture("linear").with_config(Config::default().hooks(rec.clone()));
    let err = set.run(&client).await.unwrap_err();
    assert!(
        matches!(&err, Error::Hook { stage: pgskein::error::HookStage::BeforeRun, step: None, .. }),
        "{err:?}"
    );
    assert!(crate::common::chain(&err).contains("backup failed: disk full"));
    assert!(ledger(&client).await.is_empty());
    let events: i64 = client.query_one("SELECT count(*) FROM pgskein.events", &[]).await.unwrap().get(0);
    assert_eq!(events, 0);
    let tables: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    assert_eq!(rec.calls(), ["before_run 4", "after_run err"]);
}

#[tokio::test]
async fn a_failing_before_step_hook_stops_before_that_step() {
    let db = fresh_db("hooksstep").await;
    let client = db.connect().await.unwrap();
    let rec = Recorder { fail_before: Some("0002_item_price"), ..Recorder::default() };
    let set = fixture("linear").with_config(Config::default().hooks(rec.clone()));
    let err = set.run(&client).await.unwrap_err();
    let Error::Hook { stage, step, report, .. } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!(
        (*stage, step.as_ref().map(|s| s.as_str())),
        (pgskein::error::HookStage::BeforeStep, Some("0002_item_price"))
    );
    assert_eq!(report.steps.len(), 1);
    assert_eq!(ledger(&client).await, [("0001_items".to_owned(), "applied".to_owned())]);
}

#[tokio::test]
async fn added_hooks_run_after_the_installed_ones_and_the_first_failure_stops_the_run() {
    let db = fresh_db("hooksadd").await;
    let client = db.connect().await.unwrap();
    let shared = Arc::new(Mutex::new(Vec::new()));
    let first = Recorder { calls: shared.clone(), ..Recorder::default() };
    let second = Recorder { calls: shared.clone(), fail_before_run: true, ..Recorder::default() };
    let config = Config::default().hooks(first.clone()).add_hooks(second);
    let set = fixture("linear").with_config(config);
    let err = set.upgrade(&client, &"0001".parse().unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::Hook { stage: pgskein::error::HookStage::BeforeRun, .. }), "{err:?}");
    // Both before_run hooks ran, in order, and both heard the outcome.
    assert_eq!(first.calls(), ["before_run 1", "before_run 1", "after_run err", "after_run err"]);
    assert!(ledger(&client).await.is_empty());

    let replaced = Config::default().add_hooks(first.clone()).hooks(Recorder::default());
    shared.lock().unwrap().clear();
    fixture("linear").with_config(replaced).upgrade(&client, &"0001".parse().unwrap()).await.unwrap();
    assert!(first.calls().is_empty(), "hooks() replaces what was installed before");
}
