//! `#[pgskein::test]`: a database at head per test, as the argument's type
//! asks, from the migrations the attribute names; kept when the test fails.

use std::sync::{Arc, LazyLock, Mutex};

use pgskein::testing::{MigratedDatabase, TestServer};
use pgskein::{Embedded, MigrationSet};

static EXAMPLE: Embedded = pgskein::embed_migrations!("migrations");
static LINEAR: LazyLock<MigrationSet> = LazyLock::new(|| crate::common::fixture("linear"));

async fn applied(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM pgskein.applied", &[]).await.unwrap().get(0)
}

#[pgskein::test]
async fn a_client_argument_is_connected_to_a_database_at_head(client: tokio_postgres::Client) {
    assert_eq!(applied(&client).await, 10, "the default is the crate's migrations/ directory");
    client.batch_execute("INSERT INTO folders (name) VALUES ('inbox')").await.unwrap();
}

#[pgskein::test(migrations = "migrations")]
async fn a_pool_argument_reaches_a_database_of_its_own(pool: deadpool_postgres::Pool) {
    let client = pool.get().await.unwrap();
    assert_eq!(applied(&client).await, 10);
    // Another test's rows are not here: each test has its own database.
    let n: i64 = client.query_one("SELECT count(*) FROM folders", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
}

#[pgskein::test(migrations = EXAMPLE)]
async fn a_migrated_database_argument_is_the_database_itself(db: MigratedDatabase) {
    assert!(db.template().starts_with("pgskein_t_"));
    let client = db.connect().await.unwrap();
    assert_eq!(applied(&client).await, 10);
}

#[pgskein::test(migrations = *LINEAR)]
async fn a_migration_set_from_a_static_is_used_as_given(
    client: tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<String> = client
        .query("SELECT id FROM pgskein.applied ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = LINEAR.revisions().map(|r| r.id().to_string()).collect();
    assert_eq!(ids, expected);
    Ok(())
}

/// Whether a database of this name exists on the shared server.
async fn exists(name: &str) -> bool {
    let server = TestServer::shared().unwrap();
    let (client, connection) = server.config("postgres").connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let n: i64 = client
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .get(0);
    if n == 1 {
        client.batch_execute(&format!("DROP DATABASE \"{name}\"")).await.unwrap();
    }
    n == 1
}

/// The name of the database `client` is connected to, noted in `seen`.
async fn note_database(client: &tokio_postgres::Client, seen: &Mutex<String>) {
    let name: String = client.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    *seen.lock().unwrap() = name;
}

// The attribute's expansion calls `run_test`; calling it directly lets these
// tests fail on purpose and look at what is left.
use pgskein::testing::__private::run_test;

#[test]
fn a_test_returning_an_error_keeps_its_database() {
    let seen = Arc::new(Mutex::new(String::new()));
    let noted = Arc::clone(&seen);
    let outcome = run_test(&EXAMPLE, module_path!(), "fails", |client: tokio_postgres::Client| async move {
        note_database(&client, &noted).await;
        Err::<(), _>("the test failed")
    });
    assert_eq!(outcome, Err("the test failed"), "the outcome is the test's");
    let name = seen.lock().unwrap().clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert!(runtime.block_on(exists(&name)), "{name} was kept");
}

#[test]
fn a_panicking_test_keeps_its_database_and_a_passing_one_does_not() {
    let seen = Arc::new(Mutex::new(String::new()));
    let noted = Arc::clone(&seen);
    let panicked = std::panic::catch_unwind(move || {
        // A test that returns `()`, spelled out: the body only panics.
        run_test::<_, _, (), _, _>(
            &EXAMPLE,
            module_path!(),
            "panics",
            |pool: deadpool_postgres::Pool| async move {
                note_database(&pool.get().await.unwrap(), &noted).await;
                panic!("the test failed on purpose");
            },
        )
    });
    assert!(panicked.is_err());
    let kept = seen.lock().unwrap().clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert!(runtime.block_on(exists(&kept)), "{kept} was kept");

    let noted = Arc::clone(&seen);
    run_test(&EXAMPLE, module_path!(), "passes", |client: tokio_postgres::Client| async move {
        note_database(&client, &noted).await;
    });
    let dropped = seen.lock().unwrap().clone();
    assert_ne!(dropped, kept);
    assert!(!runtime.block_on(exists(&dropped)), "{dropped} was dropped after the test");
}
