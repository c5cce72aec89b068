use pgskein::config::{DriftPolicy, Policy};
use pgskein::report::Warning;
use pgskein::{Error, Migrator, Target};

use crate::common::{fixture, fixture_dir, fresh_db, ledger, temp_set};

fn linear_with_edited_0002() -> pgskein::MigrationSet {
    let dir = fixture_dir("linear");
    let mut files = Vec::new();
    for name in ["0001_items.sql", "0002_item_price.sql", "0003_item_name_index.sql", "0004_item_tags.sql"] {
        let mut text = std::fs::read_to_string(dir.join(name)).unwrap();
        if name.starts_with("0002") {
            text = text.replace("price_cents >= 0", "price_cents >= 1");
        }
        files.push((name, text));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    temp_set(&files).unwrap()
}

fn policy(changed: Policy, ahead: Policy, diverged: Policy) -> pgskein::Config {
    pgskein::Config::default().drift(DriftPolicy { changed_checksum: changed, ahead, diverged })
}

#[tokio::test]
async fn a_changed_checksum_is_refused_by_default_and_allowed_by_policy() {
    let db = fresh_db("checksum").await;
    let client = db.connect().await.unwrap();
    fixture("linear").upgrade(&client, &"0002".parse().unwrap()).await.unwrap();
    let edited = linear_with_edited_0002();
    let err = edited.run(&client).await.unwrap_err();
    let Error::ChecksumMismatch { changed } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].0.as_str(), "0002_item_price");
    assert!(changed[0].1.ends_with("0002_item_price.sql"));
    assert_eq!(ledger(&client).await.len(), 2, "nothing ran");

    let lenient = edited.with_config(policy(Policy::Warn, Policy::Warn, Policy::Error));
    let report = lenient.run(&client).await.unwrap();
    assert_eq!(report.steps.len(), 2);
    assert!(
        matches!(&report.warnings[..], [Warning::ChecksumChanged { changed }] if changed[0].as_str() == "0002_item_price")
    );
}

#[tokio::test]
async fn a_database_ahead_of_the_code_runs_with_a_warning() {
    let db = fresh_db("ahead").await;
    let client = db.connect().await.unwrap();
    fixture("ahead").run(&client).await.unwrap();
    let older = fixture("linear");
    let report = older.run(&client).await.unwrap();
    assert!(report.steps.is_empty());
    assert_eq!(report.warnings, [Warning::Ahead { unknown: vec!["0005_item_notes".into()] }]);
    let status = older.status(&client).await.unwrap();
    assert!(status.ahead);
    assert_eq!(status.unknown, ["0005_item_notes"]);

    let strict = older.clone().with_config(policy(Policy::Error, Policy::Error, Policy::Error));
    let err = strict.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::Ahead { unknown } if unknown == &["0005_item_notes"]), "{err:?}");

    // The older code cannot downgrade what the newer revision builds on.
    let err = older.downgrade(&client, &Target::Relative(-1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::DowngradeBelowUnknown { id, .. } if id.as_str() == "0004_item_tags"),
        "{err:?}"
    );
    assert_eq!(ledger(&client).await.len(), 5);
}

#[tokio::test]
async fn a_diverged_history_is_refused_by_default_and_allowed_by_policy() {
    let db = fresh_db("diverged").await;
    let client = db.connect().await.unwrap();
    let other = crate::common::temp_set(&[
        ("0001_items.sql", &std::fs::read_to_string(fixture_dir("linear").join("0001_items.sql")).unwrap()),
        ("0002_other.sql", "-- pgskein: revises 0001_items\n-- pgskein: up\nCREATE TABLE other (id int);\n-- pgskein: down\nDROP TABLE other;\n"),
    ])
    .unwrap();
    other.run(&client).await.unwrap();
    let code = fixture("linear");
    let err = code.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::Diverged { unknown } if unknown == &["0002_other"]), "{err:?}");
    assert!(err.to_string().contains("0002_other"));
    assert_eq!(ledger(&client).await.len(), 2);

    let lenient = code.with_config(policy(Policy::Error, Policy::Warn, Policy::Warn));
    let report = lenient.run(&client).await.unwrap();
    assert_eq!(report.steps.len(), 3);
    assert_eq!(report.warnings, [Warning::Diverged { unknown: vec!["0002_other".into()] }]);
}
