//! The bookkeeping tables (`applied`, `events`, `meta`, `backfills`, `lease`)
//! in their own schema: bootstrap, the format upgrade, the fast-path read, the
//! typed read of the ledger, and the statements the executor records with.
//! Their SQL lives in `ledger/*.sql`.
//!
//! Invariants:
//! - Every write of `applied` proves, in the same statement, that this run
//!   still holds the migration lock: the session's advisory lock, or its
//!   lease, whose fencing token must still be the live one
//!   (`held(key, token)`); and it reports how many rows it changed, so that a
//!   write that matched nothing is caught.
//! - `meta`'s digest is kept by triggers on `applied`, not by pgskein's code:
//!   whoever changes `applied`, the digest follows, and the fast path trusts it
//!   only while the triggers are in place.
//! - Templates are expanded in one pass: the schema name is inserted quoted,
//!   once, and never scanned again.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::config::key_parts;
use crate::error::Error;
use crate::id::Checksum;
use crate::plan::Direction;
use crate::quote::{quote_ident, quote_literal};
use crate::state::{BlockedState, LedgerState, LockHolder, Meta, Record, RowState};

/// The newest bookkeeping format this build writes and understands.
///
/// 1: `applied`, `events`, `meta`. 2: adds `backfills`. 3: the digest
/// triggers, the lock-proof function, `applied.invalid_before`, and the
/// `readable_by` marker. 4: the `lease` table and its functions; the lock
/// proof also refuses writers that ignore a live lease, which is why format-3
/// code may still use these tables (`readable_by` stays 3).
pub(crate) const FORMAT: i32 = 4;

const BOOTSTRAP: &str = include_str!("ledger/bootstrap.sql");
const UPGRADE: &str = include_str!("ledger/upgrade.sql");
const FUNCTIONS: &str = include_str!("ledger/functions.sql");
const BACKFILLS_TABLE: &str = include_str!("ledger/backfill_table.sql");
const LEASE_TABLE: &str = include_str!("ledger/lease_table.sql");
const APPLY: &str = include_str!("ledger/apply.sql");
const REAPPLY: &str = include_str!("ledger/reapply.sql");
const REVERT: &str = include_str!("ledger/revert.sql");
const START: &str = include_str!("ledger/start.sql");
const PROGRESS: &str = include_str!("ledger/progress.sql");
const FAIL: &str = include_str!("ledger/fail.sql");
const FINISH: &str = include_str!("ledger/finish.sql");
const RESOLVE: &str = include_str!("ledger/resolve.sql");
const REPAIR: &str = include_str!("ledger/repair.sql");
const RESTART: &str = include_str!("ledger/restart.sql");

/// Milliseconds since the step began: the mark the executor sets when a step
/// starts (microseconds since the epoch, so no DateStyle can garble it), or
/// the start of the transaction.
const ELAPSED_MS: &str = "(((extract(epoch FROM clock_timestamp()) * 1000000)::bigint \
    - coalesce(nullif(current_setting('pgskein.step_start', true), '')::bigint, \
               (extract(epoch FROM now()) * 1000000)::bigint)) / 1000.0)";

/// One schema's ledger, and the lock its writes prove.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    pub(crate) schema: String,
    quoted: String,
    proof: Proof,
}

/// The lock a run's writes prove: the advisory lock `key` held by the
/// session, or the lease whose fencing token is `token` (neither: a run
/// without a lock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Proof {
    pub(crate) key: Option<i64>,
    pub(crate) token: Option<i64>,
}

/// A ledger write: its SQL and its typed parameters, owned, so that it can be
/// sent before an earlier answer is read.
pub(crate) struct Write {
    pub(crate) sql: String,
    pub(crate) params: Vec<(Box<dyn ToSql + Sync + Send>, Type)>,
    /// How many rows of `applied` it must change; anything else means the
    /// ledger changed under the lock.
    pub(crate) expect: Option<i64>,
    /// What it records, for errors.
    pub(crate) what: &'static str,
}

/// How an operator settled a blocked revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    Applied,
    Reverted,
}

impl Ledger {
    pub(crate) fn new(schema: &str) -> Self {
        Self { schema: schema.to_owned(), quoted: quote_ident(schema), proof: Proof::default() }
    }

