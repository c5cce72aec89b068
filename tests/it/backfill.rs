//! Backfills against a real server: exactly-once under kills, the fixed key
//! range, batch sizing, throttling, pause/resume, failures, and revisions that
//! depend on a backfill.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgskein::backfill::{Backfill, BackfillOutcome, BackfillState, BackfillStep, Batch, Reset};
use pgskein::error::BoxError;
use pgskein::rust::Conn;
use pgskein::{Error, MigrationSet, Migrator};

use crate::common::{CancelAfter, Rng, chain, fresh_db, ledger};

const TOUCH: &str = "UPDATE items SET touched = touched + 1 WHERE id >= $1 AND id < $2";

fn long() -> bool {
    std::env::var_os("PGSKEIN_LONG").is_some_and(|v| v == "1")
}

/// `0001_items`: a table of `rows` rows, each with a `touched` counter.
fn items(rows: i64) -> String {
    format!(
        "-- pgskein: up\n\
         CREATE TABLE items (id bigint PRIMARY KEY, touched int NOT NULL DEFAULT 0, h text);\n\
         INSERT INTO items (id, h) SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;\n\
         ANALYZE items;\n"
    )
}

fn set_with(rows: i64, backfill: Backfill) -> MigrationSet {
    MigrationSet::builder().file("0001_items.sql", items(rows).as_bytes()).backfill(backfill).build().unwrap()
}

