use include_dir::{Dir, include_dir};
use pgskein::{MigrationSet, Migrator, Target};

use crate::common::{catalog, example, fresh_db, ids, ledger};

static EMBEDDED: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");

#[test]
fn embedded_and_on_disk_sources_give_the_same_revisions() {
    let embedded = MigrationSet::from_embedded(&EMBEDDED).unwrap();
    let disk = example();
    assert_eq!(embedded.len(), disk.len());
    for (a, b) in embedded.revisions().zip(disk.revisions()) {
        assert_eq!(a.id(), b.id());
        assert_eq!(a.checksum(), b.checksum());
        assert_eq!(a.revises(), b.revises());
        assert_eq!(a.depends_on(), b.depends_on());
        assert_eq!(a.branch(), b.branch());
        assert_eq!(a.transaction(), b.transaction());
        assert_eq!(a.up(), b.up());
        assert_eq!(a.down(), b.down());
        assert_eq!(a.verify(), b.verify());
        assert!(b.origin().ends_with(a.origin()), "{} vs {}", a.origin(), b.origin());
    }
}

#[test]
fn example_schema_is_one_graph_with_branches_and_a_merge() {
    let set = example();
    assert_eq!(ids(&set.heads().into_iter().cloned().collect::<Vec<_>>()), ["0010_audit_log"]);
    let merges = set.revisions().filter(|r| r.revises().len() > 1).count();
    assert!(merges >= 1);
    assert!(set.revisions().any(|r| !r.depends_on().is_empty()));
    assert!(set.revisions().any(|r| r.transaction() == pgskein::migration::Transaction::None));
    assert!(set.revisions().all(|r| r.down().is_some()));
}

#[tokio::test]
async fn up_down_up_gives_the_same_catalog_each_time() {
    let db = fresh_db("updownup").await;
    let client = db.connect().await.unwrap();
    let set = example();
    let empty = catalog(&client).await;

    let report = set.run(&client).await.unwrap();
    assert_eq!(report.steps.len(), set.len());
    assert!(!report.fast_path);
    let at_head = catalog(&client).await;
    assert!(at_head.iter().any(|l| l.starts_with("extension btree_gist")));
    assert!(at_head.iter().any(|l| l.contains("gin_trgm_ops")));
    let rows = ledger(&client).await;
    assert_eq!(rows.len(), set.len());
    assert!(rows.iter().all(|(_, state)| state == "applied"));

    let down = set.downgrade(&client, &Target::Base).await.unwrap();
    assert_eq!(down.steps.len(), set.len());
    assert_eq!(catalog(&client).await, empty);
    assert!(ledger(&client).await.is_empty());

    set.run(&client).await.unwrap();
    assert_eq!(catalog(&client).await, at_head);
    let status = set.status(&client).await.unwrap();
    assert!(status.pending.is_empty());
    assert_eq!(ids(&status.current), ["0010_audit_log"]);
}

#[tokio::test]
async fn every_revision_down_restores_the_catalog_before_its_up() {
    let db = fresh_db("stepwise").await;
    let client = db.connect().await.unwrap();
    let set = example();
    let mut before = vec![catalog(&client).await];
    for _ in 0..set.len() {
        let r = set.upgrade(&client, &Target::Relative(1)).await.unwrap();
        assert_eq!(r.steps.len(), 1);
        before.push(catalog(&client).await);
    }
    for i in (0..set.len()).rev() {
        let r = set.downgrade(&client, &Target::Relative(-1)).await.unwrap();
        assert_eq!(r.steps.len(), 1);
        assert_eq!(catalog(&client).await, before[i], "down of {} did not restore the schema", r.steps[0].id);
    }
}

#[tokio::test]
async fn a_second_run_at_head_takes_the_fast_path_and_records_nothing() {
    let db = fresh_db("fastpath").await;
    let client = db.connect().await.unwrap();
    let set = example();
    set.run(&client).await.unwrap();
    let events: i64 = client.query_one("SELECT count(*) FROM pgskein.events", &[]).await.unwrap().get(0);
    let again = set.run(&client).await.unwrap();
    assert!(again.fast_path);
    assert!(again.steps.is_empty());
    let after: i64 = client.query_one("SELECT count(*) FROM pgskein.events", &[]).await.unwrap().get(0);
    assert_eq!(events, after);
}