    /// The same ledger, its writes proving `proof`.
    pub(crate) fn proving(mut self, proof: Proof) -> Self {
        self.proof = proof;
        self
    }

    /// What the writes prove.
    pub(crate) fn proof(&self) -> Proof {
        self.proof
    }

    /// Expands `{name}` placeholders in one pass. Inserted text (the quoted
    /// schema, the SQL of other templates) is never scanned for placeholders,
    /// so a schema named `{elapsed_ms}` stays a name.
    pub(crate) fn sql(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            let name = after[1..]
                .split_once('}')
                .map(|(n, _)| n)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            let value = match name {
                Some("schema") => Some(self.quoted.clone()),
                Some("elapsed_ms") => Some(ELAPSED_MS.to_owned()),
                Some("backfills_table") => Some(self.sql(BACKFILLS_TABLE)),
                Some("lease_table") => Some(self.sql(LEASE_TABLE)),
                Some("functions") => Some(self.sql(FUNCTIONS)),
                _ => None,
            };
            match (name, value) {
                (Some(name), Some(value)) => {
                    out.push_str(&value);
                    rest = &after[name.len() + 2..];
                }
                _ => {
                    out.push('{');
                    rest = &after[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{}", self.quoted, quote_ident(name))
    }

    /// The fast path: one query, no lock, no per-revision work, and no server
    /// error when nothing was ever migrated here (`to_regclass` finds no table,
    /// `table_to_xml` of NULL is NULL), so a first deploy logs no ERROR.
    pub(crate) async fn meta(&self, client: &Client) -> Result<Meta, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let row = client
                .query_typed_one(
                    "SELECT pg_catalog.table_to_xml(pg_catalog.to_regclass($1), false, true, '')::text, \
                            (SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = pg_catalog.to_regclass($2) \
                               AND tgname IN ('pgskein_digest', 'pgskein_digest_truncate') AND tgenabled = 'A')",
                    &[(&self.table("meta"), Type::TEXT), (&self.table("applied"), Type::TEXT)],
                )
                .await
                .map_err(Error::db("reading the bookkeeping tables"))?;
            let Some(xml) = row.get::<_, Option<String>>(0) else { return Ok(Meta::Missing) };
            let triggers: i64 = row.get(1);
            let pairs = xml_pairs(&xml);
            // The table's name is looked up in the newest catalog, its rows
            // read with the statement's older snapshot: a statement that
            // races the commit creating the tables finds them empty. The
            // next statement's snapshot sees what that lookup saw.
            if attempt == 1 && !pairs.iter().any(|(key, _)| key == "format") {
                continue;
            }
            return self.meta_of(pairs, triggers == 2);
        }
    }

    fn meta_of<'p>(
        &self,
        pairs: impl IntoIterator<Item = (String, String)> + 'p,
        trusted: bool,
    ) -> Result<Meta, Error> {
        let (mut format, mut readable_by, mut digest) = (None, None, String::new());
        for (key, value) in pairs {
            match key.as_str() {
                "format" => format = value.parse().ok(),
                "readable_by" => readable_by = value.parse().ok(),
                "digest" => digest = value,
                _ => {}
            }
        }
        let Some(format) = format else {
            return Err(self.corrupt("format", "the meta table has no readable format row"));
        };
        Ok(Meta::Present { format, readable_by: readable_by.unwrap_or(format), digest, trusted })
    }

