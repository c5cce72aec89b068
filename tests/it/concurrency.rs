use std::sync::Arc;

use pgskein::Migrator;

use crate::common::{example, fresh_db, ledger, lock_held};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_runs_apply_each_revision_exactly_once() {
    let db = fresh_db("starters").await;
    let set = Arc::new(example());
    let pool = db.pool(40);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (set, pool) = (set.clone(), pool.clone());
        tasks.push(tokio::spawn(async move { set.run(&pool).await }));
    }
    let mut applied_steps = 0;
    for t in tasks {
        let report = t.await.unwrap().expect("every starter succeeds");
        applied_steps += report.steps.len();
    }
    assert_eq!(applied_steps, set.len(), "the steps were split between starters, each applied once");
    let client = db.connect().await.unwrap();
    let rows = ledger(&client).await;
    assert_eq!(rows.len(), set.len());
    let per_revision: Vec<i64> = client
        .query("SELECT count(*) FROM pgskein.events WHERE kind = 'apply' GROUP BY revision", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(per_revision.len(), set.len());
    assert!(per_revision.iter().all(|&n| n == 1));
    let tables: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(tables >= 8);
    assert!(!lock_held(&client).await);
}
