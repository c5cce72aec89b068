use pgskein::error::BoxError;
use pgskein::rust::{Conn, RustMigration, RustRevision};
use pgskein::{Error, MigrationSet, Migrator, Target};

use crate::common::{catalog, chain, fresh_db, ledger};

const PEOPLE: &[u8] = b"-- pgskein: up\nCREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL);\n\
INSERT INTO people VALUES (1, 'ada lovelace'), (2, 'alan turing');\n-- pgskein: down\nDROP TABLE people;\n";
const INDEX: &[u8] = b"-- pgskein: revises 0002_upper_names\n-- pgskein: up\nCREATE INDEX people_upper_idx ON people (upper_name);\n\
-- pgskein: down\nDROP INDEX people_upper_idx;\n";

fn upper_names(version: &str) -> RustRevision {
    RustRevision::from_fn("0002_upper_names", version, |db| {
        Box::pin(async move {
            db.batch_execute("ALTER TABLE people ADD COLUMN upper_name text").await?;
            for row in db.query("SELECT id, name FROM people", &[]).await? {
                let (id, name): (i64, String) = (row.get(0), row.get(1));
                db.execute("UPDATE people SET upper_name = $1 WHERE id = $2", &[&name.to_uppercase(), &id])
                    .await?;
            }
            Ok(())
        })
    })
    .with_down(|db| {
        Box::pin(async move {
            db.batch_execute("ALTER TABLE people DROP COLUMN upper_name").await?;
            Ok(())
        })
    })
    .revises(["0001_people"])
}

fn mixed(version: &str) -> MigrationSet {
    MigrationSet::builder()
        .file("0001_people.sql", PEOPLE)
        .rust(upper_names(version))
        .file("0003_upper_index.sql", INDEX)
        .build()
        .unwrap()
}

#[tokio::test]
async fn sql_and_rust_revisions_upgrade_and_downgrade_in_one_graph() {
    let db = fresh_db("rustmixed").await;
    let client = db.connect().await.unwrap();
    let set = mixed("1");
    let empty = catalog(&client).await;
    let report = set.run(&client).await.unwrap();
    let ids: Vec<&str> = report.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["0001_people", "0002_upper_names", "0003_upper_index"]);
    let names: Vec<String> = client
        .query("SELECT upper_name FROM people ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["ADA LOVELACE", "ALAN TURING"]);
    let kind: String = client
        .query_one("SELECT kind FROM pgskein.applied WHERE id = '0002_upper_names'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "rust");
    let at_head = catalog(&client).await;

    set.downgrade(&client, &Target::Base).await.unwrap();
    assert_eq!(catalog(&client).await, empty);
    set.run(&client).await.unwrap();
    assert_eq!(catalog(&client).await, at_head);
    assert!(set.run(&client).await.unwrap().fast_path);

    // The declared version is the checksum: changing it is drift.
    let err = mixed("2").run(&client).await.unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { changed } if changed[0].0.as_str() == "0002_upper_names"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_rust_revision_rolls_back_its_transaction_and_names_itself() {
    let db = fresh_db("rustfail").await;
    let client = db.connect().await.unwrap();
    let failing = RustRevision::from_fn("0002_half_done", "1", |db| {
        Box::pin(async move {
            db.execute("INSERT INTO people VALUES (3, 'grace hopper')", &[]).await?;
            Err::<(), BoxError>("the payment service is unreachable".into())
        })
    })
    .revises(["0001_people"]);
    let set = MigrationSet::builder().file("0001_people.sql", PEOPLE).rust(failing).build().unwrap();
    let err = set.run(&client).await.unwrap_err();
    let Error::RustRevisionFailed { id, path, report, .. } = &err else { panic!("unexpected: {err:?}") };
    assert_eq!(id.as_str(), "0002_half_done");
    assert!(path.contains("rust_revisions.rs"), "the origin is where the revision was declared: {path}");
    assert_eq!(report.steps.len(), 1);
    assert!(chain(&err).contains("the payment service is unreachable"));
    let count: i64 = client.query_one("SELECT count(*) FROM people", &[]).await.unwrap().get(0);
    assert_eq!(count, 2, "the insert was rolled back");
    assert_eq!(ledger(&client).await, [("0001_people".to_owned(), "applied".to_owned())]);
}

struct Seed;

#[async_trait::async_trait]
impl RustMigration for Seed {
    async fn up(&self, db: &Conn<'_>) -> Result<(), BoxError> {
        assert!(db.in_transaction());
        db.execute("INSERT INTO people VALUES (10, 'katherine johnson')", &[]).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_rust_revision_without_down_is_irreversible() {
    let db = fresh_db("rustirrev").await;
    let client = db.connect().await.unwrap();
    let set = MigrationSet::builder()
        .file("0001_people.sql", PEOPLE)
        .rust(RustRevision::new("0002_seed", "1", Seed).revises(["0001_people"]))
        .build()
        .unwrap();
    assert!(set.get("0002_seed").unwrap().down().is_none());
    set.run(&client).await.unwrap();
    let err = set.downgrade(&client, &Target::Base).await.unwrap_err();
    assert!(matches!(&err, Error::Irreversible { id, .. } if id.as_str() == "0002_seed"), "{err:?}");
    assert_eq!(ledger(&client).await.len(), 2);
}

#[tokio::test]
async fn a_non_transactional_rust_revision_gets_a_plain_connection() {
    let db = fresh_db("rustnotx").await;
    let client = db.connect().await.unwrap();
    let concurrently = RustRevision::from_fn("0002_name_index", "1", |db| {
        Box::pin(async move {
            assert!(!db.in_transaction());
            db.batch_execute("CREATE INDEX CONCURRENTLY people_name_idx ON people (name)").await?;
            Ok(())
        })
    })
    .revises(["0001_people"])
    .no_transaction();
    let set = MigrationSet::builder().file("0001_people.sql", PEOPLE).rust(concurrently).build().unwrap();
    set.run(&client).await.unwrap();
    assert!(catalog(&client).await.iter().any(|l| l.contains("people_name_idx")));
    assert_eq!(ledger(&client).await.len(), 2);
}

#[tokio::test]
async fn single_transaction_mode_runs_rust_revisions_between_pipelined_sql() {
    let db = fresh_db("rustsingle").await;
    let client = db.connect().await.unwrap();
    let set = mixed("1")
        .with_config(pgskein::Config::default().transaction_mode(pgskein::config::TransactionMode::Single));
    let report = set.run(&client).await.unwrap();
    assert_eq!(report.steps.len(), 3);
    let names: i64 = client
        .query_one("SELECT count(*) FROM people WHERE upper_name IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(names, 2);
}

#[tokio::test]
async fn with_down_makes_any_rust_revision_reversible() {
    let db = fresh_db("rustwithdown").await;
    let client = db.connect().await.unwrap();
    let set = MigrationSet::builder()
        .file("0001_people.sql", PEOPLE)
        .rust(
            RustRevision::new("0002_seed", "1", Seed)
                .with_down(|db| {
                    Box::pin(async move {
                        db.execute("DELETE FROM people WHERE id = 10", &[]).await?;
                        Ok(())
                    })
                })
                .revises(["0001_people"]),
        )
        .build()
        .unwrap();
    assert!(set.get("0002_seed").unwrap().down().is_some());
    set.run(&client).await.unwrap();
    set.downgrade(&client, &Target::Relative(-1)).await.unwrap();
    let seeded: i64 =
        client.query_one("SELECT count(*) FROM people WHERE id = 10", &[]).await.unwrap().get(0);
    assert_eq!(seeded, 0, "the closure's down ran");
}
