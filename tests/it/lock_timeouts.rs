use std::time::{Duration, Instant};

use pgskein::{Config, Error, Migrator};

use crate::common::{fixture, fresh_db, ledger};

fn quick(lock_timeout_ms: u64, attempts: u32) -> Config {
    Config::default()
        .lock_timeout(Some(Duration::from_millis(lock_timeout_ms)))
        .lock_retries(attempts, Duration::from_millis(20))
}

/// Polls `sql` (a count) until it is positive, or fails after 10 s.
async fn until(client: &tokio_postgres::Client, sql: &str) {
    let positive = crate::common::eventually(Duration::from_secs(10), || async {
        client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) > 0
    })
    .await;
    assert!(positive, "timed out waiting for: {sql}");
}

const WAITING_FOR_ITEMS: &str =
    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'items'::regclass";

#[tokio::test]
async fn a_step_blocked_by_a_lock_retries_and_succeeds_once_it_is_released() {
    let db = fresh_db("lockretry").await;
    let client = db.connect().await.unwrap();
    let set = fixture("linear");
    set.upgrade(&client, &"0001".parse().unwrap()).await.unwrap();

    let holder = db.connect().await.unwrap();
    holder.batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let migrating = {
        let set = set.clone().with_config(quick(100, 50));
        let db_client = db.connect().await.unwrap();
        tokio::spawn(async move { set.upgrade(&db_client, &"0002".parse().unwrap()).await })
    };
    // At least one attempt timed out and was recorded before the lock goes away.
    until(
        &client,
        "SELECT count(*) FROM pgskein.events WHERE kind = 'fail' AND revision = '0002_item_price'",
    )
    .await;
    holder.batch_execute("COMMIT").await.unwrap();
    let report = migrating.await.unwrap().expect("the retry succeeds");
    assert_eq!(report.steps.len(), 1);
    assert_eq!(ledger(&client).await.len(), 2);
}

#[tokio::test]
async fn a_step_that_never_gets_its_lock_fails_after_the_last_attempt() {
    let db = fresh_db("lockexhaust").await;
    let client = db.connect().await.unwrap();
    let set = fixture("linear");
    set.upgrade(&client, &"0001".parse().unwrap()).await.unwrap();
    let holder = db.connect().await.unwrap();
    holder.batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE").await.unwrap();

    let err = set.clone().with_config(quick(50, 3)).run(&client).await.unwrap_err();
    let Error::LockRetriesExhausted { id, attempts, lock_timeout, .. } = &err else {
        panic!("unexpected: {err:?}")
    };
    assert_eq!(
        (id.as_str(), *attempts, *lock_timeout),
        ("0002_item_price", 3, Some(Duration::from_millis(50)))
    );
    assert_eq!(err.db_code(), Some("55P03"));
    let msg = err.to_string();
    assert!(
        msg.contains("lock_timeout") && msg.contains("3 attempts") && msg.contains("pg_stat_activity"),
        "{msg}"
    );
    assert_eq!(ledger(&client).await.len(), 1, "nothing of 0002 was recorded");
    let fails: i64 = client
        .query_one(
            "SELECT count(*) FROM pgskein.events WHERE kind = 'fail' AND revision = '0002_item_price'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fails, 3, "every attempt is in the audit log");
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn readers_queued_behind_a_waiting_migration_are_released_by_its_lock_timeout() {
    let db = fresh_db("lockreaders").await;
    let client = db.connect().await.unwrap();
    let set = fixture("linear");
    set.upgrade(&client, &"0001".parse().unwrap()).await.unwrap();

    // A long transaction that has read the table: the ALTER must wait for it.
    let long = db.connect().await.unwrap();
    long.batch_execute("BEGIN; SELECT count(*) FROM items").await.unwrap();
    let migrating = {
        let set = set.clone().with_config(quick(300, 2));
        let c = db.connect().await.unwrap();
        tokio::spawn(async move { set.upgrade(&c, &"0002".parse().unwrap()).await })
    };
    until(&client, WAITING_FOR_ITEMS).await;
    // A reader now queues behind the migration's pending ACCESS EXCLUSIVE request.
    // Without a lock timeout it would wait as long as the long transaction lives;
    // here it must get through while that transaction is still open.
    let reader = db.connect().await.unwrap();
    let started = Instant::now();
    let read =
        tokio::time::timeout(Duration::from_secs(10), reader.query_one("SELECT count(*) FROM items", &[]))
            .await;
    assert!(read.expect("the reader was released").is_ok());
    assert!(started.elapsed() < Duration::from_secs(3), "blocked for {:?}", started.elapsed());
    let err = migrating.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::LockRetriesExhausted { attempts: 2, .. }), "{err:?}");
    long.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn a_revision_can_declare_its_own_lock_timeout() {
    let set = crate::common::temp_set(&[(
        "0001_a.sql",
        "-- pgskein: lock-timeout 2s\n-- pgskein: statement-timeout 5min\n-- pgskein: up\nSELECT 1;\n",
    )])
    .unwrap();
    let rev = set.get("0001_a").unwrap();
    assert_eq!(rev.lock_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(rev.statement_timeout(), Some(Duration::from_secs(300)));
    let err = crate::common::temp_set(&[("0001_a.sql", "-- pgskein: lock-timeout soon\n-- pgskein: up\n")])
        .unwrap_err();
    assert!(err.to_string().contains("lock-timeout"), "{err}");

    let db = fresh_db("locktimeoutdirective").await;
    let client = db.connect().await.unwrap();
    let probe = crate::common::temp_set(&[(
        "0001_probe.sql",
        "-- pgskein: lock-timeout 1234ms\n-- pgskein: up\nCREATE TABLE probe AS SELECT current_setting('lock_timeout') AS v;\n",
    )])
    .unwrap();
    probe.run(&client).await.unwrap();
    let v: String = client.query_one("SELECT v FROM probe", &[]).await.unwrap().get(0);
    assert_eq!(v, "1234ms");
}
