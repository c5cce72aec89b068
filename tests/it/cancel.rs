use std::time::Duration;

use pgskein::{Migrator, Target};

use crate::common::{CancelAfter, eventually, fresh_db, ledger, lock_held, temp_set};

fn three_tables() -> pgskein::MigrationSet {
    temp_set(&[
        ("0001_a.sql", "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n"),
        (
            "0002_b.sql",
            "-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\n-- pgskein: down\nDROP TABLE b;\n-- pgskein: verify\nSELECT count(*) = 0 FROM b;\n",
        ),
        ("0003_c.sql", "-- pgskein: revises 0002_b\n-- pgskein: up\nCREATE TABLE c (id int);\n-- pgskein: down\nDROP TABLE c;\n"),
    ])
    .unwrap()
}

/// Tables a, b, c exist exactly when their revisions are recorded.
async fn assert_consistent(client: &tokio_postgres::Client, when: &str) {
    let tables: Vec<String> = client
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let recorded: Vec<String> = ledger(client)
        .await
        .into_iter()
        .map(|(id, state)| {
            assert_eq!(state, "applied", "{when}");
            id[5..].to_owned()
        })
        .collect();
    assert_eq!(tables, recorded, "{when}: catalog and ledger disagree");
}

async fn lock_freed(client: &tokio_postgres::Client) -> bool {
    // A closed pooled connection releases its lock when its backend exits: wait for that, bounded.
    eventually(Duration::from_secs(10), || async { !lock_held(client).await }).await
}

#[tokio::test]
async fn dropping_run_at_every_await_point_leaves_the_lock_free_and_the_ledger_consistent() {
    let db = fresh_db("cancel").await;
    let set = three_tables();
    let client = db.connect().await.unwrap();
    let observer = db.connect().await.unwrap();
    let mut limit = 1;
    loop {
        let outcome = CancelAfter::new(set.run(&client), limit).await;
        // Requests queued by the dropped future are answered before this one.
        client.simple_query("SELECT 1").await.unwrap();
        assert!(!lock_held(&observer).await, "lock held after cancelling at await point {limit}");
        assert_consistent(&observer, &format!("cancelled at await point {limit}")).await;
        let report = set.run(&client).await.expect("the next run converges");
        assert_consistent(&observer, "after the next run").await;
        assert_eq!(ledger(&observer).await.len(), 3);
        if let Some(result) = outcome {
            result.unwrap();
            assert!(limit > 3, "the run should have had several await points");
            break;
        }
        assert!(!report.fast_path || limit > 1);
        set.downgrade(&client, &Target::Base).await.unwrap();
        limit += 1;
    }
}

#[tokio::test]
async fn dropping_run_on_a_pool_connection_discards_the_connection_and_frees_the_lock() {
    let db = fresh_db("cancelpool").await;
    let set = three_tables();
    let pool = db.pool(2);
    let observer = db.connect().await.unwrap();
    let mut limit = 1;
    loop {
        let outcome = CancelAfter::new(set.run(&pool), limit).await;
        assert!(lock_freed(&observer).await, "lock still held after cancelling at await point {limit}");
        assert_consistent(&observer, &format!("cancelled at await point {limit}")).await;
        set.run(&pool).await.expect("the next run converges");
        assert_eq!(ledger(&observer).await.len(), 3);
        if outcome.is_some() {
            break;
        }
        set.downgrade(&pool, &Target::Base).await.unwrap();
        limit += 1;
    }
}
