use pgskein::status::Resolution;
use pgskein::{Error, Migrator, Target};

use crate::common::{catalog, fixture, fresh_db, ledger, lock_held};

#[tokio::test]
async fn a_revision_failing_half_way_leaves_nothing_of_itself() {
    let db = fresh_db("halfway").await;
    let client = db.connect().await.unwrap();
    let set = fixture("fails_halfway");
    let err = set.run(&client).await.unwrap_err();
    let Error::RevisionFailed { id, path, line, report, .. } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!(id.as_str(), "0002_orders");
    assert!(path.ends_with("0002_orders.sql"));
    assert_eq!(*line, Some(6), "the failing INSERT is on line 6 of the file");
    assert_eq!(report.steps.len(), 1, "0001 was applied before the failure");
    assert_eq!(err.db_code(), Some("23505"));
    let chain = crate::common::chain(&err);
    assert!(chain.contains("duplicate key value violates unique constraint \"orders_pkey\""), "{chain}");
    assert!(err.to_string().contains("0002_orders"));
    assert_eq!(ledger(&client).await, [("0001_items".to_owned(), "applied".to_owned())]);
    assert!(!catalog(&client).await.iter().any(|l| l.contains("orders")));
    let failures: i64 = client
        .query_one(
            "SELECT count(*) FROM pgskein.events WHERE kind = 'fail' AND revision = '0002_orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 1, "the failure is in the audit log");
    assert!(!lock_held(&client).await);
}

#[tokio::test]
async fn single_transaction_failure_rolls_back_every_revision() {
    let db = fresh_db("singlefail").await;
    let client = db.connect().await.unwrap();
    let set = fixture("fails_halfway")
        .with_config(pgskein::Config::default().transaction_mode(pgskein::config::TransactionMode::Single));
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::RevisionFailed { id, .. } if id.as_str() == "0002_orders"), "{err:?}");
    assert!(ledger(&client).await.is_empty());
    assert!(!catalog(&client).await.iter().any(|l| l.contains("items")));
}

