use pgskein::{Error, MigrationSet, Migrator, Target};

use crate::common::fresh_db;

const ITEMS: &[u8] = b"-- pgskein: up\nCREATE TABLE items (id int PRIMARY KEY, name text);\n-- pgskein: down\nDROP TABLE items;\n";
const PRICE: &[u8] =
    b"-- pgskein: revises 0001_items\n-- pgskein: up\nALTER TABLE items ADD COLUMN price int;\n\
-- pgskein: down\nALTER TABLE items DROP COLUMN price;\n";

fn set(view: &str) -> MigrationSet {
    let view = format!(
        "-- pgskein: repeatable\n-- pgskein: up\nCREATE OR REPLACE VIEW item_names AS {view};\n-- pgskein: down\nDROP VIEW item_names;\n"
    );
    MigrationSet::builder()
        .file("R_item_names.sql", view.as_bytes())
        .file("0001_items.sql", ITEMS)
        .file("0002_item_price.sql", PRICE)
        .build()
        .unwrap()
}

async fn view_definition(client: &tokio_postgres::Client) -> Option<String> {
    client
        .query_opt("SELECT definition FROM pg_views WHERE viewname = 'item_names'", &[])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

fn ids(report: &pgskein::Report) -> Vec<String> {
    report.steps.iter().map(|s| format!("{} {}", s.direction, s.id)).collect()
}

#[tokio::test]
async fn repeatable_revisions_run_last_and_again_when_they_change() {
    let db = fresh_db("repeatable").await;
    let client = db.connect().await.unwrap();
    let v1 = set("SELECT name FROM items");
    assert_eq!(crate::common::ids(&v1.heads().into_iter().cloned().collect::<Vec<_>>()), ["0002_item_price"]);
    let report = v1.run(&client).await.unwrap();
    assert_eq!(ids(&report), ["up 0001_items", "up 0002_item_price", "up R_item_names"]);
    let kind: String = client
        .query_one("SELECT kind FROM pgskein.applied WHERE id = 'R_item_names'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "repeatable");
    assert!(v1.run(&client).await.unwrap().fast_path);

    // An edited view is re-applied, not reported as drift.
    let v2 = set("SELECT name, price FROM items");
    let report = v2.run(&client).await.unwrap();
    assert_eq!(ids(&report), ["up R_item_names"]);
    assert!(view_definition(&client).await.unwrap().contains("price"));
    assert!(v2.run(&client).await.unwrap().fast_path);

    // A downgrade first takes the repeatable revision out of the way.
    let report = v2.downgrade(&client, &Target::Relative(-1)).await.unwrap();
    assert_eq!(ids(&report), ["down R_item_names", "down 0002_item_price"]);
    assert_eq!(view_definition(&client).await, None);
    let report = v2.run(&client).await.unwrap();
    assert_eq!(ids(&report), ["up 0002_item_price", "up R_item_names"]);
    let report = v2.upgrade(&client, &"0001".parse().unwrap()).await.unwrap();
    assert!(report.steps.is_empty());
}

#[test]
fn a_revision_cannot_build_on_a_repeatable_one() {
    let err = MigrationSet::builder()
        .file("R_v.sql", b"-- pgskein: repeatable\n-- pgskein: up\nSELECT 1;\n")
        .file("0001_a.sql", b"-- pgskein: revises R_v\n-- pgskein: up\nSELECT 1;\n")
        .build()
        .unwrap_err();
    assert!(matches!(&err, Error::RevisesRepeatable { id, .. } if id.as_str() == "0001_a"), "{err:?}");
}
