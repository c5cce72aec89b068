use std::time::Duration;

use pgskein::{Config, Error, Migrator};

use crate::common::{fixture, fresh_db, ledger};

#[tokio::test]
async fn a_lock_held_past_the_timeout_names_the_holder_and_changes_nothing() {
    let db = fresh_db("locktimeout").await;
    let holder = db.connect().await.unwrap();
    holder.batch_execute("SET application_name = 'other-migrator'").await.unwrap();
    let key = Config::default().lock_key();
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
    let holder_pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);

    let client = db.connect().await.unwrap();
    let set =
        fixture("linear").with_config(Config::default().lock_wait_timeout(Some(Duration::from_millis(300))));
    let err = set.run(&client).await.unwrap_err();
    let Error::LockTimeout { waited, holder: Some(h) } = &err else { panic!("unexpected: {err:?}") };
    assert!(*waited >= Duration::from_millis(300));
    assert_eq!(h.pid, holder_pid);
    assert_eq!(h.application_name, "other-migrator");
    assert!(err.to_string().contains("other-migrator"));
    assert!(ledger(&client).await.is_empty());

    holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.unwrap();
    assert_eq!(set.run(&client).await.unwrap().steps.len(), 4);
}

#[tokio::test]
async fn the_lock_session_settings_are_reset_after_the_run() {
    let db = fresh_db("lockreset").await;
    let client = db.connect().await.unwrap();
    client.batch_execute("SET application_name = 'my-service'").await.unwrap();
    let set = fixture("linear").with_config(Config::default().application_name("pgskein-migrate"));
    set.run(&client).await.unwrap();
    let recorded: String = client
        .query_one("SELECT application_name FROM pgskein.applied WHERE id = '0001_items'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, "pgskein-migrate");
    let now: String =
        client.query_one("SELECT current_setting('application_name')", &[]).await.unwrap().get(0);
    assert_eq!(now, "my-service", "the session's own application_name is restored");
}

#[tokio::test]
async fn the_documented_holder_query_finds_the_lock_holder() {
    let db = fresh_db("lockquery").await;
    let holder = db.connect().await.unwrap();
    let key = Config::default().lock_key();
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let observer = db.connect().await.unwrap();
    let found: i32 = observer
        .query_one(
            "SELECT pid FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid = 1 AND granted \
               AND classid::bigint = ($1::bigint >> 32) & 4294967295 \
               AND objid::bigint = $1::bigint & 4294967295 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, pid);
}