#[tokio::test]
async fn a_failed_non_transactional_revision_blocks_later_runs_until_resolved() {
    let db = fresh_db("notx").await;
    let client = db.connect().await.unwrap();
    let set = fixture("notx_fails");
    let err = set.run(&client).await.unwrap_err();
    let Error::RevisionFailed { id, statement, line, .. } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!(id.as_str(), "0002_indexes");
    assert_eq!(*statement, Some(2));
    assert_eq!(*line, Some(5));
    let row = client
        .query_one(
            "SELECT state, failed_statement, last_error FROM pgskein.applied WHERE id = '0002_indexes'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, Option<i32>>(1), Some(2));
    assert!(row.get::<_, String>(2).contains("no_such_table"));

    let again = set.run(&client).await.unwrap_err();
    let Error::Blocked { id, state, statement, .. } = &again else { panic!("unexpected: {again:?}") };
    assert_eq!((id.as_str(), state.as_str(), *statement), ("0002_indexes", "failed", Some(2)));
    let msg = again.to_string();
    assert!(
        msg.contains("0002_indexes") && msg.contains("MarkReverted") && msg.contains("statement 2"),
        "{msg}"
    );
    let status = set.status(&client).await.unwrap();
    assert_eq!(status.blocked.len(), 1);

    // The operator undoes the first statement by hand and marks the revision reverted.
    client.batch_execute("DROP INDEX items_name_idx").await.unwrap();
    set.resolve(&client, "0002_indexes", Resolution::MarkReverted).await.unwrap();
    assert_eq!(ledger(&client).await, [("0001_items".to_owned(), "applied".to_owned())]);
    let resolve_err = set.resolve(&client, "0002_indexes", Resolution::MarkReverted).await.unwrap_err();
    assert!(matches!(resolve_err, Error::NothingToResolve { .. }));
}

#[tokio::test]
async fn downgrade_through_an_irreversible_revision_is_refused_before_anything_runs() {
    let db = fresh_db("irreversible").await;
    let client = db.connect().await.unwrap();
    let set = crate::common::temp_set(&[
        ("0001_a.sql", "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n"),
        ("0002_b.sql", "-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\n"),
        ("0003_c.sql", "-- pgskein: revises 0002_b\n-- pgskein: up\nCREATE TABLE c (id int);\n-- pgskein: down\nDROP TABLE c;\n"),
    ])
    .unwrap();
    set.run(&client).await.unwrap();
    let before = catalog(&client).await;
    let err = set.downgrade(&client, &Target::Base).await.unwrap_err();
    assert!(matches!(&err, Error::Irreversible { id, .. } if id.as_str() == "0002_b"), "{err:?}");
    assert!(err.to_string().contains("0002_b.sql"));
    assert_eq!(catalog(&client).await, before);
    assert_eq!(ledger(&client).await.len(), 3);
    // One step back is fine: 0003 has a down section.
    set.downgrade(&client, &Target::Relative(-1)).await.unwrap();
    assert_eq!(ledger(&client).await.len(), 2);
}

#[tokio::test]
async fn verify_returning_false_rolls_the_revision_back() {
    let db = fresh_db("verify").await;
    let client = db.connect().await.unwrap();
    let set = crate::common::temp_set(&[(
        "0001_a.sql",
        "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n-- pgskein: verify\nSELECT true;\nSELECT count(*) = 1 FROM a;\n",
    )])
    .unwrap();
    let err = set.run(&client).await.unwrap_err();
    let Error::VerifyFailed { id, query, .. } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!(id.as_str(), "0001_a");
    assert_eq!(query, "SELECT count(*) = 1 FROM a");
    assert!(ledger(&client).await.is_empty());
    assert!(!catalog(&client).await.iter().any(|l| l.contains("relation public.a ")));
}

#[tokio::test]
async fn schema_name_with_quotes_and_spaces_works() {
    let db = fresh_db("quoted").await;
    let client = db.connect().await.unwrap();
    let schema = "my \"odd\" ledger";
    let set = fixture("linear").with_config(pgskein::Config::default().schema(schema));
    set.run(&client).await.unwrap();
    let n: i64 =
        client.query_one("SELECT count(*) FROM \"my \"\"odd\"\" ledger\".applied", &[]).await.unwrap().get(0);
    assert_eq!(n, 4);
    assert!(set.run(&client).await.unwrap().fast_path);
}

#[tokio::test]
async fn over_long_schema_name_is_refused_before_touching_the_database() {
    let db = fresh_db("longschema").await;
    let client = db.connect().await.unwrap();
    let before = catalog(&client).await;
    let set = fixture("linear").with_config(pgskein::Config::default().schema("s".repeat(64)));
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSchema { .. }), "{err:?}");
    assert!(err.to_string().contains("63-byte"));
    assert_eq!(catalog(&client).await, before);
    let schemas: i64 = client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'sss%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0);
}

#[tokio::test]
async fn a_bad_target_is_refused_before_the_lock_and_the_bookkeeping_tables() {
    let db = fresh_db("badtarget").await;
    let client = db.connect().await.unwrap();
    let set = fixture("linear");
    let err = set.upgrade(&client, &Target::Relative(-1)).await.unwrap_err();
    assert!(err.to_string().contains("not an upgrade target"), "{err}");
    let err = set.downgrade(&client, &"nope".parse().unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::UnknownTarget { target } if target == "nope"), "{err:?}");
    let schemas: i64 = client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgskein'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "nothing was created for a target that cannot be planned");
}

#[tokio::test]
async fn a_syntax_error_names_the_statement_and_the_line_it_is_in() {
    let db = fresh_db("syntaxline").await;
    let client = db.connect().await.unwrap();
    let set = crate::common::temp_set(&[(
        "0001_a.sql",
        "-- pgskein: message two tables\n-- pgskein: up\nCREATE TABLE a (id int);\n\nCREATE TABLE b (id int;\n",
    )])
    .unwrap();
    let err = set.run(&client).await.unwrap_err();
    let Error::RevisionFailed { statement, line, .. } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!((*statement, *line), (Some(2), Some(5)));
    assert_eq!(err.db_code(), Some("42601"));
}
