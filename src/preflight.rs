//! Pre-flight checks: before a plan touches anything, find what would make it
//! fail half-way (a missing privilege or extension) or hurt the application
//! (a session holding a lock on a table the plan alters, a long transaction).
//! Read-only, and the statement scanning is a heuristic over the split
//! statements: it reports, it never blocks a run by itself.

use std::collections::BTreeSet;

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::error::Error;
use crate::graph::Graph;
use crate::id::RevisionId;
use crate::migration::Body;
use crate::plan::{Direction, Plan};
use crate::split;

/// What [`Migrator::preflight`](crate::Migrator::preflight) found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Preflight {
    /// `server_version` of the server.
    pub server_version: String,
    /// The plan the checks were made for.
    pub plan: Plan,
    /// Everything that would make the plan fail or block the application.
    pub problems: Vec<Problem>,
}

impl Preflight {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One finding of a pre-flight check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The revision that needs what is missing, when there is one.
    pub revision: Option<RevisionId>,
    /// A sentence saying what is wrong and what to do.
    pub message: String,
}

/// The kinds of pre-flight problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The role lacks `CREATE` on a schema or the database.
    MissingPrivilege,
    /// An extension a revision creates is not installed on the server.
    MissingExtension,
    /// An extension is available but this role cannot create it.
    ExtensionNotCreatable,
    /// Another session holds a lock on a table the plan alters.
    LockHeld,
    /// A transaction has been open for more than a minute: DDL would queue behind it.
    LongTransaction,
}

/// What the pending steps need, read off their SQL.
#[derive(Debug, Default)]
struct Needs {
    /// (schema, revision): objects created in a named schema; `None` = the current schema.
    schemas: Vec<(Option<String>, RevisionId)>,
    extensions: Vec<(String, RevisionId)>,
    tables: BTreeSet<String>,
    creates_schema: Option<RevisionId>,
}

fn unquote(name: &str) -> String {
    let name = name.trim_end_matches([';', '(']);
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(q) => q.replace("\"\"", "\""),
        None => name.to_ascii_lowercase(),
    }
}

/// Splits `schema.name` (either part possibly quoted) into its parts.
fn qualified(token: &str) -> (Option<String>, String) {
    match token.find("\".\"").map(|i| i + 1).or_else(|| token.find('.')) {
        Some(i) => (Some(unquote(&token[..i])), unquote(&token[i + 1..])),
        None => (None, unquote(token)),
    }
}

fn scan(graph: &Graph, steps: &[(usize, Direction)]) -> Needs {
    let mut needs = Needs::default();
    for &(i, direction) in steps {
        let rev = &graph.revs[i];
        let body = match direction {
            Direction::Up => Some(&rev.up),
            Direction::Down => rev.down.as_ref(),
        };
        let Some(Body::Sql(sql)) = body else { continue };
        for stmt in split::split(sql) {
            let words: Vec<&str> = stmt.text.split_whitespace().collect();
            let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
            let at = |i: usize| upper.get(i).map(String::as_str).unwrap_or("");
            let skip_if_exists = |mut i: usize| {
                if at(i) == "IF" {
                    i += if at(i + 1) == "NOT" { 3 } else { 2 };
                }
                i
            };
            match (at(0), at(1)) {
                ("CREATE", "EXTENSION") => {
                    let i = skip_if_exists(2);
                    if let Some(name) = words.get(i) {
                        needs.extensions.push((unquote(name), rev.id.clone()));
                    }
                }
                ("CREATE", "SCHEMA") => {
                    needs.creates_schema.get_or_insert_with(|| rev.id.clone());
                }
                ("CREATE", _) => {
                    let mut i = 1;
                    while matches!(
                        at(i),
                        "OR" | "REPLACE" | "UNIQUE" | "UNLOGGED" | "MATERIALIZED" | "RECURSIVE"
                    ) {
                        i += 1;
                    }
                    let kind = at(i).to_owned();
                    if kind == "INDEX" {
                        if let Some(on) = upper.iter().position(|w| w == "ON") {
                            let t = if at(on + 1) == "ONLY" { on + 2 } else { on + 1 };
                            if let Some(table) = words.get(t) {
                                needs.tables.insert(qualified(table).1);
                            }
                        }
                        continue;
                    }
                    if !matches!(
                        kind.as_str(),
                        "TABLE" | "VIEW" | "SEQUENCE" | "FUNCTION" | "PROCEDURE" | "TYPE" | "DOMAIN"
                    ) {
                        continue;
                    }
                    if let Some(name) = words.get(skip_if_exists(i + 1)) {
                        needs.schemas.push((qualified(name).0, rev.id.clone()));
                    }
                }
                ("ALTER", "TABLE") | ("DROP", "TABLE") | ("LOCK", "TABLE") | ("TRUNCATE", _) => {
                    let mut i = skip_if_exists(if at(0) == "TRUNCATE" && at(1) != "TABLE" { 1 } else { 2 });
                    if at(i) == "ONLY" {
                        i += 1;
                    }
                    if let Some(name) = words.get(i) {
                        needs.tables.insert(qualified(name).1);
                    }
                }
                _ => {}
            }
        }
    }
    needs
}

