//! Fresh databases and schemas at head for tests: cloned from a template
//! migrated once per set, isolated, dropped afterwards (kept when the test
//! panicked), and the template rebuilt only when the set changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgskein::testing::{MigratedDatabase, MigratedSchema, SetupError, Template, TestDatabase, TestServer};
use pgskein::{MigrationSet, Migrator};

use crate::common::{example, fixture_dir, fresh_db};

static EXAMPLE: LazyLock<MigrationSet> = LazyLock::new(example);

fn server() -> &'static TestServer {
    TestServer::shared().expect("a PostgreSQL server for the tests")
}

/// A connection for catalog queries (pg_database is shared by all databases).
async fn catalog_client() -> (TestDatabase, tokio_postgres::Client) {
    let db = fresh_db("catalog").await;
    let client = db.connect().await.unwrap();
    (db, client)
}

async fn existing(client: &tokio_postgres::Client, names: &[String]) -> Vec<String> {
    let rows = client
        .query("SELECT datname FROM pg_database WHERE datname = ANY($1) ORDER BY 1", &[&names])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// A copy of a fixture in a directory of its own, with a line unique to this
/// run in its first revision, so that its template is new even on a server
/// that outlives test runs.
fn private_copy(fixture: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "pgskein-it-tpl-{}-{}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut names: Vec<_> =
        std::fs::read_dir(fixture_dir(fixture)).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for (i, path) in names.iter().enumerate() {
        let mut text = std::fs::read_to_string(path).unwrap();
        if i == 0 {
            text = text.replacen("-- pgskein: up\n", &format!("-- pgskein: up\n-- run {nanos}\n"), 1);
        }
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
    dir
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn columns(db: &TestDatabase, table: &str) -> Vec<String> {
    let client = db.connect().await.unwrap();
    let rows = client
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn template_state(client: &tokio_postgres::Client, name: &str) -> Option<(u32, bool, bool)> {
    client
        .query_opt("SELECT oid, datistemplate, datallowconn FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[test]
fn sixteen_tests_in_parallel_get_isolated_databases_that_are_all_dropped() {
    // Each thread is a test of its own: its own runtime, like #[tokio::test].
    const TESTS: usize = 16;
    let written = Arc::new(tokio::sync::Barrier::new(TESTS));
    let threads: Vec<_> = (0..TESTS)
        .map(|i| {
            let written = Arc::clone(&written);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let db = runtime.block_on(MigratedDatabase::new(&*EXAMPLE)).unwrap();
                let seen: Vec<String> = runtime.block_on(async {
                    let client = db.connect().await.unwrap();
                    assert!(EXAMPLE.status(&client).await.unwrap().pending.is_empty(), "at head");
                    client
                        .execute("INSERT INTO folders (name) VALUES ($1)", &[&format!("test {i}")])
                        .await
                        .unwrap();
                    // Every test has written before any reads.
                    written.wait().await;
                    let rows = client.query("SELECT name FROM folders", &[]).await.unwrap();
                    rows.iter().map(|r| r.get(0)).collect()
                });
                assert_eq!(seen, [format!("test {i}")], "test {i} sees only its own rows");
                let name = db.name().to_owned();
                drop(db);
                name
            })
        })
        .collect();
    let names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), TESTS);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (_db, client) = catalog_client().await;
        assert_eq!(existing(&client, &names).await, Vec::<String>::new(), "all dropped");
    });
}

