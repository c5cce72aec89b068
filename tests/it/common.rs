//! Shared helpers: a fresh database per test, fixtures, and a catalog snapshot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use pgskein::MigrationSet;
use pgskein::testing::{TestDatabase, TestServer};

pub async fn fresh_db(prefix: &str) -> TestDatabase {
    let server = TestServer::shared().expect("a PostgreSQL server for the tests");
    server.create_database(prefix).await.expect("create a test database")
}

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn fixture(name: &str) -> MigrationSet {
    MigrationSet::from_dir(fixture_dir(name)).expect("fixture loads")
}

pub fn example() -> MigrationSet {
    MigrationSet::from_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .expect("example loads")
}

/// A migration set loaded from a directory written for one test: (file name,
/// content) pairs. The directory is removed once loaded.
pub fn temp_set(files: &[(&str, &str)]) -> Result<MigrationSet, pgskein::Error> {
    let dir = temp_dir_with(files);
    let set = MigrationSet::from_dir(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    set
}

fn temp_dir_with(files: &[(&str, &str)]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pgskein-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    dir
}

/// The user-visible schema, one sorted line per object, outside the ledger schema.
pub async fn catalog(client: &tokio_postgres::Client) -> Vec<String> {
    const SQL: &str = r#"
        SELECT 'relation ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
      UNION ALL
        SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
      UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
      UNION ALL
        SELECT 'constraint ' || c.relname || '.' || k.conname || ' ' || pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
      UNION ALL
        SELECT 'type ' || t.typname || ' ' || t.typtype::text || coalesce(' ' || (
                 SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')
      UNION ALL
        SELECT 'extension ' || extname FROM pg_extension
      UNION ALL
        SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
      UNION ALL
        SELECT 'trigger ' || c.relname || '.' || t.tgname
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal
      UNION ALL
        SELECT 'view ' || viewname || ' ' || definition FROM pg_views WHERE schemaname = 'public'
      ORDER BY 1"#;
    client.query(SQL, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

/// The ledger's rows: (id, state).
pub async fn ledger(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    match client.query("SELECT id, state FROM pgskein.applied ORDER BY id", &[]).await {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(e)
            if e.code().map(|c| c.code()) == Some("42P01") || e.code().map(|c| c.code()) == Some("3F000") =>
        {
            Vec::new()
        }
        Err(e) => panic!("reading the ledger: {e}"),
    }
}

/// Whether any session holds pgskein's migration lock for `schema`.
pub async fn lock_held(client: &tokio_postgres::Client) -> bool {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) > 0
}

pub fn ids(list: &[pgskein::RevisionId]) -> Vec<&str> {
    list.iter().map(|i| i.as_str()).collect()
}

pub use pgskein::testing::error_chain as chain;

/// Runs a future until it has returned `Pending` `limit` times, then drops it:
/// a caller that gives up (a timeout, a cancelled task) at an await point.
pub struct CancelAfter<F> {
    fut: std::pin::Pin<Box<F>>,
    limit: usize,
    pendings: usize,
}

impl<F> CancelAfter<F> {
    pub fn new(fut: F, limit: usize) -> Self {
        CancelAfter { fut: Box::pin(fut), limit, pendings: 0 }
    }
}

impl<F: std::future::Future> std::future::Future for CancelAfter<F> {
    type Output = Option<F::Output>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.fut.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => {
                self.pendings += 1;
                if self.pendings >= self.limit {
                    std::task::Poll::Ready(None)
                } else {
                    std::task::Poll::Pending
                }
            }
        }
    }
}

/// Polls `cond` until it holds, or `limit` passes: waiting for a condition
/// another session or process brings about, never for a fixed time.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A small deterministic generator (xorshift64*), so a failing sequence can
/// be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock; the seed is printed.
    pub fn new() -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        eprintln!("rng seed {seed}");
        Rng::from_seed(seed)
    }
    pub fn from_seed(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}