    /// Refuses tables that a newer pgskein made unusable for this one.
    pub(crate) fn check_format(&self, meta: &Meta) -> Result<(), Error> {
        match *meta {
            Meta::Present { format, readable_by, .. } if format > FORMAT && readable_by > FORMAT => {
                Err(Error::FormatTooNew { schema: self.schema.clone(), found: format, supported: FORMAT })
            }
            _ => Ok(()),
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

    /// Creates the schema, tables, functions and triggers if missing, or brings
    /// older tables up to [`FORMAT`] in place (safe to run concurrently: the
    /// upgrade locks `meta` and every step is idempotent). Tables of a newer
    /// format are left alone. Returns the state of `meta` afterwards.
    pub(crate) async fn prepare(&self, client: &Client, meta: &Meta) -> Result<(), Error> {
        self.check_format(meta)?;
        let Some((script, context)) = self.prepare_script(meta) else { return Ok(()) };
        let sql = format!("BEGIN; {script}; COMMIT;");
        if let Err(e) = client.simple_query(&sql).await {
            if !client.is_closed() {
                let _ = client.simple_query("ROLLBACK").await;
            }
            return Err(Error::Db { context, source: e });
        }
        if let Meta::Present { format, .. } = meta {
            tracing::info!(schema = %self.schema, from = format, to = FORMAT, "bookkeeping tables upgraded");
        }
        Ok(())
    }

    /// The script that creates the tables, or brings them up to [`FORMAT`], to
    /// run inside a transaction; `None` when they are up to date (or newer).
    pub(crate) fn prepare_script(&self, meta: &Meta) -> Option<(String, &'static str)> {
        match meta {
            Meta::Missing => Some((self.sql(BOOTSTRAP), "creating the bookkeeping tables")),
            Meta::Present { format, trusted, .. } if *format < FORMAT || (*format == FORMAT && !trusted) => {
                Some((self.sql(UPGRADE), "upgrading the bookkeeping tables"))
            }
            Meta::Present { .. } => None,
        }
    }

    /// The SQL that reads the ledger; `holder` adds the lookup of another
    /// session holding the migration lock `key`, and of the live lease.
    pub(crate) fn read_sql(&self, holder: Option<i64>) -> String {
        let mut sql = self.sql(
            r#"SELECT key, value FROM {schema}."meta";
               SELECT id, array_to_string(revises, ' '), array_to_string(depends_on, ' '), checksum, state,
                      failed_statement::text, last_error, applied_at::text, direction,
                      array_to_string(invalid_before, ' ')
               FROM {schema}."applied" ORDER BY applied_at, id;"#,
        );
        if let Some(key) = holder {
            sql.push_str(&format!("{}; {};", holder_sql(key), live_sql(self)));
        }
        sql
    }

    /// Parses the answer to [`read_sql`](Ledger::read_sql), given as one group of rows per statement.
    pub(crate) fn parse_read(&self, groups: &[Vec<SimpleQueryRow>]) -> Result<LedgerState, Error> {
        let pairs = groups
            .first()
            .into_iter()
            .flatten()
            .map(|r| (r.get(0).unwrap_or_default().to_owned(), r.get(1).unwrap_or_default().to_owned()));
        // Read under the lock after `prepare`, or only to look: trust is the fast path's concern.
        let meta = self.meta_of(pairs.collect::<Vec<_>>(), true)?;
        let records =
            groups.get(1).into_iter().flatten().map(|r| self.record(r)).collect::<Result<Vec<_>, _>>()?;
        let lease = || groups.get(3)?.first()?.get(0).and_then(holder_of_xml);
        let holder = groups.get(2).and_then(|g| g.first()).map(holder_of).or_else(lease);
        Ok(LedgerState { meta, records, holder })
    }

    fn record(&self, r: &SimpleQueryRow) -> Result<Record, Error> {
        let list = |i: usize| -> Vec<String> {
            r.get(i).unwrap_or_default().split_whitespace().map(str::to_owned).collect()
        };
        let id = r.get(0).unwrap_or_default().to_owned();
        let direction = match r.get(8) {
            None | Some("up") => Direction::Up,
            Some("down") => Direction::Down,
            Some(other) => return Err(self.corrupt(&id, &format!("unknown direction {other:?}"))),
        };
        let state = match r.get(4) {
            Some("applied") => RowState::Applied,
            Some("running") => RowState::Blocked(BlockedState::Running, direction),
            Some("failed") => RowState::Blocked(BlockedState::Failed, direction),
            other => return Err(self.corrupt(&id, &format!("unknown state {other:?}"))),
        };
        let statement = match r.get(5) {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| self.corrupt(&id, "failed_statement is not a number"))?),
        };
        let invalid_before = r
            .get(9)
            .unwrap_or_default()
            .split_whitespace()
            .map(|o| o.parse().map_err(|_| self.corrupt(&id, "invalid_before is not a list of oids")))
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(Record {
            revises: list(1),
            depends_on: list(2),
            checksum: r.get(3).unwrap_or_default().to_owned(),
            state,
            statement,
            last_error: r.get(6).map(str::to_owned),
            applied_at: r.get(7).unwrap_or_default().to_owned(),
            invalid_before,
            id,
        })
    }

