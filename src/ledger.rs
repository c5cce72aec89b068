//! The bookkeeping tables (`applied`, `events`, `meta`, `backfills`) in their
//! own schema: bootstrap, the format upgrade, the fast-path read, reading the
//! ledger, and the statements the executor records with. Its SQL lives in `ledger/*.sql`, with `{schema}`
//! replaced by the quoted schema name: identifiers cannot be bound.

use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use crate::error::Error;
use crate::lock::quote_ident;

/// The newest bookkeeping format this build writes and understands.
///
/// 1: `applied`, `events`, `meta`. 2: adds `backfills`.
pub(crate) const FORMAT: i32 = 2;

const BOOTSTRAP: &str = include_str!("ledger/bootstrap.sql");
const APPLY: &str = include_str!("ledger/apply.sql");
const REVERT: &str = include_str!("ledger/revert.sql");
const START: &str = include_str!("ledger/start.sql");
const FAIL: &str = include_str!("ledger/fail.sql");
const FINISH: &str = include_str!("ledger/finish.sql");
const RESOLVE: &str = include_str!("ledger/resolve.sql");
const REPAIR: &str = include_str!("ledger/repair.sql");
const RESTART: &str = include_str!("ledger/restart.sql");
const BACKFILLS_TABLE: &str = include_str!("ledger/backfill_table.sql");
const UPGRADE_2: &str = include_str!("ledger/upgrade_2.sql");

/// Milliseconds since the previous step of this transaction ended, or since
/// the transaction began: per-revision and single-transaction runs alike.
const ELAPSED_MS: &str = "1000 * extract(epoch FROM clock_timestamp() - \
    coalesce(nullif(current_setting('pgskein.step_end', true), '')::timestamptz, now()))";
const MARK_STEP_END: &str = "set_config('pgskein.step_end', clock_timestamp()::text, true)";

/// One schema's ledger.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    pub(crate) schema: String,
    quoted: String,
}

/// What the fast path learned from `meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Meta {
    /// The bookkeeping schema or tables do not exist yet.
    Missing,
    /// The recorded format and digest of the applied set.
    Present { format: i32, digest: String },
}

/// A row of `applied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) revises: Vec<String>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) checksum: String,
    pub(crate) state: String,
    pub(crate) failed_statement: Option<usize>,
    pub(crate) last_error: Option<String>,
    pub(crate) applied_at: String,
    /// `up` or `down` while a `transaction none` revision is running or failed.
    pub(crate) direction: Option<String>,
}

impl Row {
    /// An applied row, as planning without a database assumes.
    pub(crate) fn applied(id: &str, checksum: String) -> Self {
        Row {
            id: id.to_owned(),
            revises: Vec::new(),
            depends_on: Vec::new(),
            checksum,
            state: "applied".to_owned(),
            failed_statement: None,
            last_error: None,
            applied_at: String::new(),
            direction: None,
        }
    }
}

/// The recording statements, prepared once per run that has work to do.
pub(crate) struct Prepared {
    pub(crate) apply: Statement,
    pub(crate) revert: Statement,
    pub(crate) start: Statement,
    pub(crate) fail: Statement,
    pub(crate) finish: Statement,
}

impl Ledger {
    pub(crate) fn new(schema: &str) -> Self {
        Self { schema: schema.to_owned(), quoted: quote_ident(schema) }
    }

    pub(crate) fn sql(&self, template: &str) -> String {
        template
            .replace("{backfills_table}", BACKFILLS_TABLE)
            .replace("{schema}", &self.quoted)
            .replace("{elapsed_ms}", ELAPSED_MS)
            .replace("{mark_step_end}", MARK_STEP_END)
    }