#[tokio::test]
async fn the_template_is_reused_while_the_set_is_unchanged_and_rebuilt_when_a_file_changes() {
    let dir = private_copy("linear");
    let _cleanup = RemoveDir(dir.clone());
    let (_db, client) = catalog_client().await;

    let first = Template::on(server(), &MigrationSet::from_dir(&dir).unwrap()).await.unwrap();
    let (oid, is_template, allows_connections) = template_state(&client, first.name()).await.unwrap();
    assert!(is_template && !allows_connections, "a finished template refuses connections");
    assert!(existing(&client, &[format!("{}_build", first.name())]).await.is_empty());

    // Loaded again, unchanged: the same template, not rebuilt.
    let again = Template::on(server(), &MigrationSet::from_dir(&dir).unwrap()).await.unwrap();
    assert_eq!(again.name(), first.name());
    assert_eq!(template_state(&client, again.name()).await.unwrap().0, oid, "same database, not rebuilt");

    // One file changes: a new template, with the change.
    let text = std::fs::read_to_string(dir.join("0004_item_tags.sql")).unwrap();
    let edited = text.replace(
        "ALTER TABLE items ADD COLUMN tags item_tag[] NOT NULL DEFAULT '{}';",
        "ALTER TABLE items ADD COLUMN tags item_tag[] NOT NULL DEFAULT '{}', ADD COLUMN weight integer;",
    );
    assert_ne!(edited, text);
    std::fs::write(dir.join("0004_item_tags.sql"), edited).unwrap();
    let changed = Template::on(server(), &MigrationSet::from_dir(&dir).unwrap()).await.unwrap();
    assert_ne!(changed.name(), first.name());
    assert_eq!(changed.name()[..18], first.name()[..18], "same history, new version: {}", changed.name());
    assert!(columns(&changed.database().await.unwrap(), "items").await.contains(&"weight".to_owned()));
    assert!(!columns(&first.database().await.unwrap(), "items").await.contains(&"weight".to_owned()));
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test]
async fn templates_of_older_versions_of_a_set_are_tidied_up_keeping_two() {
    let dir = private_copy("linear");
    let _cleanup = RemoveDir(dir.clone());
    let (_db, client) = catalog_client().await;
    let mut names = Vec::new();
    // Four versions: the oldest goes, the newest and the two before it stay.
    for version in 0..4 {
        edit(
            &dir.join("0002_item_price.sql"),
            "-- pgskein: up\n",
            &format!("-- pgskein: up\n-- v{version}\n"),
        );
        let template = Template::on(server(), &MigrationSet::from_dir(&dir).unwrap()).await.unwrap();
        names.push(template.name().to_owned());
    }
    let mut left = existing(&client, &names).await;
    left.sort();
    let mut newest: Vec<String> = names[1..].to_vec();
    newest.sort();
    assert_eq!(left, newest, "the newest and the two before it");
}

#[test]
fn processes_building_one_template_at_once_agree_on_it() {
    // Threads with their own runtimes and no shared cache: as separate test
    // binaries would, they meet only on the server.
    let dir = private_copy("linear");
    let _cleanup = RemoveDir(dir.clone());
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    let set = MigrationSet::from_dir(&dir).unwrap();
                    let template = Template::on(server(), &set).await.unwrap();
                    let db = template.database().await.unwrap();
                    let client = db.connect().await.unwrap();
                    assert!(set.status(&client).await.unwrap().pending.is_empty());
                    template.name().to_owned()
                })
            })
        })
        .collect();
    let names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(names.windows(2).all(|w| w[0] == w[1]), "{names:?}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (_db, client) = catalog_client().await;
        let name = &names[0];
        assert_eq!(
            existing(&client, &[name.clone(), format!("{name}_build")]).await,
            std::slice::from_ref(name)
        );
    });
}

#[test]
fn a_panicking_test_keeps_its_database_and_a_passing_one_drops_it() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let db = runtime.block_on(MigratedDatabase::new(&*EXAMPLE)).unwrap();
        sender.send(db.name().to_owned()).unwrap();
        panic!("the test failed");
    })
    .join();
    assert!(failed.is_err());
    let kept = receiver.recv().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (_db, client) = catalog_client().await;
        assert_eq!(existing(&client, std::slice::from_ref(&kept)).await, std::slice::from_ref(&kept), "kept");
        // Tidy up what the failed test left.
        client.batch_execute(&format!("DROP DATABASE \"{kept}\" WITH (FORCE)")).await.unwrap();

        let passed = MigratedDatabase::new(&*EXAMPLE).await.unwrap();
        let name = passed.name().to_owned();
        assert_eq!(passed.template(), Template::shared(&*EXAMPLE).await.unwrap().name());
        drop(passed);
        assert!(existing(&client, &[name]).await.is_empty(), "dropped");

        let explicit = MigratedDatabase::new(&*EXAMPLE).await.unwrap();
        let name = explicit.keep();
        let left = existing(&client, std::slice::from_ref(&name)).await;
        assert_eq!(left, std::slice::from_ref(&name), "kept on request");
        client.batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")).await.unwrap();
    });
}