/// (rows not touched exactly once, all rows)
async fn touched(client: &tokio_postgres::Client) -> (i64, i64) {
    let r = client
        .query_one("SELECT count(*) FILTER (WHERE touched <> 1), count(*) FROM items", &[])
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

async fn events(client: &tokio_postgres::Client, kind: &str) -> i64 {
    client.query_one("SELECT count(*) FROM pgskein.events WHERE kind = $1", &[&kind]).await.unwrap().get(0)
}

/// Waits until `counter` has moved `by` past `from`, or `stop` says the work ended.
async fn wait_batches(counter: &AtomicU64, from: u64, by: u64, stop: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::SeqCst) < from + by && !stop() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn state(
    set: &MigrationSet,
    db: &deadpool_postgres::Pool,
    name: &str,
) -> pgskein::backfill::BackfillStatus {
    set.backfills().unwrap().status(db).await.unwrap().into_iter().find(|s| s.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_backfill_aborted_at_random_batches_touches_every_row_exactly_once() {
    let (rows, kills) = if long() { (5_000_000, 60) } else { (1_000_000, 10) };
    let db = fresh_db("bf_abort").await;
    let pool = db.pool(4);
    let batches = Arc::new(AtomicU64::new(0));
    let counter = batches.clone();
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(TOUCH)
            .initial_batch_size(20_000)
            .target_batch_duration(Duration::from_millis(40))
            .on_progress(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
    );
    set.run(&pool).await.unwrap();
    let mut rng = Rng::new();
    let mut effective = 0;
    for _ in 0..kills {
        let handle = set.backfills().unwrap().spawn(&pool);
        let from = batches.load(Ordering::SeqCst);
        wait_batches(&batches, from, 1 + rng.below(3), || handle.is_finished()).await;
        tokio::time::sleep(Duration::from_micros(rng.below(30_000))).await;
        if !handle.is_finished() {
            effective += 1;
        }
        handle.abort();
    }
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    assert!(matches!(
        report.get("touch").unwrap().outcome,
        BackfillOutcome::Done | BackfillOutcome::AlreadyDone
    ));
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, rows), "every row touched exactly once");
    assert!(effective >= kills / 2, "only {effective} of {kills} aborts hit a running backfill");
    assert!(events(&client, "backfill_resume").await >= 1);
    assert_eq!(events(&client, "backfill_done").await, 1);
    let s = state(&set, &pool, "touch").await;
    assert_eq!((s.state, s.rows_done, s.active), (BackfillState::Done, rows as u64, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_backfill_whose_backend_is_terminated_touches_every_row_exactly_once() {
    let (rows, kills) = if long() { (5_000_000, 60) } else { (1_000_000, 10) };
    let db = fresh_db("bf_terminate").await;
    let mut config = db.config();
    config.application_name("bf_runner");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager).max_size(2).build().unwrap();
    let batches = Arc::new(AtomicU64::new(0));
    let counter = batches.clone();
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(TOUCH)
            .initial_batch_size(20_000)
            .target_batch_duration(Duration::from_millis(40))
            .on_progress(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
    );
    set.run(&pool).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let (batches, done) = (batches.clone(), done.clone());
        let killer_client = db.connect().await.unwrap();
        tokio::spawn(async move {
            let mut rng = Rng::new();
            let mut terminated = 0;
            for _ in 0..kills {
                let from = batches.load(Ordering::SeqCst);
                wait_batches(&batches, from, 1 + rng.below(3), || done.load(Ordering::SeqCst)).await;
                if done.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(rng.below(30_000))).await;
                let r = killer_client
                    .query_one(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = 'bf_runner' AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap();
                terminated += r.get::<_, i64>(0);
            }
            terminated
        })
    };
    let mut errors = 0;
    loop {
        match set.backfills().unwrap().run(&pool).await {
            Ok(r) if r.get("touch").unwrap().outcome != BackfillOutcome::Paused => break,
            Ok(r) => panic!("unexpected {r:?}"),
            Err(e) => {
                errors += 1;
                assert!(errors < 10 * kills, "too many failures: {}", chain(&e));
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    let terminated = killer.await.unwrap();
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, rows), "every row touched exactly once");
    assert!(terminated >= 3, "only {terminated} backends terminated");
    assert!(errors >= 1, "terminations should have interrupted runs");
    assert_eq!(events(&client, "backfill_done").await, 1);
}

/// A Rust backfill walking `items` by id, `limit` rows at a time; fails while `fail` is set
/// once its cursor passes `fail_after`.
struct Touch {
    fail: Arc<AtomicBool>,
    fail_after: i64,
}

#[async_trait::async_trait]
impl BackfillStep for Touch {
    async fn batch(&self, tx: &Conn<'_>, cursor: Option<&str>, limit: u64) -> Result<Batch, BoxError> {
        let after: i64 = cursor.map(str::parse).transpose()?.unwrap_or(0);
        let row = tx
            .query_one(
                "WITH b AS (SELECT id FROM items WHERE id > $1 ORDER BY id LIMIT $2), \
                      u AS (UPDATE items SET touched = touched + 1 FROM b WHERE items.id = b.id RETURNING items.id) \
                 SELECT count(*), max(id) FROM u",
                &[&after, &(limit as i64)],
            )
            .await?;
        if self.fail.load(Ordering::SeqCst) && after >= self.fail_after {
            return Err(format!("boom at {after}").into());
        }
        let (n, last): (i64, Option<i64>) = (row.get(0), row.get(1));
        Ok(match last {
            Some(last) if n as u64 == limit => Batch::more(n as u64, last.to_string()),
            _ => Batch::done(n as u64),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_backfill_aborted_at_random_batches_touches_every_row_exactly_once() {
    let (rows, kills) = if long() { (2_000_000, 40) } else { (200_000, 8) };
    let db = fresh_db("bf_rust_abort").await;
    let pool = db.pool(4);
    let batches = Arc::new(AtomicU64::new(0));
    let counter = batches.clone();
    let step = Touch { fail: Arc::new(AtomicBool::new(false)), fail_after: 0 };
    let set = set_with(
        rows,
        Backfill::rust("touch", "0001_items", step)
            .table("items")
            .initial_batch_size(2_000)
            .target_batch_duration(Duration::from_millis(20))
            .on_progress(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
    );
    set.run(&pool).await.unwrap();
    let mut rng = Rng::new();
    for _ in 0..kills {
        let handle = set.backfills().unwrap().spawn(&pool);
        let from = batches.load(Ordering::SeqCst);
        wait_batches(&batches, from, 1 + rng.below(4), || handle.is_finished()).await;
        tokio::time::sleep(Duration::from_micros(rng.below(20_000))).await;
        handle.abort();
    }
    set.backfills().unwrap().spawn(&pool).wait().await.unwrap();
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, rows));
    let s = state(&set, &pool, "touch").await;
    assert_eq!(s.state, BackfillState::Done);
    assert_eq!(s.rows_done, rows as u64);
    assert!(s.estimated_total.is_some_and(|t| t > 0), "estimated from reltuples: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_range_is_fixed_at_start_and_the_backfill_finishes_under_inserts() {
    let rows = 200_000;
    let db = fresh_db("bf_inserts").await;
    let pool = db.pool(4);
    let batches = Arc::new(AtomicU64::new(0));
    let counter = batches.clone();
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(TOUCH)
            .initial_batch_size(2_000)
            .target_batch_duration(Duration::from_millis(10))
            .on_progress(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
    );
    set.run(&pool).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (stop, batches) = (stop.clone(), batches.clone());
        let client = db.connect().await.unwrap();
        tokio::spawn(async move {
            // Inserts begin once the backfill has fixed its range.
            wait_batches(&batches, 0, 1, || false).await;
            let mut next = rows + 1;
            while !stop.load(Ordering::SeqCst) {
                client
                    .execute(
                        "INSERT INTO items (id) SELECT generate_series($1::bigint, $1::bigint + 99)",
                        &[&next],
                    )
                    .await
                    .unwrap();
                next += 100;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            next - rows - 1
        })
    };
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let inserted = inserter.await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Done);
    assert!(inserted > 0);
    let client = db.connect().await.unwrap();
    let r = client
        .query_one(
            "SELECT count(*) FILTER (WHERE id <= $1 AND touched <> 1), count(*) FILTER (WHERE id > $1 AND touched <> 0), \
                    count(*) FILTER (WHERE id > $1) FROM items",
            &[&rows],
        )
        .await
        .unwrap();
    let (old_wrong, new_touched, new_rows): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!((old_wrong, new_touched), (0, 0), "old rows once, new rows never");
    assert!(new_rows >= 100, "rows were inserted while it ran ({new_rows})");
    assert_eq!(report.get("touch").unwrap().rows, rows as u64);
    assert_eq!(state(&set, &pool, "touch").await.key_range, Some((1, rows + 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_durations_converge_near_the_target() {
    let rows = 400_000;
    let db = fresh_db("bf_converge").await;
    let pool = db.pool(2);
    let seen: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let sink = seen.clone();
    let target = Duration::from_millis(20);
    let set = set_with(
        rows,
        Backfill::sql("rehash", "0001_items")
            .table("items")
            .key("id")
            .statement(
                "UPDATE items SET h = md5(h || id::text), touched = touched + 1 WHERE id >= $1 AND id < $2",
            )
            .initial_batch_size(500)
            .target_batch_duration(target)
            .on_progress(move |p| sink.lock().unwrap().push((p.batch_size, p.batch_duration))),
    );
    set.run(&pool).await.unwrap();
    set.backfills().unwrap().run(&pool).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 10, "{} batches", seen.len());
    // The first batch is 500 keys; sizes then grow by at most 2x per step.
    assert_eq!(seen[0].0, 500);
    for w in seen.windows(2) {
        assert!(w[1].0 <= w[0].0 * 2, "growth bounded: {:?}", w);
    }
    // Leave out the ramp-up and the last (partial) batch.
    let mut later: Vec<Duration> = seen[seen.len() / 2..seen.len() - 1].iter().map(|s| s.1).collect();
    later.sort();
    let median = later[later.len() / 2];
    assert!(
        median >= target / 3 && median <= target * 3,
        "median batch {median:?} for a target of {target:?}; batches {seen:?}"
    );
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, rows));
}

#[tokio::test]
async fn rows_per_second_limits_the_rate() {
    let (rows, limit) = (10_000, 5_000);
    let db = fresh_db("bf_throttle").await;
    let pool = db.pool(2);
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items").table("items").key("id").statement(TOUCH).rows_per_second(limit),
    );
    set.run(&pool).await.unwrap();
    let started = Instant::now();
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let run = report.get("touch").unwrap();
    assert_eq!(run.rows, rows as u64);
    let rate = rows as f64 / elapsed;
    assert!(rate <= limit as f64 * 1.15, "{rate:.0} rows/s over a limit of {limit}");
    assert!(run.batches >= 10, "batches are capped near one target duration of rows: {}", run.batches);
}

#[tokio::test]
async fn pause_between_batches_spaces_them() {
    let db = fresh_db("bf_spaced").await;
    let pool = db.pool(2);
    let set = set_with(
        2_000,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(TOUCH)
            .batch_size_limits(500, 500)
            .pause_between_batches(Duration::from_millis(100)),
    );
    set.run(&pool).await.unwrap();
    let started = Instant::now();
    set.backfills().unwrap().run(&pool).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_through_the_api_are_recorded_and_respected_by_other_processes() {
    let rows = 60_000;
    let db = fresh_db("bf_pause").await;
    let pool = db.pool(4);
    let batches = Arc::new(AtomicU64::new(0));
    let counter = batches.clone();
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(TOUCH)
            .rows_per_second(20_000)
            .on_progress(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
    );
    set.run(&pool).await.unwrap();
    let handle = set.backfills().unwrap().spawn(&pool);
    wait_batches(&batches, 0, 3, || false).await;
    handle.pause().await.unwrap();
    // A batch in flight cannot move the checkpoint of a paused backfill (its
    // update requires `running`): what is recorded now is final.
    let before = state(&set, &pool, "touch").await;
    assert_eq!(before.state, BackfillState::Paused);
    assert!(before.rows_done > 0 && before.rows_done < rows as u64, "{before:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(state(&set, &pool, "touch").await.rows_done, before.rows_done, "no batch while paused");
    assert!(!handle.is_finished(), "the deferred task waits for a resume");

    // Another process finds it paused and does not run it.
    let other = db.pool(1);
    let report = set.backfills().unwrap().run(&other).await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Paused);
    assert_eq!(report.get("touch").unwrap().rows, 0);

    assert_eq!(set.backfills().unwrap().resume(&other, "touch").await.unwrap(), BackfillState::Running);
    let report = handle.wait().await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Done);
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, rows));
    assert_eq!(events(&client, "backfill_pause").await, 1);
    // The API's resume, then the task picking the backfill up again.
    assert_eq!(events(&client, "backfill_resume").await, 2);
    assert_eq!(events(&client, "backfill_done").await, 1);
    // Pausing a finished backfill leaves it done.
    assert_eq!(set.backfills().unwrap().pause(&pool, "touch").await.unwrap(), BackfillState::Done);
    let err = set.backfills().unwrap().pause(&pool, "nope").await.unwrap_err();
    assert!(matches!(err, Error::UnknownBackfill { .. }), "{err}");
}

/// Runs `f` on a task of its own: `tokio::spawn` takes only `Send` futures.
async fn on_task<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    tokio::spawn(f).await.unwrap()
}

/// Every future of the `Backfills` handle is `Send`, so a service can run it
/// on a task of its own; and the handle uses the migrator's configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_operations_run_on_spawned_tasks_with_the_migrators_config() {
    let db = fresh_db("bf_tasks").await;
    let pool = db.pool(2);
    let set = set_with(500, Backfill::sql("touch", "0001_items").table("items").key("id").statement(TOUCH))
        .with_config(pgskein::Config::default().schema("bf_ledger"));
    let m: &'static _ = Box::leak(Box::new(set));
    m.run(&pool).await.unwrap();
    let p = || pool.clone();

    let pool_ = p();
    let paused = on_task(async move { m.backfills().unwrap().pause(&pool_, "touch").await }).await;
    assert_eq!(paused.unwrap(), BackfillState::Paused);
    let pool_ = p();
    let report = on_task(async move { m.backfills().unwrap().run(&pool_).await }).await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Paused);
    let pool_ = p();
    let resumed = on_task(async move { m.backfills().unwrap().resume(&pool_, "touch").await }).await;
    assert_eq!(resumed.unwrap(), BackfillState::Pending);
    let report = m.backfills().unwrap().spawn(&pool).wait().await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Done);
    let pool_ = p();
    let status = on_task(async move { m.backfills().unwrap().status(&pool_).await }).await.unwrap();
    assert_eq!((status[0].state, status[0].rows_done), (BackfillState::Done, 500));
    let pool_ = p();
    let reset =
        on_task(async move { m.backfills().unwrap().reset(&pool_, "touch", Reset::UnlessRunning).await })
            .await;
    assert_eq!(reset.unwrap(), Some(BackfillState::Done));

    let client = db.connect().await.unwrap();
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM bf_ledger.events WHERE kind = 'backfill_reset'").await, 1);
    assert_eq!(
        count("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgskein'").await,
        0,
        "nothing in the default schema"
    );
}

