//! A test file to copy into your own crate, as `tests/db.rs` for instance,
//! next to a `migrations/` directory. It needs, in `Cargo.toml`:
//!
//! ```toml
//! [dev-dependencies]
//! pgskein = { version = "0.1", features = ["testing"] }
//! include_dir = "0.7"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! tokio-postgres = "0.7"
//! ```
//!
//! Each data test gets its own database at head, cloned from a template
//! migrated once; the last three tests check the migrations themselves. The
//! tables used here are those of pgskein's example schema: replace the two
//! data tests with your own. See docs/testing.md.

use std::sync::LazyLock;

use include_dir::{Dir, include_dir};
use pgskein::testing::{
    MigratedDatabase, TestServer, assert_reversible, assert_single_head, assert_up_down_up,
};
use pgskein::{MigrationSet, Migrator};
use tokio_postgres::error::SqlState;

static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
static SET: LazyLock<MigrationSet> =
    LazyLock::new(|| MigrationSet::from_embedded(&MIGRATIONS).expect("the migrations load"));

/// A database at head of the migrations, for one test. Dropped when the test
/// ends; kept, and its name printed, when the test fails.
async fn database() -> MigratedDatabase {
    MigratedDatabase::new(&*SET).await.expect("a migrated test database")
}

#[tokio::test]
async fn folder_names_are_unique_among_siblings_whatever_their_case() {
    let db = database().await;
    let client = db.connect().await.unwrap();
    // Ids are uuids, read as text to need no extra tokio-postgres feature.
    let root: String = client
        .query_one("INSERT INTO folders (name) VALUES ('Projects') RETURNING id::text", &[])
        .await
        .unwrap()
        .get(0);
    let insert = "INSERT INTO folders (parent_id, name) VALUES ($1::text::uuid, $2)";
    client.execute(insert, &[&root, &"Reports"]).await.unwrap();
    let duplicate = client.execute(insert, &[&root, &"REPORTS"]).await.unwrap_err();
    assert_eq!(duplicate.code(), Some(&SqlState::UNIQUE_VIOLATION));
    // Another test inserting 'Projects' at the same time does not collide:
    // each test has a database of its own.
}

#[tokio::test]
async fn deleting_a_folder_deletes_its_documents() {
    let db = database().await;
    let client = db.connect().await.unwrap();
    client
        .batch_execute(
            "WITH f AS (INSERT INTO folders (name) VALUES ('Inbox') RETURNING id) \
             INSERT INTO documents (folder_id, title) SELECT id, 'Hello' FROM f",
        )
        .await
        .unwrap();
    client.batch_execute("DELETE FROM folders WHERE name = 'Inbox'").await.unwrap();
    let left: i64 = client.query_one("SELECT count(*) FROM documents", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}

/// Every down section restores the schema its up section found; the
/// database is left at head.
#[tokio::test]
async fn every_down_section_restores_the_schema() {
    let db = TestServer::shared().unwrap().create_database("reversible").await.unwrap();
    let client = db.connect().await.unwrap();
    assert_reversible(&*SET, &client).await;
    assert!(SET.status(&client).await.unwrap().pending.is_empty());
}

/// Head, base and head again give the same schemas.
#[tokio::test]
async fn upgrade_downgrade_upgrade_round_trips() {
    let db = TestServer::shared().unwrap().create_database("round_trip").await.unwrap();
    assert_up_down_up(&*SET, &db.connect().await.unwrap()).await;
}

/// Two branches were not left unmerged.
#[test]
fn the_migrations_have_a_single_head() {
    assert_single_head(&SET);
}