#[tokio::test]
async fn databases_prepared_ahead_are_handed_out_at_once_and_dropped_with_their_template() {
    let dir = private_copy("linear");
    let _cleanup = RemoveDir(dir.clone());
    let set = MigrationSet::from_dir(&dir).unwrap();
    let (_db, client) = catalog_client().await;
    let template = Template::on(server(), &set).await.unwrap();
    assert_eq!(template.ready(), 0);
    template.prepare_ahead(2);
    wait_for(|| template.ready() == 2).await;

    let db = template.database().await.unwrap();
    assert!(db.name().starts_with("pgskein_ready_"), "{}", db.name());
    assert!(set.status(&db.connect().await.unwrap()).await.unwrap().pending.is_empty());
    wait_for(|| template.ready() == 2).await;

    // Ours: prefix, then this process's pid in hex.
    let pattern = format!("^pgskein_ready_{:x}[0-9a-f]{{8}}_[0-9]+$", std::process::id());
    let handed_out = db.name().to_owned();
    let prepared = async |client: &tokio_postgres::Client| -> usize {
        let sql = "SELECT datname FROM pg_database WHERE datname ~ $1 AND datname <> $2";
        client.query(sql, &[&pattern, &handed_out]).await.unwrap().len()
    };
    assert_eq!(prepared(&client).await, 2);
    drop(template);
    let dropped =
        crate::common::eventually(Duration::from_secs(10), || async { prepared(&client).await == 0 }).await;
    assert!(dropped, "the prepared databases were not dropped");
    // The handed-out database is the test's own until it drops it.
    assert_eq!(existing(&client, &[db.name().to_owned()]).await.len(), 1);
}

/// The databases this process (or the given one) prepared ahead.
async fn prepared_by(client: &tokio_postgres::Client, pid: u32) -> i64 {
    let pattern = format!("^pgskein_ready_{pid:x}[0-9a-f]{{8}}_[0-9]+$");
    client.query_one("SELECT count(*) FROM pg_database WHERE datname ~ $1", &[&pattern]).await.unwrap().get(0)
}

/// Run in a child process by the next test, against the parent's server.
#[tokio::test]
#[ignore = "a helper, run in a child process by prepared_databases_nobody_took_are_dropped_at_exit"]
async fn child_prepares_databases_and_exits() {
    let dir = private_copy("linear");
    let _cleanup = RemoveDir(dir.clone());
    let template = Template::on(server(), &MigrationSet::from_dir(&dir).unwrap()).await.unwrap();
    template.prepare_ahead(2);
    wait_for(|| template.ready() == 2).await;
    let (_db, client) = catalog_client().await;
    println!("prepared {}", prepared_by(&client, std::process::id()).await);
    // Still alive at exit: only the exit handler can drop them.
    std::mem::forget(template);
}

#[tokio::test]
async fn prepared_databases_nobody_took_are_dropped_at_exit() {
    let (db, client) = catalog_client().await;
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "testing_databases::child_prepares_databases_and_exits",
            "--ignored",
            "--nocapture",
        ])
        .env("DATABASE_URL", server().url(db.name()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("prepared 2"), "{stdout}");
    assert_eq!(prepared_by(&client, pid).await, 0, "dropped when the child exited");
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    assert!(
        crate::common::eventually(Duration::from_secs(10), || std::future::ready(done())).await,
        "timed out"
    );
}

#[tokio::test]
async fn a_set_that_fails_to_migrate_leaves_no_template_behind() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let set = MigrationSet::builder()
        .file("0001_a.sql", format!("-- pgskein: up\n-- run {nanos}\nCREATE TABLE a (id int);\n").as_bytes())
        .file("0002_b.sql", b"-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE a (id int);\n")
        .build()
        .unwrap();
    let err = Template::on(server(), &set).await.unwrap_err();
    let SetupError::Migrate { object: building, .. } = &err else { panic!("{err:?}") };
    let text = crate::common::chain(&err);
    assert!(text.starts_with(&format!("could not migrate {building} to head: ")), "{text}");
    assert!(text.contains("0002_b"), "{text}");
    assert!(building.starts_with("pgskein_t_") && building.ends_with("_build"), "{building}");
    let (_db, client) = catalog_client().await;
    let template = building.trim_end_matches("_build").to_owned();
    assert!(existing(&client, &[building.clone(), template]).await.is_empty());
    // Nothing was cached: the next request tries again, and fails again.
    assert!(matches!(Template::on(server(), &set).await, Err(SetupError::Migrate { .. })));
}

