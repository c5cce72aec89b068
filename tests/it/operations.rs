use pgskein::status::Resolution;
use pgskein::{Error, MigrationSet, Migrator};

use crate::common::{fixture, fixture_dir, fresh_db, ledger, temp_set};

#[tokio::test]
async fn verify_reruns_checks_and_reports_what_no_longer_holds() {
    let db = fresh_db("verifyops").await;
    let client = db.connect().await.unwrap();
    let set = fixture("linear");
    set.run(&client).await.unwrap();
    let report = set.verify(&client).await.unwrap();
    assert_eq!(crate::common::ids(&report.checked), ["0002_item_price"]);
    assert!(report.failed.is_empty());

    client.batch_execute("ALTER TABLE items DROP COLUMN price_cents").await.unwrap();
    let report = set.verify(&client).await.unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0.as_str(), "0002_item_price");
    assert!(report.failed[0].1.contains("price_cents"), "{}", report.failed[0].1);
    let verifies: i64 = client
        .query_one("SELECT count(*) FROM pgskein.events WHERE kind = 'verify'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(verifies, 2);
}

#[tokio::test]
async fn repair_records_edited_checksums_so_runs_pass_again() {
    let db = fresh_db("repair").await;
    let client = db.connect().await.unwrap();
    fixture("linear").run(&client).await.unwrap();
    let dir = fixture_dir("linear");
    let files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("-- pgskein: message A table of items", "-- items");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let edited = temp_set(&files).unwrap();
    assert!(matches!(edited.run(&client).await.unwrap_err(), Error::ChecksumMismatch { .. }));
    let repaired = edited.repair(&client).await.unwrap();
    assert_eq!(crate::common::ids(&repaired), ["0001_items"]);
    assert!(edited.run(&client).await.unwrap().fast_path, "the digest was updated with the checksum");
    let repairs: i64 = client
        .query_one("SELECT count(*) FROM pgskein.events WHERE kind = 'repair'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(repairs, 1);
    assert!(edited.repair(&client).await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_resumes_a_failed_revision_at_the_statement_that_failed() {
    let db = fresh_db("retry").await;
    let client = db.connect().await.unwrap();
    let set = fixture("notx_fails");
    set.run(&client).await.unwrap_err();
    // The operator creates what statement 2 needed; statement 1 must not run again
    // (its index exists: running it twice would fail).
    client.batch_execute("CREATE TABLE no_such_table (x int)").await.unwrap();
    set.resolve(&client, "0002_indexes", Resolution::Retry).await.unwrap();
    assert_eq!(
        ledger(&client).await,
        [("0001_items".to_owned(), "applied".to_owned()), ("0002_indexes".to_owned(), "applied".to_owned())]
    );
    assert!(set.run(&client).await.unwrap().fast_path);
    let retries: i64 = client
        .query_one("SELECT count(*) FROM pgskein.events WHERE kind = 'retry'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(retries, 1);
}

#[tokio::test]
async fn retry_drops_the_invalid_index_a_failed_concurrent_build_left() {
    let db = fresh_db("retryinvalid").await;
    let client = db.connect().await.unwrap();
    let set = temp_set(&[
        (
            "0001_emails.sql",
            "-- pgskein: up\nCREATE TABLE emails (address text);\nINSERT INTO emails VALUES ('a@x'), ('a@x');\n\
             -- pgskein: down\nDROP TABLE emails;\n",
        ),
        (
            "0002_unique_emails.sql",
            "-- pgskein: revises 0001_emails\n-- pgskein: transaction none\n-- pgskein: up\n\
             CREATE UNIQUE INDEX CONCURRENTLY emails_address_key ON emails (address);\n\
             -- pgskein: down\nDROP INDEX CONCURRENTLY emails_address_key;\n",
        ),
    ])
    .unwrap();
    let err = set.run(&client).await.unwrap_err();
    assert_eq!(err.db_code(), Some("23505"));
    let blocked = set.run(&client).await.unwrap_err();
    assert!(
        matches!(&blocked, Error::Blocked { invalid_indexes, .. } if invalid_indexes.is_empty()),
        "{blocked:?}"
    );
    let invalid: i64 =
        client.query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[]).await.unwrap().get(0);
    assert_eq!(invalid, 0, "the invalid index the failed build left was dropped when it failed");
    // One the process could not drop (as if it had died mid-build) is dropped by the retry.
    let leftover =
        client.batch_execute("CREATE UNIQUE INDEX CONCURRENTLY emails_address_key ON emails (address)").await;
    assert_eq!(leftover.unwrap_err().code().map(|c| c.code()), Some("23505"));

    client.batch_execute("DELETE FROM emails WHERE ctid <> (SELECT min(ctid) FROM emails)").await.unwrap();
    set.resolve(&client, "0002_unique_emails", Resolution::Retry).await.unwrap();
    let valid: bool = client
        .query_one("SELECT indisvalid FROM pg_index WHERE indexrelid = 'emails_address_key'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert!(valid);
    assert_eq!(ledger(&client).await.len(), 2);
}

fn released() -> MigrationSet {
    temp_set(&[
        ("0001_a.sql", "-- pgskein: release 1.0.0\n-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n"),
        ("0002_b.sql", "-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\n-- pgskein: down\nDROP TABLE b;\n"),
        (
            "0003_c.sql",
            "-- pgskein: revises 0002_b\n-- pgskein: release 2.0.0\n-- pgskein: up\nCREATE TABLE c (id int);\n\
             -- pgskein: down\nDROP TABLE c;\n",
        ),
    ])
    .unwrap()
}

#[tokio::test]
async fn release_targets_and_required_releases() {
    let db = fresh_db("releases").await;
    let client = db.connect().await.unwrap();
    let set = released();
    assert!(matches!(
        set.require_release(&client, ">=1.0").await.unwrap_err(),
        Error::ReleaseRequired { found: None, .. }
    ));
    let r = set.upgrade(&client, &"@1.0.0".parse().unwrap()).await.unwrap();
    assert_eq!(r.steps.len(), 1);
    assert_eq!(set.status(&client).await.unwrap().release, Some(semver::Version::new(1, 0, 0)));
    let err = set.require_release(&client, ">=2.0").await.unwrap_err();
    assert!(matches!(&err, Error::ReleaseRequired { found: Some(v), .. } if v.major == 1), "{err:?}");
    assert!(err.to_string().contains(">=2.0") && err.to_string().contains("1.0.0"));

    set.run(&client).await.unwrap();
    assert_eq!(set.require_release(&client, ">=2.0").await.unwrap(), semver::Version::new(2, 0, 0));
    let down = set.downgrade(&client, &"@1.0.0".parse().unwrap()).await.unwrap();
    let ids: Vec<&str> = down.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["0003_c", "0002_b"]);
    assert!(matches!(set.require_release(&client, "2.x").await.unwrap_err(), Error::ReleaseRequired { .. }));
    assert!(matches!(
        set.upgrade(&client, &"@0.1.0".parse().unwrap()).await.unwrap_err(),
        Error::UnknownTarget { .. }
    ));
}