#[tokio::test]
async fn backfill_paused_before_it_starts_is_not_run() {
    let db = fresh_db("bf_prepause").await;
    let pool = db.pool(2);
    let set = set_with(1_000, Backfill::sql("touch", "0001_items").table("items").key("id").statement(TOUCH));
    set.run(&pool).await.unwrap();
    assert_eq!(set.backfills().unwrap().pause(&pool, "touch").await.unwrap(), BackfillState::Paused);
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Paused);
    assert_eq!(set.backfills().unwrap().resume(&pool, "touch").await.unwrap(), BackfillState::Pending);
    assert_eq!(
        set.backfills().unwrap().run(&pool).await.unwrap().get("touch").unwrap().outcome,
        BackfillOutcome::Done
    );
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, 1_000));
}

#[tokio::test]
async fn failing_batch_is_retried_then_recorded_as_failed_and_resumes_later() {
    let rows = 5_000;
    let db = fresh_db("bf_fail").await;
    let pool = db.pool(2);
    let fail = Arc::new(AtomicBool::new(true));
    let step = Touch { fail: fail.clone(), fail_after: 2_000 };
    let set = set_with(
        rows,
        Backfill::rust("touch", "0001_items", step)
            .batch_size_limits(1_000, 1_000)
            .max_retries(2)
            .retry_backoff(Duration::from_millis(5)),
    );
    set.run(&pool).await.unwrap();
    let err = set.backfills().unwrap().run(&pool).await.unwrap_err();
    assert!(
        matches!(&err, Error::BackfillFailed { name, attempts: 3, .. } if name == "touch"),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("boom at 2000"), "{}", chain(&err));
    let s = state(&set, &pool, "touch").await;
    assert_eq!(s.state, BackfillState::Failed);
    assert_eq!(s.rows_done, 2_000, "the batches before the failing one stay committed");
    assert!(s.last_error.as_deref().is_some_and(|e| e.contains("boom")), "{s:?}");
    let client = db.connect().await.unwrap();
    assert_eq!(events(&client, "backfill_fail").await, 1);

    fail.store(false, Ordering::SeqCst);
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Done);
    assert_eq!(report.get("touch").unwrap().rows, 3_000);
    assert_eq!(touched(&client).await, (0, rows));
    let s = state(&set, &pool, "touch").await;
    assert_eq!((s.state, s.last_error), (BackfillState::Done, None));
}