#[tokio::test]
async fn ledger_records_parents_checksums_and_events() {
    let db = fresh_db("ledgerrows").await;
    let client = db.connect().await.unwrap();
    let set = example();
    set.run(&client).await.unwrap();
    let row = client
        .query_one(
            "SELECT revises, depends_on, checksum, kind, applied_by FROM pgskein.applied WHERE id = '0009_merge_auth_billing'",
            &[],
        )
        .await
        .unwrap();
    let revises: Vec<String> = row.get(0);
    assert_eq!(revises, ["0006_auth_sessions", "0008_billing_subscriptions"]);
    let checksum: String = row.get(2);
    assert_eq!(checksum, set.get("0009_merge_auth_billing").unwrap().checksum().to_hex());
    assert_eq!(row.get::<_, String>(3), "sql");
    let deps: Vec<String> = client
        .query_one("SELECT depends_on FROM pgskein.applied WHERE id = '0008_billing_subscriptions'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deps, ["0005_auth_users"]);
    let applies: i64 = client
        .query_one("SELECT count(*) FROM pgskein.events WHERE kind = 'apply'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applies as usize, set.len());
    let format: String =
        client.query_one("SELECT value FROM pgskein.meta WHERE key = 'format'", &[]).await.unwrap().get(0);
    assert_eq!(format, "4");
}

#[tokio::test]
async fn upgrading_to_a_branch_revision_brings_its_dependencies_but_not_the_other_branch() {
    let db = fresh_db("branches").await;
    let client = db.connect().await.unwrap();
    let set = example();
    let r = set.upgrade(&client, &"0008".parse().unwrap()).await.unwrap();
    let applied: Vec<&str> = r.steps.iter().map(|s| s.id.as_str()).collect();
    // billing's subscriptions depend on auth's users, so that one comes too; auth's sessions do not.
    assert!(applied.contains(&"0005_auth_users"));
    assert!(applied.contains(&"0008_billing_subscriptions"));
    assert!(!applied.contains(&"0006_auth_sessions"));
    let status = set.status(&client).await.unwrap();
    assert_eq!(ids(&status.pending), ["0006_auth_sessions", "0009_merge_auth_billing", "0010_audit_log"]);
    assert_eq!(ids(&status.current), ["0008_billing_subscriptions"]);
    // Both branches were merged, so `auth@head` now means the merged head: everything.
    let r = set.upgrade(&client, &"auth@head".parse().unwrap()).await.unwrap();
    assert_eq!(r.steps.len(), 3);
}

#[tokio::test]
async fn single_transaction_mode_applies_everything_or_nothing() {
    let db = fresh_db("single").await;
    let client = db.connect().await.unwrap();
    let set = crate::common::fixture("linear");
    let single = pgskein::Config::default().transaction_mode(pgskein::config::TransactionMode::Single);
    let err = set.clone().with_config(single.clone()).run(&client).await.unwrap_err();
    assert!(
        matches!(err, pgskein::Error::NoTransactionInSingleMode { ref id, .. } if id.as_str() == "0003_item_name_index"),
        "{err}"
    );
    assert!(ledger(&client).await.is_empty());
    let r = set.clone().with_config(single.clone()).upgrade(&client, &"0002".parse().unwrap()).await.unwrap();
    assert_eq!(r.steps.len(), 2);
    assert_eq!(ledger(&client).await.len(), 2);
}

#[tokio::test]
async fn stamp_records_without_running_and_plan_reads_without_changing() {
    let db = fresh_db("stamp").await;
    let client = db.connect().await.unwrap();
    let set = crate::common::fixture("linear");
    let empty = catalog(&client).await;

    let plan = set.plan(&client, &"0003".parse().unwrap()).await.unwrap();
    let steps: Vec<String> = plan.steps.iter().map(|s| format!("{} {}", s.direction, s.id)).collect();
    assert_eq!(steps, ["up 0001_items", "up 0002_item_price", "up 0003_item_name_index"]);
    assert_eq!(catalog(&client).await, empty, "planning changes nothing");

    let report = set.stamp(&client, &Target::Head).await.unwrap();
    assert_eq!(report.steps.len(), 4);
    assert!(report.steps.iter().all(|s| s.stamped));
    assert_eq!(ledger(&client).await.len(), 4);
    assert_eq!(catalog(&client).await, empty, "stamping runs no body");
    let stamps: i64 = client
        .query_one("SELECT count(*) FROM pgskein.events WHERE kind = 'stamp'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stamps, 4);
    assert!(set.run(&client).await.unwrap().fast_path, "a stamped database is at head");

    let back = set.plan(&client, &Target::Relative(-2)).await.unwrap();
    let steps: Vec<String> = back.steps.iter().map(|s| format!("{} {}", s.direction, s.id)).collect();
    assert_eq!(steps, ["down 0004_item_tags", "down 0003_item_name_index"]);

    set.stamp(&client, &"0001".parse().unwrap()).await.unwrap();
    assert_eq!(ledger(&client).await, [("0001_items".to_owned(), "applied".to_owned())]);
}