/// Who runs the checks, as the server sees it.
struct Role {
    name: String,
    current_schema: Option<String>,
    /// CREATE on the database.
    db_create: bool,
    superuser: bool,
}

/// Runs the checks for `steps`. `ledger_missing`: the bookkeeping schema will be created.
/// Every query is an unnamed statement, so the checks also run through a
/// transaction-pooling proxy.
pub(crate) async fn check(
    graph: &Graph,
    steps: &[(usize, Direction)],
    client: &Client,
    ledger_missing: bool,
) -> Result<Preflight, Error> {
    let row = client
        .query_typed_one(
            "SELECT current_setting('server_version'), current_schema()::text, \
                    has_database_privilege(current_database(), 'CREATE'), \
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_user::text",
            &[],
        )
        .await
        .map_err(db)?;
    let server_version: String = row.get(0);
    let role =
        Role { current_schema: row.get(1), db_create: row.get(2), superuser: row.get(3), name: row.get(4) };
    let needs = scan(graph, steps);
    let mut problems = Vec::new();
    if !role.db_create && (ledger_missing || needs.creates_schema.is_some()) {
        let why = if ledger_missing { "the bookkeeping schema" } else { "a schema the plan creates" };
        problems.push(Problem {
            kind: ProblemKind::MissingPrivilege,
            revision: needs.creates_schema.clone(),
            message: format!(
                "role {} lacks CREATE on the database, needed for {why}: GRANT CREATE ON DATABASE ... TO {}",
                role.name, role.name
            ),
        });
    }
    problems.extend(schema_problems(client, &role, &needs).await?);
    problems.extend(extension_problems(client, &role, &needs).await?);
    problems.extend(lock_problems(client, &needs).await?);
    problems.extend(long_transactions(client).await?);
    Ok(Preflight { server_version, plan: Plan::of(graph, steps), problems })
}

fn db(e: tokio_postgres::Error) -> Error {
    Error::Db { context: "running pre-flight checks", source: e }
}

/// CREATE on each existing schema the plan creates objects in.
async fn schema_problems(client: &Client, role: &Role, needs: &Needs) -> Result<Vec<Problem>, Error> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (schema, rev) in &needs.schemas {
        let Some(schema) = schema.clone().or_else(|| role.current_schema.clone()) else { continue };
        if !seen.insert(schema.clone()) {
            continue;
        }
        let row = client
            .query_typed_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                        has_schema_privilege((SELECT oid FROM pg_namespace WHERE nspname = $1), 'CREATE')",
                &[(&schema, Type::TEXT)],
            )
            .await
            .map_err(db)?;
        let (exists, can): (bool, Option<bool>) = (row.get(0), row.get(1));
        if exists && can != Some(true) {
            let name = &role.name;
            problems.push(Problem {
                kind: ProblemKind::MissingPrivilege,
                revision: Some(rev.clone()),
                message: format!(
                    "role {name} lacks CREATE on schema {schema:?}, needed by {rev}: GRANT CREATE ON SCHEMA ... TO {name}"
                ),
            });
        }
    }
    Ok(problems)
}