#[tokio::test]
async fn statement_timeout_halves_the_batch_and_the_backfill_finishes() {
    let rows = 4_000;
    let db = fresh_db("bf_timeout").await;
    let pool = db.pool(2);
    let sizes: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = sizes.clone();
    let sql = "WITH s AS (SELECT pg_sleep(CASE WHEN $2::bigint - $1::bigint > 1000 THEN 5 ELSE 0 END)) \
               UPDATE items SET touched = touched + 1 FROM s WHERE id >= $1 AND id < $2";
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(sql)
            .initial_batch_size(4_000)
            .statement_timeout(Some(Duration::from_millis(200)))
            .max_retries(20)
            .retry_backoff(Duration::from_millis(1))
            .on_progress(move |p| sink.lock().unwrap().push(p.batch_size)),
    );
    set.run(&pool).await.unwrap();
    set.backfills().unwrap().run(&pool).await.unwrap();
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.first(), Some(&1_000), "4,000 and 2,000 timed out: {sizes:?}");
    // Every batch over 1,000 keys timed out; the last one may ask for more than what is left.
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s <= 1_000), "{sizes:?}");
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, rows));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_backfill_blocks_a_dependent_revision_until_it_is_done() {
    let db = fresh_db("bf_depends").await;
    let pool = db.pool(4);
    let set = MigrationSet::builder()
        .file("0001_items.sql", items(20_000).as_bytes())
        .file(
            "0002_touched_once.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: depends-on touch_all\n-- pgskein: up\n\
              ALTER TABLE items ADD CONSTRAINT touched_once CHECK (touched = 1) NOT VALID;\n\
              ALTER TABLE items VALIDATE CONSTRAINT touched_once;\n",
        )
        .backfill(Backfill::sql("touch_all", "0001_items").table("items").key("id").statement(TOUCH))
        .build()
        .unwrap();
    let err = set.run(&pool).await.unwrap_err();
    match &err {
        Error::BackfillIncomplete { revision, backfill, report } => {
            assert_eq!((revision.as_str(), backfill.as_str()), ("0002_touched_once", "touch_all"));
            assert_eq!(report.steps.len(), 1, "0001 was applied before stopping");
        }
        other => panic!("unexpected {}", chain(other)),
    }
    let msg = err.to_string();
    assert!(msg.contains("0002_touched_once") && msg.contains("touch_all"), "{msg}");
    let client = db.connect().await.unwrap();
    assert_eq!(ledger(&client).await, [("0001_items".to_owned(), "applied".to_owned())]);
    // Still refused while it runs.
    assert!(matches!(set.run(&pool).await, Err(Error::BackfillIncomplete { .. })));

    let report = set.backfills().unwrap().spawn(&pool).wait().await.unwrap();
    assert_eq!(report.get("touch_all").unwrap().outcome, BackfillOutcome::Done);
    let applied = set.run(&pool).await.unwrap();
    assert_eq!(applied.steps.len(), 1);
    assert_eq!(ledger(&client).await.len(), 2);
    let parents: Vec<String> = client
        .query_one("SELECT depends_on FROM pgskein.applied WHERE id = '0002_touched_once'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parents, ["0001_items"], "the ledger records the backfill's revision as the parent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_run_the_same_backfill_at_once() {
    let rows = 100_000;
    let db = fresh_db("bf_two").await;
    let (a, b) = (db.pool(2), db.pool(2));
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(TOUCH)
            .target_batch_duration(Duration::from_millis(10)),
    );
    set.run(&a).await.unwrap();
    let (ha, hb) = (set.backfills().unwrap().spawn(&a), set.backfills().unwrap().spawn(&b));
    let (ra, rb) = (ha.wait().await.unwrap(), hb.wait().await.unwrap());
    let (ra, rb) = (ra.get("touch").unwrap(), rb.get("touch").unwrap());
    assert_eq!(ra.rows + rb.rows, rows as u64, "{ra:?} {rb:?}");
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, rows));
    assert_eq!(events(&client, "backfill_start").await, 1);
}

