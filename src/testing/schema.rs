//! A fresh schema at head of a migrator for every test, for roles that may
//! not create databases: the migrations run with `search_path` set to a new
//! schema, and the bookkeeping tables go to a schema of their own.
//!
//! Invariant: both schemas are dropped with the value (kept when the test
//! panicked), and nothing outside them is touched by this module; what the
//! migrations themselves create elsewhere (extensions, roles) stays.

use std::fmt;

use tokio_postgres::Config;

use crate::migrator::Migrator;
use crate::quote::quote_ident;

use super::error::SetupError;
use super::server::{TestServer, execute_once, unique_name};
use super::template::{connect, for_tests};

/// A schema at head of a migrator, for one test, in an existing database.
///
/// For users whose role cannot create databases; prefer
/// [`MigratedDatabase`](super::MigratedDatabase) otherwise, which clones a
/// template instead of running every migration for every test.
///
/// The schema gets a unique name (`pgskein_test_...`); the migrations run on
/// a connection whose `search_path` is that schema, then `public`, so that
/// their unqualified names land in it; the bookkeeping tables go to
/// `<schema>_ledger`. [`connect`](MigratedSchema::connect) and
/// [`pool`](MigratedSchema::pool) give connections with the same
/// `search_path`. Both schemas are dropped when this value is, or kept (and
/// their name printed) when the test panicked.
///
/// Limits: migrations that create objects outside their schema (extensions,
/// roles, event triggers, objects in a named schema) create them once for the
/// whole database, so install extensions beforehand (in `public`), and write
/// migrations with unqualified names.
///
/// ```no_run
/// use pgskein::MigrationSet;
/// use pgskein::testing::MigratedSchema;
///
/// # async fn example(set: MigrationSet) -> Result<(), Box<dyn std::error::Error>> {
/// let schema = MigratedSchema::new(&set).await?;
/// let client = schema.connect().await?;
/// client.batch_execute("INSERT INTO items (name) VALUES ('only here')").await?;
/// # Ok(()) }
/// ```
pub struct MigratedSchema {
    schema: String,
    ledger: String,
    /// The database's config with the `search_path` option.
    config: Config,
    /// The database's config as given, to drop the schemas from.
    base: Config,
    throwaway: bool,
    kept: bool,
}

impl MigratedSchema {
    /// A new schema at head of `migrator`, in the database of
    /// [`TestServer::shared`]: `DATABASE_URL`'s database when set, else the
    /// throwaway server's `postgres` database.
    pub async fn new<M: Migrator>(migrator: &M) -> Result<MigratedSchema, SetupError> {
        let server = TestServer::shared()?;
        let mut schema = Self::in_database(server.admin_config(), migrator).await?;
        schema.throwaway = server.is_throwaway();
        Ok(schema)
    }

    /// A new schema at head of `migrator` in the database `config` connects to.
    pub async fn in_database<M: Migrator>(
        config: Config,
        migrator: &M,
    ) -> Result<MigratedSchema, SetupError> {
        let name = unique_name("pgskein_test");
        let ledger = format!("{name}_ledger");
        let dbname = config.get_dbname().unwrap_or("postgres").to_owned();
        let sql = format!("CREATE SCHEMA {}", quote_ident(&name));
        execute_once(&config, &sql).await.map_err(SetupError::db("create schema", &name))?;

        let mut with_path = config.clone();
        let path = format!("-c search_path={name},public");
        match config.get_options() {
            Some(options) if !options.trim().is_empty() => with_path.options(format!("{options} {path}")),
            _ => with_path.options(path),
        };
        // From here on, dropping `schema` (on an error too) drops both schemas.
        let schema = MigratedSchema {
            schema: name,
            ledger,
            config: with_path,
            base: config,
            throwaway: false,
            kept: false,
        };
        let client = connect(&schema.config).await.map_err(SetupError::db("connect to", &dbname))?;
        let migrator = for_tests(migrator);
        let config = migrator.config().into_owned().schema(&schema.ledger);
        let migrator = migrator.with_config(config);
        migrator
            .run(&client)
            .await
            .map_err(|source| SetupError::Migrate { object: format!("schema {}", schema.schema), source })?;
        Ok(schema)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.schema
    }

    /// The schema of the bookkeeping tables: `<name>_ledger`.
    pub fn ledger_schema(&self) -> &str {
        &self.ledger
    }

    /// A connection config whose `search_path` is the schema, then `public`.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Connects with [`config`](MigratedSchema::config), spawning the
    /// connection task on the current tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect(&self.config).await
    }

    /// A deadpool-postgres pool of up to `max_size` connections with
    /// [`config`](MigratedSchema::config).
    pub fn pool(&self, max_size: usize) -> deadpool_postgres::Pool {
        super::server::pool(self.config(), max_size)
    }

    /// Keeps both schemas after this value is gone; returns the schema's name.
    pub fn keep(mut self) -> String {
        self.kept = true;
        self.schema.clone()
    }
}

impl fmt::Debug for MigratedSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigratedSchema")
            .field("schema", &self.schema)
            .field("ledger", &self.ledger)
            .field("database", &self.base.get_dbname())
            .finish_non_exhaustive()
    }
}

impl Drop for MigratedSchema {
    /// Drops both schemas on a thread of its own (the test's runtime may be
    /// shutting down), or keeps them when the thread is panicking.
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if std::thread::panicking() {
            let note = if self.throwaway {
                " (on the throwaway server, removed when the test process exits; set DATABASE_URL to keep it)"
            } else {
                ""
            };
            eprintln!("pgskein: kept schema {} (and {}) of the failed test{note}", self.schema, self.ledger);
            return;
        }
        let sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE;",
            quote_ident(&self.schema),
            quote_ident(&self.ledger)
        );
        let config = self.base.clone();
        let outcome = std::thread::Builder::new()
            .name("pgskein-drop-schema".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let drop = execute_once(&config, &sql);
                    match tokio::time::timeout(std::time::Duration::from_secs(60), drop).await {
                        Ok(result) => result.map_err(|e| e.to_string()),
                        Err(_) => Err("timed out".to_owned()),
                    }
                })
            })
            .map_err(|e| e.to_string())
            .and_then(|handle| handle.join().map_err(|_| "the dropping thread panicked".to_owned()))
            .and_then(|result| result);
        match outcome {
            Ok(()) => tracing::debug!(schema = %self.schema, "dropped test schema"),
            Err(error) => tracing::warn!(schema = %self.schema, %error, "could not drop test schema"),
        }
    }
}