/// Each extension the plan creates: available, and creatable by this role.
async fn extension_problems(client: &Client, role: &Role, needs: &Needs) -> Result<Vec<Problem>, Error> {
    let mut problems = Vec::new();
    for (ext, rev) in &needs.extensions {
        let row = client
            .query_typed_opt(
                "SELECT e.installed_version IS NOT NULL, \
                        coalesce((SELECT bool_or(v.trusted) FROM pg_available_extension_versions v WHERE v.name = e.name), false) \
                 FROM pg_available_extensions e WHERE e.name = $1",
                &[(ext, Type::TEXT)],
            )
            .await
            .map_err(db)?;
        let name = &role.name;
        let problem = match row {
            None => Some((
                ProblemKind::MissingExtension,
                format!(
                    "extension {ext:?}, created by {rev}, is not available on this server: install its package (e.g. postgresql-contrib) first"
                ),
            )),
            Some(r) => {
                let (installed, trusted): (bool, bool) = (r.get(0), r.get(1));
                let creatable = installed || role.superuser || (trusted && role.db_create);
                (!creatable).then(|| {
                    (
                        ProblemKind::ExtensionNotCreatable,
                        format!(
                            "role {name} cannot create extension {ext:?} (needed by {rev}): it is not trusted, or the role lacks CREATE on the database; have a superuser create it first"
                        ),
                    )
                })
            }
        };
        if let Some((kind, message)) = problem {
            problems.push(Problem { kind, revision: Some(rev.clone()), message });
        }
    }
    Ok(problems)
}

/// Sessions holding locks on the tables the plan alters.
async fn lock_problems(client: &Client, needs: &Needs) -> Result<Vec<Problem>, Error> {
    if needs.tables.is_empty() {
        return Ok(Vec::new());
    }
    let tables: Vec<String> = needs.tables.iter().cloned().collect();
    let rows = client
        .query_typed(
            "SELECT DISTINCT l.pid, coalesce(a.application_name, ''), c.relname::text, l.mode, coalesce(a.state, ''), \
                    coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0) \
             FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.pid <> pg_backend_pid() AND c.relname = ANY($1) \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY 3, 1",
            &[(&tables, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| {
            let (pid, app, table, mode, state, secs): (i32, String, String, String, String, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            Problem {
                kind: ProblemKind::LockHeld,
                revision: None,
                message: format!(
                    "pid {pid} ({app:?}, {state}, transaction open {secs}s) holds {mode} on {table}, which the plan alters: the migration would wait for it, and the application's queries behind the migration"
                ),
            }
        })
        .collect())
}

/// Transactions open for more than a minute: DDL would queue behind them.
async fn long_transactions(client: &Client) -> Result<Vec<Problem>, Error> {
    let rows = client
        .query_typed(
            "SELECT pid, coalesce(application_name, ''), extract(epoch FROM now() - xact_start)::bigint \
             FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND datname = current_database() \
               AND xact_start < now() - interval '1 minute' ORDER BY xact_start",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| {
            let (pid, app, secs): (i32, String, i64) = (r.get(0), r.get(1), r.get(2));
            Problem {
                kind: ProblemKind::LongTransaction,
                revision: None,
                message: format!(
                    "pid {pid} ({app:?}) has had a transaction open for {secs}s: DDL may queue behind it"
                ),
            }
        })
        .collect())
}