/// Three revisions and a backfill between the second and the third, which
/// depends on it; `run` alone would stop before the third.
fn set_with_a_backfill() -> MigrationSet {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    MigrationSet::builder()
        .file(
            "0001_items.sql",
            format!(
                "-- pgskein: up\n-- run {nanos}\nCREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n\
                 INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 50) i;\n\
                 -- pgskein: down\nDROP TABLE items;\n"
            )
            .as_bytes(),
        )
        .file(
            "0002_upper_name.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: up\nALTER TABLE items ADD COLUMN upper_name text;\n\
              -- pgskein: down\nALTER TABLE items DROP COLUMN upper_name;\n",
        )
        .file(
            "0003_upper_name_not_null.sql",
            b"-- pgskein: revises 0002_upper_name\n-- pgskein: depends-on items_upper_name_fill\n\
              -- pgskein: up\nALTER TABLE items ALTER COLUMN upper_name SET NOT NULL;\n\
              -- pgskein: down\nALTER TABLE items ALTER COLUMN upper_name DROP NOT NULL;\n",
        )
        .backfill(
            pgskein::backfill::Backfill::sql("items_upper_name_fill", "0002_upper_name")
                .table("items")
                .key("id")
                .statement("UPDATE items SET upper_name = upper(name) WHERE id >= $1 AND id < $2"),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_template_has_its_backfills_done() {
    let set = set_with_a_backfill();
    let db = MigratedDatabase::new(&set).await.unwrap();
    let client = db.connect().await.unwrap();
    assert!(set.status(&client).await.unwrap().pending.is_empty());
    let filled: i64 = client
        .query_one("SELECT count(*) FROM items WHERE upper_name = upper(name)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(filled, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_schemas_are_isolated_keep_their_ledger_apart_and_are_dropped() {
    // Unqualified names only, as the schema variant requires (the `linear`
    // fixture's verify query reads information_schema without a schema).
    let set = MigrationSet::builder()
        .file("0001_items.sql", b"-- pgskein: up\nCREATE TABLE items (id serial PRIMARY KEY, name text);\n")
        .file(
            "0002_index.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: up\nCREATE INDEX items_name_idx ON items (name);\n\
              -- pgskein: verify\nSELECT to_regclass('items_name_idx') IS NOT NULL;\n",
        )
        .build()
        .unwrap();
    let (a, b) = tokio::join!(MigratedSchema::new(&set), MigratedSchema::new(&set));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.name(), b.name());
    assert_eq!(a.ledger_schema(), format!("{}_ledger", a.name()));

    let ca = a.connect().await.unwrap();
    let cb = b.pool(2).get().await.unwrap();
    ca.batch_execute("INSERT INTO items (name) VALUES ('only in a')").await.unwrap();
    let in_b: i64 = cb.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    assert_eq!(in_b, 0);
    let schema: String = ca.query_one("SELECT current_schema()", &[]).await.unwrap().get(0);
    assert_eq!(schema, a.name());
    let applied: i64 = ca
        .query_one(&format!("SELECT count(*) FROM \"{}\".applied", a.ledger_schema()), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, set.len());

    let names = [
        a.name().to_owned(),
        a.ledger_schema().to_owned(),
        b.name().to_owned(),
        b.ledger_schema().to_owned(),
    ];
    drop((ca, cb));
    drop((a, b));
    let admin = server().config(server_admin_db());
    let (client, connection) = admin.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let left: i64 = client
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)", &[&names.to_vec()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// The database `MigratedSchema::new` works in.
fn server_admin_db() -> &'static str {
    static NAME: LazyLock<String> = LazyLock::new(|| {
        std::env::var("DATABASE_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .and_then(|url| url.parse::<tokio_postgres::Config>().ok())
            .and_then(|config| config.get_dbname().map(str::to_owned))
            .unwrap_or_else(|| "postgres".to_owned())
    });
    &NAME
}