    /// Reads the whole ledger without the lock (status, plans, verify): the
    /// fast-path query, then, if there are tables, the rows and who holds the lock.
    pub(crate) async fn read(&self, client: &Client, lock_key: i64) -> Result<LedgerState, Error> {
        let meta = self.meta(client).await?;
        self.check_format(&meta)?;
        if meta == Meta::Missing {
            return Ok(LedgerState::empty());
        }
        let msgs = client
            .simple_query(&self.read_sql(Some(lock_key)))
            .await
            .map_err(Error::db("reading the ledger"))?;
        self.parse_read(&groups(msgs))
    }

    /// Recomputes `meta`'s digest from the rows of `applied`.
    pub(crate) async fn recompute_digest(&self, client: &Client) -> Result<(), Error> {
        client
            .simple_query(&self.sql(r#"SELECT {schema}."recompute_digest"()"#))
            .await
            .map_err(Error::db("recomputing the applied-set digest"))?;
        Ok(())
    }

    /// Invalid indexes of the database (left by failed concurrent builds), for error messages.
    pub(crate) async fn invalid_indexes(&self, client: &Client) -> Result<Vec<String>, Error> {
        let rows = client
            .query_typed(
                "SELECT indexrelid::pg_catalog.regclass::text FROM pg_catalog.pg_index WHERE NOT indisvalid ORDER BY 1",
                &[],
            )
            .await
            .map_err(Error::db("looking for invalid indexes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn corrupt(&self, id: &str, reason: &str) -> Error {
        Error::CorruptLedger { schema: self.schema.clone(), id: id.to_owned(), reason: reason.to_owned() }
    }

    // ----- the writes; the executor sends them -----

    fn write(&self, template: &str, what: &'static str, expect: Option<i64>) -> Write {
        Write { sql: self.sql(template), params: Vec::new(), expect, what }
    }

    /// A revision applied (or stamped, with `event` `stamp`).
    pub(crate) fn apply(
        &self,
        rev: &crate::migration::Revision,
        event: &'static str,
        app_version: Option<&str>,
    ) -> Write {
        let template = if rev.repeatable { REAPPLY } else { APPLY };
        self.write(template, "recording the revision", Some(1))
            .row(rev, app_version)
            .text(event)
            .proof(self.proof)
    }

    /// A revision reverted (or un-stamped).
    pub(crate) fn revert(&self, id: &str, event: &'static str) -> Write {
        self.write(REVERT, "recording the revert", Some(1)).text(id).text(event).proof(self.proof)
    }

    /// A `transaction none` revision starts in `dir`.
    pub(crate) fn start(
        &self,
        rev: &crate::migration::Revision,
        dir: Direction,
        app_version: Option<&str>,
    ) -> Write {
        self.write(START, "recording the start of the revision", Some(1))
            .row(rev, app_version)
            .text(dir_word(dir))
            .proof(self.proof)
    }

    /// A running `transaction none` revision is about to run `statement`.
    pub(crate) fn progress(&self, id: &str, statement: usize) -> Write {
        self.write(PROGRESS, "recording the revision's progress", Some(1))
            .text(id)
            .int(statement)
            .proof(self.proof)
    }

    /// A revision failed (for `transaction none`, it is recorded `failed`).
    pub(crate) fn fail(&self, id: &str, statement: Option<usize>, error: &str, dir: Direction) -> Write {
        let statement = statement.map(|s| s.min(i32::MAX as usize) as i32);
        let mut w = self.write(FAIL, "recording the failure", None).text(id);
        w.params.push((Box::new(statement), Type::INT4));
        w.text(error).text(dir_word(dir)).proof(self.proof)
    }

    /// A `transaction none` revision's up finished.
    pub(crate) fn finish(&self, id: &str) -> Write {
        self.write(FINISH, "recording the revision", Some(1)).text(id).proof(self.proof)
    }

    /// An operator settled a blocked revision.
    pub(crate) fn resolve(&self, id: &str, how: Resolved) -> Write {
        let how = match how {
            Resolved::Applied => "applied",
            Resolved::Reverted => "reverted",
        };
        self.write(RESOLVE, "recording the resolution", Some(1)).text(id).text(how).proof(self.proof)
    }

    /// An operator accepted the current checksum of an applied revision.
    pub(crate) fn repair(&self, id: &str, checksum: &str) -> Write {
        let mut w = self.write(REPAIR, "recording the new checksum", None).text(id).text(checksum);
        w.params.push((Box::new(Checksum::VERSION), Type::INT2));
        w.proof(self.proof)
    }

    /// A failed `transaction none` revision runs again from `statement`.
    pub(crate) fn restart(&self, id: &str, statement: usize) -> Write {
        self.write(RESTART, "recording the retry", Some(1)).text(id).int(statement).proof(self.proof)
    }

    /// A `verify` run, in `events`.
    pub(crate) fn verified(&self, checked: i64, failed: i64) -> Write {
        let sql = self.sql(
            r#"INSERT INTO {schema}."events" (kind, detail)
               VALUES ('verify', jsonb_build_object('checked', $1::bigint, 'failed', $2::bigint))
               RETURNING true, 1::bigint"#,
        );
        let mut w = Write { sql, params: Vec::new(), expect: None, what: "recording a verify run" };
        w.params.push((Box::new(checked), Type::INT8));
        w.params.push((Box::new(failed), Type::INT8));
        w
    }
}

impl Write {
    fn text(mut self, s: &str) -> Self {
        self.params.push((Box::new(s.to_owned()), Type::TEXT));
        self
    }

    fn int(mut self, n: usize) -> Self {
        self.params.push((Box::new(n.min(i32::MAX as usize) as i32), Type::INT4));
        self
    }

    /// The lock key and the lease token the write proves.
    fn proof(mut self, proof: Proof) -> Self {
        self.params.push((Box::new(proof.key), Type::INT8));
        self.params.push((Box::new(proof.token), Type::INT8));
        self
    }

    /// The columns of a revision's row: id, revises, depends_on, checksum,
    /// checksum_version, kind, app_version.
    fn row(mut self, rev: &crate::migration::Revision, app_version: Option<&str>) -> Self {
        let ids = |l: &[crate::RevisionId]| l.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>();
        self = self.text(rev.id.as_str());
        self.params.push((Box::new(ids(&rev.revises)), Type::TEXT_ARRAY));
        self.params.push((Box::new(ids(&rev.depends_on)), Type::TEXT_ARRAY));
        self = self.text(&rev.checksum.to_hex());
        self.params.push((Box::new(Checksum::VERSION), Type::INT2));
        self = self.text(rev.kind());
        self.params.push((Box::new(app_version.map(str::to_owned)), Type::TEXT));
        self
    }
}

fn dir_word(dir: Direction) -> &'static str {
    match dir {
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

/// The rows of a multi-statement simple query, one group per statement.
pub(crate) fn groups(msgs: Vec<SimpleQueryMessage>) -> Vec<Vec<SimpleQueryRow>> {
    let mut out = vec![Vec::new()];
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => out.last_mut().expect("never empty").push(r),
            SimpleQueryMessage::CommandComplete(_) => out.push(Vec::new()),
            _ => {}
        }
    }
    out.pop();
    out
}

/// The `<key>`/`<value>` pairs of `table_to_xml` output for `meta`.
fn xml_pairs(xml: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut key = None;
    for (name, value) in xml_elements(xml) {
        match name.as_str() {
            "key" => key = Some(value),
            "value" => pairs.extend(key.take().map(|k| (k, value))),
            _ => {}
        }
    }
    pairs
}

/// The elements holding text in `table_to_xml` or `query_to_xml` output
/// (`<name>text</name>`), in order, their text unescaped; the row elements
/// around them, which carry attributes, are skipped.
pub(crate) fn xml_elements(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(end) = rest.find('>') else { break };
        let name = &rest[..end];
        rest = &rest[end + 1..];
        if name.is_empty() || name.contains([' ', '/']) {
            continue;
        }
        let close = format!("</{name}>");
        if let Some(text_end) = rest.find(&close) {
            let text = &rest[..text_end];
            if !text.contains('<') {
                out.push((name.to_owned(), unescape(text)));
                rest = &rest[text_end + close.len()..];
            }
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

// ----- who holds the migration lock, or the lease -----

/// The session, other than this one, holding the advisory lock `key` in this
/// database; [`holder_of`] reads its row.
pub(crate) fn holder_sql(key: i64) -> String {
    let (hi, lo) = key_parts(key);
    format!(
        "SELECT a.pid::text, coalesce(a.application_name, ''), coalesce(a.backend_start::text, ''), \
                coalesce(host(a.client_addr), 'local') \
         FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {hi} AND l.objid = {lo} \
           AND l.objsubid = 1 AND l.pid <> pg_catalog.pg_backend_pid() \
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"
    )
}

/// A row of [`holder_sql`].
pub(crate) fn holder_of(r: &tokio_postgres::SimpleQueryRow) -> LockHolder {
    LockHolder {
        pid: r.get(0).and_then(|p| p.parse().ok()).unwrap_or_default(),
        application_name: r.get(1).unwrap_or_default().to_owned(),
        since: r.get(2).unwrap_or_default().to_owned(),
        client: r.get(3).unwrap_or_default().to_owned(),
        lease_token: None,
    }
}

/// The statement that reads the live lease, one row with one value: its
/// holder as XML, or NULL when there is none or no `lease` table (the
/// table's name is looked up first, so older tables raise no error).
pub(crate) fn live_sql(ledger: &Ledger) -> String {
    let query = ledger.sql(
        r#"SELECT token, pid, host, application_name, taken_at::text AS since FROM {schema}."lease"
           WHERE expires_at > pg_catalog.clock_timestamp()"#,
    );
    format!(
        "SELECT CASE WHEN pg_catalog.to_regclass({}) IS NOT NULL \
                THEN pg_catalog.query_to_xml({}, false, true, '')::text END",
        quote_literal(&ledger.table("lease")),
        quote_literal(&query)
    )
}

/// The holder in the answer to [`live_sql`], if the lease is live.
pub(crate) fn holder_of_xml(xml: &str) -> Option<LockHolder> {
    let fields = xml_elements(xml);
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let token = field("token")?.parse().ok()?;
    Some(LockHolder {
        pid: field("pid").and_then(|p| p.parse().ok()).unwrap_or_default(),
        application_name: field("application_name").unwrap_or_default(),
        since: field("since").unwrap_or_default(),
        client: field("host").unwrap_or_default(),
        lease_token: Some(token),
    })
}

/// Whether `e` says a bookkeeping object is missing: the schema, a table, a
/// function or a column (the tables were dropped, or never created).
pub(crate) fn missing(e: &tokio_postgres::Error) -> bool {
    matches!(e.code().map(|c| c.code()), Some("3F000" | "42P01" | "42883" | "42703"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_named_like_a_placeholder_is_inserted_once_and_never_expanded() {
        let ledger = Ledger::new("{elapsed_ms}");
        let sql = ledger.sql(r#"SELECT {elapsed_ms} FROM {schema}."meta""#);
        assert!(sql.ends_with(r#"FROM "{elapsed_ms}"."meta""#), "{sql}");
        assert_eq!(sql.matches("{elapsed_ms}").count(), 1, "{sql}");
        assert!(!sql.starts_with("SELECT {"), "{sql}");
    }

    #[test]
    fn unknown_braces_are_left_as_they_are() {
        let ledger = Ledger::new("s");
        assert_eq!(
            ledger.sql("SELECT '{}', '{a,b}', '{Schema}' {schema}"),
            r#"SELECT '{}', '{a,b}', '{Schema}' "s""#
        );
    }

    #[test]
    fn xml_pairs_reads_table_to_xml_output_and_unescapes_it() {
        let xml = "<meta xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <key>format</key>\n  <value>3</value>\n</meta>\n\n\
                   <meta xmlns:xsi=\"x\">\n  <key>digest</key>\n  <value>1:a&amp;b&lt;</value>\n</meta>\n";
        assert_eq!(
            xml_pairs(xml),
            vec![("format".to_owned(), "3".to_owned()), ("digest".to_owned(), "1:a&b<".to_owned())]
        );
    }
}