#[tokio::test]
async fn backfill_is_not_eligible_before_its_revision_and_handles_an_empty_table() {
    let db = fresh_db("bf_eligible").await;
    let pool = db.pool(2);
    let set = set_with(0, Backfill::sql("touch", "0001_items").table("items").key("id").statement(TOUCH));
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::NotEligible);
    let s = state(&set, &pool, "touch").await;
    assert_eq!((s.eligible, s.state), (false, BackfillState::Pending));
    set.run(&pool).await.unwrap();
    assert!(state(&set, &pool, "touch").await.eligible);
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Done);
    assert_eq!(report.get("touch").unwrap().rows, 0);
    let again = set.backfills().unwrap().run(&pool).await.unwrap();
    assert_eq!(again.get("touch").unwrap().outcome, BackfillOutcome::AlreadyDone);
}

#[tokio::test]
async fn bookkeeping_tables_of_format_1_are_upgraded_in_place() {
    let db = fresh_db("bf_format").await;
    let pool = db.pool(2);
    let set = set_with(100, Backfill::sql("touch", "0001_items").table("items").key("id").statement(TOUCH));
    set.run(&pool).await.unwrap();
    let client = db.connect().await.unwrap();
    let format = || async {
        let c = db.connect().await.unwrap();
        c.query_one("SELECT value FROM pgskein.meta WHERE key = 'format'", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(format().await, "4");
    // What format 1 looked like.
    client
        .batch_execute(
            "DROP TABLE pgskein.backfills; UPDATE pgskein.meta SET value = '1' WHERE key = 'format'",
        )
        .await
        .unwrap();
    // The fast path leaves them alone; running backfills upgrades them.
    assert!(set.run(&pool).await.unwrap().fast_path);
    assert_eq!(
        set.backfills().unwrap().run(&pool).await.unwrap().get("touch").unwrap().outcome,
        BackfillOutcome::Done
    );
    assert_eq!(format().await, "4");
    assert_eq!(events(&client, "upgrade_format").await, 1);

    // A migration run that has work to do upgrades them too.
    client
        .batch_execute(
            "DROP TABLE pgskein.backfills; UPDATE pgskein.meta SET value = '1' WHERE key = 'format'",
        )
        .await
        .unwrap();
    let more = MigrationSet::builder()
        .file("0001_items.sql", items(100).as_bytes())
        .file(
            "0002_more.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: up\nCREATE TABLE more (id int);\n",
        )
        .build()
        .unwrap();
    assert_eq!(more.run(&pool).await.unwrap().steps.len(), 1);
    assert_eq!(format().await, "4");
    let exists: bool =
        client.query_one("SELECT to_regclass('pgskein.backfills') IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(exists);
}

#[tokio::test]
async fn dropping_a_backfills_run_at_every_await_point_keeps_checkpoint_and_rows_in_step() {
    let rows = 2_000;
    let db = fresh_db("bf_cancel").await;
    let client = db.connect().await.unwrap();
    let observer = db.connect().await.unwrap();
    let set = set_with(
        rows,
        Backfill::sql("touch", "0001_items")
            .table("items")
            .key("id")
            .statement(TOUCH)
            .batch_size_limits(100, 100),
    );
    set.run(&client).await.unwrap();
    let mut limit = 1;
    loop {
        let outcome = CancelAfter::new(set.backfills().unwrap().run(&client), limit).await;
        // Requests queued by the dropped future (ROLLBACK, unlock) are answered before this one.
        client.simple_query("SELECT 1").await.unwrap();
        let r = observer
            .query_one(
                "SELECT coalesce((SELECT rows_done FROM pgskein.backfills WHERE name = 'touch'), 0), \
                        count(*) FILTER (WHERE touched = 1), count(*) FILTER (WHERE touched > 1), \
                        (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
                 FROM items",
                &[],
            )
            .await
            .unwrap();
        let (done, once, twice, locks): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!((done, twice, locks), (once, 0, 0), "cancelled at await point {limit}");
        if let Some(result) = outcome {
            result.unwrap();
            break;
        }
        limit += 1;
    }
    assert!(limit > 20, "the run should have had many await points ({limit})");
    assert_eq!(touched(&observer).await, (0, rows));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_backfills_let_one_run_go_past_the_revision_that_waits_for_them() {
    let db = fresh_db("bf_inline").await;
    let pool = db.pool(4);
    let set = MigrationSet::builder()
        .file("0001_items.sql", items(20_000).as_bytes())
        .file(
            "0002_touched_once.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: depends-on touch_all\n-- pgskein: up\n\
              ALTER TABLE items ADD CONSTRAINT touched_once CHECK (touched = 1) NOT VALID;\n\
              ALTER TABLE items VALIDATE CONSTRAINT touched_once;\n",
        )
        .backfill(Backfill::sql("touch_all", "0001_items").table("items").key("id").statement(TOUCH))
        .build()
        .unwrap()
        .with_config(pgskein::Config::default().inline_backfills(true));
    let report = set.run(&pool).await.unwrap();
    let steps: Vec<&str> = report.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(steps, ["0001_items", "0002_touched_once"]);
    let client = db.connect().await.unwrap();
    assert_eq!(touched(&client).await, (0, 20_000));
    assert_eq!(ledger(&client).await.len(), 2);
    assert!(set.run(&pool).await.unwrap().fast_path, "at head, nothing runs and no backfill is looked at");
}

// ----- reset -----

/// The `backfill_reset` events' details, oldest first.
async fn resets(client: &tokio_postgres::Client) -> Vec<serde_json::Value> {
    client
        .query("SELECT detail::text FROM pgskein.events WHERE kind = 'backfill_reset' ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get(0)).unwrap())
        .collect()
}

#[tokio::test]
async fn reset_returns_a_done_backfill_to_pending_and_the_next_run_does_it_again() {
    let db = fresh_db("bf_reset_done").await;
    let pool = db.pool(2);
    let client = db.connect().await.unwrap();
    let set = set_with(300, Backfill::sql("touch", "0001_items").table("items").key("id").statement(TOUCH));
    assert_eq!(
        set.backfills().unwrap().reset(&pool, "touch", Reset::UnlessRunning).await.unwrap(),
        None,
        "nothing migrated yet"
    );
    set.run(&pool).await.unwrap();
    set.backfills().unwrap().run(&pool).await.unwrap();
    assert_eq!(state(&set, &pool, "touch").await.state, BackfillState::Done);

    assert_eq!(
        set.backfills().unwrap().reset(&pool, "touch", Reset::UnlessRunning).await.unwrap(),
        Some(BackfillState::Done)
    );
    let now = state(&set, &pool, "touch").await;
    assert_eq!((now.state, now.rows_done, now.key_range), (BackfillState::Pending, 0, None));
    let details = resets(&client).await;
    assert_eq!(details.len(), 1);
    assert_eq!(details[0]["backfill"], "touch");
    assert_eq!(details[0]["state"], "done");
    assert_eq!(details[0]["rows_done"], 300);
    assert_eq!(details[0]["why"], "reset");

    assert_eq!(
        set.backfills().unwrap().reset(&pool, "touch", Reset::UnlessRunning).await.unwrap(),
        None,
        "pending already"
    );
    assert_eq!(resets(&client).await.len(), 1, "a reset that changed nothing records nothing");
    let report = set.backfills().unwrap().run(&pool).await.unwrap();
    assert_eq!(report.get("touch").unwrap().outcome, BackfillOutcome::Done);
    let twice: i64 =
        client.query_one("SELECT count(*) FROM items WHERE touched = 2", &[]).await.unwrap().get(0);
    assert_eq!(twice, 300, "every row ran again");

    let e = set.backfills().unwrap().reset(&pool, "nope", Reset::UnlessRunning).await.unwrap_err();
    assert!(matches!(e, Error::UnknownBackfill { .. }), "{e}");
}

#[tokio::test]
async fn reset_takes_paused_and_failed_backfills_back_to_pending() {
    let db = fresh_db("bf_reset_states").await;
    let pool = db.pool(2);
    let failing = Backfill::sql("broken", "0001_items")
        .table("items")
        .key("id")
        .statement("UPDATE items SET touched = touched / 0 WHERE id >= $1 AND id < $2")
        .max_retries(0);
    let set = MigrationSet::builder()
        .file("0001_items.sql", items(50).as_bytes())
        .backfill(Backfill::sql("touch", "0001_items").table("items").key("id").statement(TOUCH))
        .backfill(failing)
        .build()
        .unwrap();
    set.run(&pool).await.unwrap();
    set.backfills().unwrap().pause(&pool, "touch").await.unwrap();
    let e = set.backfills().unwrap().run(&pool).await.unwrap_err();
    assert!(matches!(e, Error::BackfillFailed { .. }), "{e}");
    assert_eq!(state(&set, &pool, "broken").await.state, BackfillState::Failed);

    assert_eq!(
        set.backfills().unwrap().reset(&pool, "touch", Reset::UnlessRunning).await.unwrap(),
        Some(BackfillState::Paused)
    );
    assert_eq!(
        set.backfills().unwrap().reset(&pool, "broken", Reset::UnlessRunning).await.unwrap(),
        Some(BackfillState::Failed)
    );
    let broken = state(&set, &pool, "broken").await;
    assert_eq!((broken.state, broken.last_error), (BackfillState::Pending, None));
    let report = set.backfills().unwrap().run(&pool).await.unwrap_err();
    assert!(matches!(report, Error::BackfillFailed { .. }), "the reset one runs again: {report}");
    assert_eq!(state(&set, &pool, "touch").await.state, BackfillState::Done, "no longer paused");

    // A row whose state was edited by hand into something unknown (past the
    // table's check) is what a reset repairs: it succeeds, instead of failing
    // after it committed.
    let client = pool.get().await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE pgskein.backfills DROP CONSTRAINT backfills_state_check; \
             UPDATE pgskein.backfills SET state = 'bogus' WHERE name = 'touch'",
        )
        .await
        .unwrap();
    assert_eq!(
        set.backfills().unwrap().reset(&pool, "touch", Reset::UnlessRunning).await.unwrap(),
        Some(BackfillState::Failed)
    );
    assert_eq!(state(&set, &pool, "touch").await.state, BackfillState::Pending);
}

/// A Rust backfill whose first batch says it started and waits to be let go.
struct Gate {
    started: Arc<tokio::sync::Notify>,
    go: Arc<tokio::sync::Notify>,
    cursors: Arc<Mutex<Vec<Option<String>>>>,
}

#[async_trait::async_trait]
impl BackfillStep for Gate {
    async fn batch(&self, tx: &Conn<'_>, cursor: Option<&str>, _limit: u64) -> Result<Batch, BoxError> {
        let first = {
            let mut seen = self.cursors.lock().unwrap();
            seen.push(cursor.map(str::to_owned));
            seen.len() == 1
        };
        if first {
            self.started.notify_one();
            self.go.notified().await;
        }
        let n = tx.execute("UPDATE items SET touched = touched + 1", &[]).await?;
        Ok(Batch::done(n))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_refuses_a_backfill_another_session_runs_unless_forced_and_the_runner_starts_over() {
    let db = fresh_db("bf_reset_running").await;
    let pool = db.pool(4);
    let client = db.connect().await.unwrap();
    let (started, go) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let cursors: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let gate = Gate { started: started.clone(), go: go.clone(), cursors: cursors.clone() };
    let set = Arc::new(set_with(40, Backfill::rust("gated", "0001_items", gate).table("items")));
    set.run(&pool).await.unwrap();
    let runner = tokio::spawn({
        let (set, pool) = (set.clone(), pool.clone());
        async move { set.backfills().unwrap().run(&pool).await }
    });
    started.notified().await;

    let e = set.backfills().unwrap().reset(&pool, "gated", Reset::UnlessRunning).await.unwrap_err();
    let Error::BackfillRunning { name, pid } = &e else { panic!("{e}") };
    assert_eq!(name, "gated");
    assert!(*pid > 0);
    let now = state(&set, &pool, "gated").await;
    assert_eq!((now.state, now.active), (BackfillState::Running, true), "refused: nothing changed");
    assert!(resets(&client).await.is_empty());

    assert_eq!(
        set.backfills().unwrap().reset(&pool, "gated", Reset::EvenIfRunning).await.unwrap(),
        Some(BackfillState::Running)
    );
    assert_eq!(resets(&client).await[0]["why"], "reset while running (forced)");
    go.notify_one();
    let report = runner.await.unwrap().unwrap();
    assert_eq!(report.get("gated").unwrap().outcome, BackfillOutcome::Done);
    assert_eq!(*cursors.lock().unwrap(), [None, None], "the runner started over from nothing");
    let once: i64 =
        client.query_one("SELECT count(*) FROM items WHERE touched = 1", &[]).await.unwrap().get(0);
    assert_eq!(once, 40, "the interrupted batch rolled back; the new one ran once");
    assert_eq!(state(&set, &pool, "gated").await.state, BackfillState::Done);
}