    /// The fast path: one simple-protocol query, no lock, no per-revision work.
    pub(crate) async fn meta(&self, client: &Client) -> Result<Meta, Error> {
        let sql = self.sql(r#"SELECT key, value FROM {schema}."meta" WHERE key IN ('format', 'digest')"#);
        let msgs = match client.simple_query(&sql).await {
            Ok(m) => m,
            // undefined_table, invalid_schema_name: nothing was ever migrated here.
            Err(e) if matches!(e.code().map(|c| c.code()), Some("42P01" | "3F000")) => {
                return Ok(Meta::Missing);
            }
            Err(e) => {
                return Err(Error::Db { context: "reading the bookkeeping tables", source: e });
            }
        };
        let (mut format, mut digest) = (None, String::new());
        for m in &msgs {
            if let SimpleQueryMessage::Row(r) = m {
                match r.get(0) {
                    Some("format") => format = r.get(1).and_then(|v| v.parse().ok()),
                    Some("digest") => digest = r.get(1).unwrap_or_default().to_owned(),
                    _ => {}
                }
            }
        }
        match format {
            Some(format) => Ok(Meta::Present { format, digest }),
            None => Err(self.corrupt("format", "the meta table has no readable format row")),
        }
    }

    /// The bootstrap statements, for offline scripts.
    pub(crate) fn bootstrap_sql(&self) -> String {
        let sql = self.sql(BOOTSTRAP);
        // The final SELECT reports the format to a live run; a script has no use for it.
        match sql.rfind("SELECT value FROM") {
            Some(i) => sql[..i].to_owned(),
            None => sql,
        }
    }

    /// Creates the schema and tables if missing; refuses a newer format.
    pub(crate) async fn bootstrap(&self, client: &Client) -> Result<(), Error> {
        let msgs = client
            .simple_query(&self.sql(BOOTSTRAP))
            .await
            .map_err(Error::db("creating the bookkeeping tables"))?;
        let format = msgs.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<i32>().ok()),
            _ => None,
        });
        match format {
            Some(f) if f > FORMAT => {
                Err(Error::FormatTooNew { schema: self.schema.clone(), found: f, supported: FORMAT })
            }
            Some(_) => Ok(()),
            None => Err(self.corrupt("format", "the meta table has no readable format row")),
        }
    }

    /// Brings tables of an older format up to [`FORMAT`], in place. Safe to run
    /// concurrently: the upgrade locks `meta` and only creates what is missing.
    pub(crate) async fn upgrade(&self, client: &Client, from: i32) -> Result<(), Error> {
        if from >= FORMAT {
            return Ok(());
        }
        if let Err(e) = client.simple_query(&self.sql(UPGRADE_2)).await {
            let _ = client.simple_query("ROLLBACK").await;
            return Err(Error::Db { context: "upgrading the bookkeeping tables", source: e });
        }
        tracing::info!(schema = %self.schema, from, to = FORMAT, "bookkeeping tables upgraded");
        Ok(())
    }

    pub(crate) fn check_format(&self, format: i32) -> Result<(), Error> {
        if format > FORMAT {
            return Err(Error::FormatTooNew {
                schema: self.schema.clone(),
                found: format,
                supported: FORMAT,
            });
        }
        Ok(())
    }

    /// Every row of `applied`, oldest first. One simple-protocol round trip.
    pub(crate) async fn read(&self, client: &Client) -> Result<Vec<Row>, Error> {
        let sql = self.sql(
            r#"SELECT id, array_to_string(revises, ' '), array_to_string(depends_on, ' '), checksum, state,
                      failed_statement::text, last_error, applied_at::text, direction
               FROM {schema}."applied" ORDER BY applied_at, id"#,
        );
        let msgs = client.simple_query(&sql).await.map_err(Error::db("reading the ledger"))?;
        let list = |s: Option<&str>| s.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        let mut rows = Vec::new();
        for m in msgs {
            if let SimpleQueryMessage::Row(r) = m {
                let id = r.get(0).unwrap_or_default().to_owned();
                let failed_statement = match r.get(5) {
                    None => None,
                    Some(v) => {
                        Some(v.parse().map_err(|_| self.corrupt(&id, "failed_statement is not a number"))?)
                    }
                };
                rows.push(Row {
                    revises: list(r.get(1)),
                    depends_on: list(r.get(2)),
                    checksum: r.get(3).unwrap_or_default().to_owned(),
                    state: r.get(4).unwrap_or_default().to_owned(),
                    failed_statement,
                    last_error: r.get(6).map(str::to_owned),
                    applied_at: r.get(7).unwrap_or_default().to_owned(),
                    direction: r.get(8).map(str::to_owned),
                    id,
                });
            }
        }
        Ok(rows)
    }

    /// Prepares the recording statements, pipelined: one round trip.
    pub(crate) async fn prepare(&self, client: &Client) -> Result<Prepared, Error> {
        let sqls = [APPLY, REVERT, START, FAIL, FINISH].map(|t| self.sql(t));
        let [a, r, s, f, fi] = &sqls;
        let (apply, revert, start, fail, finish) = futures_util::future::try_join5(
            client.prepare(a),
            client.prepare(r),
            client.prepare(s),
            client.prepare(f),
            client.prepare(fi),
        )
        .await
        .map_err(Error::db("preparing the ledger statements"))?;
        Ok(Prepared { apply, revert, start, fail, finish })
    }

    /// Records an operator's resolution of a failed or running revision.
    pub(crate) async fn resolve(
        &self,
        client: &Client,
        id: &str,
        outcome: &str,
        digest: &str,
    ) -> Result<bool, Error> {
        let row = client
            .query_one(&self.sql(RESOLVE), &[&id, &outcome, &digest])
            .await
            .map_err(Error::db("resolving a revision"))?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Records the current checksum of an applied revision; false when it was not applied.
    pub(crate) async fn repair(
        &self,
        client: &Client,
        id: &str,
        checksum: &str,
        digest: &str,
    ) -> Result<bool, Error> {
        let version = crate::id::Checksum::VERSION;
        let row = client
            .query_one(&self.sql(REPAIR), &[&id, &checksum, &version, &digest])
            .await
            .map_err(Error::db("repairing a checksum"))?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Marks a failed `transaction none` revision running again, for a retry from `statement`.
    pub(crate) async fn restart(&self, client: &Client, id: &str, statement: i32) -> Result<(), Error> {
        client
            .execute(&self.sql(RESTART), &[&id, &statement])
            .await
            .map_err(Error::db("restarting a revision"))?;
        Ok(())
    }

    /// Invalid indexes of the database (left by failed concurrent builds), for error messages.
    pub(crate) async fn invalid_indexes(&self, client: &Client) -> Result<Vec<String>, Error> {
        let rows = client
            .query("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1", &[])
            .await
            .map_err(Error::db("looking for invalid indexes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records a `verify` run in `events`.
    pub(crate) async fn record_verify(
        &self,
        client: &Client,
        checked: i64,
        failed: i64,
    ) -> Result<(), Error> {
        let sql = self.sql(
            r#"INSERT INTO {schema}."events" (kind, detail)
               VALUES ('verify', jsonb_build_object('checked', $1::bigint, 'failed', $2::bigint))"#,
        );
        client.execute(&sql, &[&checked, &failed]).await.map_err(Error::db("recording a verify run"))?;
        Ok(())
    }

    fn corrupt(&self, id: &str, reason: &str) -> Error {
        Error::CorruptLedger { schema: self.schema.clone(), id: id.to_owned(), reason: reason.to_owned() }
    }
}

impl Ledger {
    /// Rewrites the fast-path digest when it no longer matches the rows.
    pub(crate) async fn write_digest(&self, client: &Client, digest: &str) -> Result<(), Error> {
        let sql = self.sql(r#"UPDATE {schema}."meta" SET value = $1 WHERE key = 'digest'"#);
        client.execute(&sql, &[&digest]).await.map_err(Error::db("updating the applied-set digest"))?;
        Ok(())
    }
}
