//! The linter behind `pgskein check`: flags statements of up bodies that hold
//! heavy locks for long, or break the code still running during a deploy, on
//! tables that already exist, each with the safe way to do the same thing.
//!
//! Pure: it reads the SQL text alone. "An existing table" is therefore a
//! table not created earlier in the same revision's up body, and tables are
//! matched by the last component of their name (`public.items` is `items`).
//! Down bodies are not linted: they undo what their up did, usually on tables
//! that revision created. A statement is exempt from a rule when the comment
//! lines right above it, a comment inside it, or a comment after it on its
//! last line say `-- pgskein-lint: allow <rule>[, <rule>...]` (or `allow all`).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use crate::id::RevisionId;
use crate::migration::Revision;
use crate::source::MigrationSet;
use crate::split;

/// What a [`LintWarning`] is about. Each rule has a stable kebab-case
/// [`name`](LintRule::name), used in output and in `pgskein-lint: allow` comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LintRule {
    /// `create-index`: `CREATE INDEX` without `CONCURRENTLY` blocks writes while the index builds.
    CreateIndex,
    /// `foreign-key`: a foreign key added without `NOT VALID` checks every row under lock.
    ForeignKey,
    /// `check-constraint`: a CHECK added without `NOT VALID` checks every row under lock.
    CheckConstraint,
    /// `unique-constraint`: `ADD UNIQUE` / `PRIMARY KEY` builds an index while blocking writes.
    UniqueConstraint,
    /// `set-not-null`: `SET NOT NULL` scans the table under an ACCESS EXCLUSIVE lock.
    SetNotNull,
    /// `volatile-default`: a column added with a value computed per row (a
    /// volatile default, a serial or identity column, a stored generated
    /// column) rewrites the table.
    VolatileDefault,
    /// `alter-column-type`: `ALTER COLUMN ... TYPE` rewrites the table and its indexes.
    AlterColumnType,
    /// `drop-column`: code still running may read or write the column.
    DropColumn,
    /// `drop-table`: code still running may use the table.
    DropTable,
    /// `rename-column`: code still running uses the old name.
    RenameColumn,
    /// `rename-table`: code still running uses the old name.
    RenameTable,
}

impl LintRule {
    /// Every rule, in the order `pgskein check` documents them.
    pub const ALL: [LintRule; 11] = [
        LintRule::CreateIndex,
        LintRule::ForeignKey,
        LintRule::CheckConstraint,
        LintRule::UniqueConstraint,
        LintRule::SetNotNull,
        LintRule::VolatileDefault,
        LintRule::AlterColumnType,
        LintRule::DropColumn,
        LintRule::DropTable,
        LintRule::RenameColumn,
        LintRule::RenameTable,
    ];

    /// The rule's stable name, e.g. `create-index`.
    ///
    /// ```
    /// assert_eq!(pgskein::lint::LintRule::SetNotNull.name(), "set-not-null");
    /// assert_eq!("set-not-null".parse::<pgskein::lint::LintRule>(), Ok(pgskein::lint::LintRule::SetNotNull));
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            LintRule::CreateIndex => "create-index",
            LintRule::ForeignKey => "foreign-key",
            LintRule::CheckConstraint => "check-constraint",
            LintRule::UniqueConstraint => "unique-constraint",
            LintRule::SetNotNull => "set-not-null",
            LintRule::VolatileDefault => "volatile-default",
            LintRule::AlterColumnType => "alter-column-type",
            LintRule::DropColumn => "drop-column",
            LintRule::DropTable => "drop-table",
            LintRule::RenameColumn => "rename-column",
            LintRule::RenameTable => "rename-table",
        }
    }

    /// The safe way to do what the flagged statement does.
    pub fn suggestion(self) -> &'static str {
        match self {
            LintRule::CreateIndex => {
                "use CREATE INDEX CONCURRENTLY, in a revision declared `-- pgskein: transaction none`"
            }
            LintRule::ForeignKey => {
                "add the constraint with NOT VALID (new rows are checked at once), then \
                 ALTER TABLE ... VALIDATE CONSTRAINT in a later revision: validation takes a lock that lets \
                 reads and writes go on"
            }
            LintRule::CheckConstraint => {
                "add the CHECK with NOT VALID (new rows are checked at once), then \
                 ALTER TABLE ... VALIDATE CONSTRAINT in a later revision: validation takes a lock that lets \
                 reads and writes go on"
            }
            LintRule::UniqueConstraint => {
                "CREATE UNIQUE INDEX CONCURRENTLY in a `transaction none` revision, then \
                 ALTER TABLE ... ADD CONSTRAINT ... UNIQUE (or PRIMARY KEY) USING INDEX"
            }
            LintRule::SetNotNull => {
                "ADD CONSTRAINT ... CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a later \
                 revision, then SET NOT NULL (the valid CHECK spares the scan) and drop the CHECK"
            }
            LintRule::VolatileDefault => {
                "add the column without a default (or with a constant one), SET DEFAULT for new rows, and \
                 fill existing rows in batches"
            }
            LintRule::AlterColumnType => {
                "add a column of the new type, fill it in batches, switch the application to it, then drop \
                 the old column in a later release"
            }
            LintRule::DropColumn => {
                "stop using the column in one release, then drop it in a later one (the drop itself is fast)"
            }
            LintRule::DropTable => {
                "stop using the table in one release, then drop it in a later one, after a backup"
            }
            LintRule::RenameColumn => {
                "add a column with the new name, write both, fill it, switch reads, then drop the old one \
                 in a later release"
            }
            LintRule::RenameTable => {
                "rename only once no running release uses the old name, or leave a view with the old name \
                 while both releases run"
            }
        }
    }
}

impl fmt::Display for LintRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for LintRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LintRule::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            let names: Vec<&str> = LintRule::ALL.iter().map(|r| r.name()).collect();
            format!("unknown lint rule {s:?}; known: {}", names.join(", "))
        })
    }
}

/// A statement that `pgskein check` warns about: where it is, which rule it
/// breaks, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LintWarning {
    /// The revision.
    pub revision: RevisionId,
    /// Its file.
    pub path: String,
    /// The 1-based line in the file of the flagged clause.
    pub line: usize,
    /// The rule.
    pub rule: LintRule,
    /// The table the statement alters (last component of its name).
    pub table: String,
    /// What the statement does wrong, naming the table and column.
    pub message: String,
    /// The safe alternative: [`LintRule::suggestion`].
    pub suggestion: &'static str,
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} [{}]; instead, {}",
            self.path, self.line, self.message, self.rule, self.suggestion
        )
    }
}

impl MigrationSet {
    /// Lints every SQL up body for operations that take long or heavy locks
    /// on existing tables, in canonical order. Pure: reads no database.
    ///
    /// ```
    /// let set = pgskein::MigrationSet::builder()
    ///     .file("0001_items.sql", b"-- pgskein: up\nCREATE TABLE items (id int);\nCREATE INDEX ON items (id);\n")
    ///     .file("0002_index.sql", b"-- pgskein: revises 0001_items\n-- pgskein: up\nCREATE INDEX items_id ON items (id);\n")
    ///     .build()?;
    /// let warnings = set.lint();
    /// assert_eq!(warnings.len(), 1); // the table created in 0001 is empty there
    /// assert_eq!((warnings[0].rule.name(), warnings[0].line), ("create-index", 3));
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn lint(&self) -> Vec<LintWarning> {
        let mut out = Vec::new();
        for rev in self.revisions() {
            lint_revision(rev, &mut out);
        }
        out
    }
}

/// Functions whose value differs per row: as a column default they force a rewrite.
const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "nextval",
];

const SERIAL: &[&str] = &["serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"];

type Tok<'a> = (usize, &'a str);

fn kw(toks: &[Tok<'_>], i: usize, keyword: &str) -> bool {
    toks.get(i).is_some_and(|(_, t)| t.eq_ignore_ascii_case(keyword))
}

/// The (possibly qualified) name starting at `i`: its last component,
/// normalised as PostgreSQL folds it, and the index after it.
fn name_at(toks: &[Tok<'_>], mut i: usize) -> Option<(String, usize)> {
    let mut last = ident(toks.get(i)?.1)?;
    i += 1;
    while kw(toks, i, ".") {
        match toks.get(i + 1).and_then(|(_, t)| ident(t)) {
            Some(part) => {
                last = part;
                i += 2;
            }
            None => break,
        }
    }
    Some((last, i))
}

fn ident(t: &str) -> Option<String> {
    if let Some(inner) = t.strip_prefix('"') {
        return Some(inner.strip_suffix('"').unwrap_or(inner).replace("\"\"", "\""));
    }
    let first = t.bytes().next()?;
    (first.is_ascii_alphabetic() || first == b'_' || first >= 0x80).then(|| t.to_lowercase())
}

/// Splits an ALTER TABLE action list at top-level commas.
fn actions<'t, 'a>(toks: &'t [Tok<'a>]) -> Vec<&'t [Tok<'a>]> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, (_, t)) in toks.iter().enumerate() {
        match *t {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            "," if depth == 0 => {
                out.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&toks[start..]);
    out.retain(|a| !a.is_empty());
    out
}

fn has_pair(toks: &[Tok<'_>], a: &str, b: &str) -> bool {
    (0..toks.len()).any(|i| kw(toks, i, a) && kw(toks, i + 1, b))
}

/// The rules a statement is exempt from, from `pgskein-lint: allow` comments
/// in the comment lines right above it and inside it.
fn allowances(body_lines: &[&str], first_line: usize, text: &str) -> (HashSet<LintRule>, bool) {
    let mut rules = HashSet::new();
    let mut all = false;
    let mut read = |line: &str| {
        let Some(at) = line.find("pgskein-lint:") else { return };
        let rest = line[at + "pgskein-lint:".len()..].trim();
        let Some(list) = rest.strip_prefix("allow") else { return };
        for name in list.split(|c: char| c == ',' || c.is_whitespace()).filter(|n| !n.is_empty()) {
            if name == "all" {
                all = true;
            } else if let Ok(rule) = name.parse() {
                rules.insert(rule);
            }
        }
    };
    let mut i = first_line.saturating_sub(1);
    while i > 0 {
        i -= 1;
        let line = body_lines.get(i).map_or("", |l| l.trim_start());
        if !line.starts_with("--") {
            break;
        }
        read(line);
    }
    text.lines().for_each(&mut read);
    // A comment after the statement's `;`, on its last line.
    let last = first_line.saturating_sub(1) + text.matches('\n').count();
    read(body_lines.get(last).copied().unwrap_or_default());
    (rules, all)
}

fn lint_revision(rev: &Revision, out: &mut Vec<LintWarning>) {
    let Some(body) = rev.up().sql() else { return };
    let body_lines: Vec<&str> = body.split('\n').collect();
    // Tables this revision creates: changing them blocks no one.
    let mut created: HashSet<String> = HashSet::new();
    for stmt in split::split(body) {
        let toks = split::tokens_at(stmt.text);
        let (allowed, all) = allowances(&body_lines, stmt.line, stmt.text);
        let first_line = rev.up_line + stmt.line - 1;
        let mut warn = |rule: LintRule, offset: usize, table: &str, message: String| {
            if all || allowed.contains(&rule) {
                return;
            }
            let line = first_line + stmt.text.get(..offset).map_or(0, |t| t.matches('\n').count());
            out.push(LintWarning {
                revision: rev.id().clone(),
                path: rev.origin().to_owned(),
                line,
                rule,
                table: table.to_owned(),
                message,
                suggestion: rule.suggestion(),
            });
        };
        if kw(&toks, 0, "CREATE") {
            create(&toks, &mut created, &mut warn);
        } else if kw(&toks, 0, "DROP") && kw(&toks, 1, "TABLE") {
            drop_table(&toks, &mut created, &mut warn);
        } else if kw(&toks, 0, "ALTER") && kw(&toks, 1, "TABLE") {
            alter_table(&toks, &mut created, &mut warn);
        }
    }
}

/// The signature of the callback a statement's checks report through.
trait Warn: FnMut(LintRule, usize, &str, String) {}
impl<F: FnMut(LintRule, usize, &str, String)> Warn for F {}

/// `CREATE INDEX` without `CONCURRENTLY` on an existing table; `CREATE TABLE` is remembered.
fn create(toks: &[Tok<'_>], created: &mut HashSet<String>, warn: &mut impl Warn) {
    let index = if kw(toks, 1, "UNIQUE") { 2 } else { 1 };
    if kw(toks, index, "INDEX") {
        let concurrently = kw(toks, index + 1, "CONCURRENTLY");
        let Some(on) = (index + 1..toks.len()).find(|&i| kw(toks, i, "ON")) else { return };
        let from = if kw(toks, on + 1, "ONLY") { on + 2 } else { on + 1 };
        let Some((table, _)) = name_at(toks, from) else { return };
        if !concurrently && !created.contains(&table) {
            let message = format!(
                "CREATE INDEX on existing table {table} blocks writes to it until the index is built"
            );
            warn(LintRule::CreateIndex, toks.first().map_or(0, |t| t.0), &table, message);
        }
        return;
    }
    let mut i = 1;
    while ["GLOBAL", "LOCAL", "TEMP", "TEMPORARY", "UNLOGGED"].iter().any(|k| kw(toks, i, k)) {
        i += 1;
    }
    if kw(toks, i, "TABLE") {
        i += 1;
        if kw(toks, i, "IF") {
            i += 3;
        }
        if let Some((table, _)) = name_at(toks, i) {
            created.insert(table);
        }
    }
}

/// `DROP TABLE` of a table the revision did not create.
fn drop_table(toks: &[Tok<'_>], created: &mut HashSet<String>, warn: &mut impl Warn) {
    let mut i = if kw(toks, 2, "IF") { 4 } else { 2 };
    while let Some((table, next)) = name_at(toks, i) {
        if matches!(table.as_str(), "cascade" | "restrict") {
            break;
        }
        if !created.remove(&table) {
            let message = format!("DROP TABLE {table} breaks the code still running that uses the table");
            warn(LintRule::DropTable, toks.get(i).map_or(0, |t| t.0), &table, message);
        }
        if !kw(toks, next, ",") {
            break;
        }
        i = next + 1;
    }
}

/// Each action of `ALTER TABLE`, through [`alter_action`].
fn alter_table(toks: &[Tok<'_>], created: &mut HashSet<String>, warn: &mut impl Warn) {
    let mut i = 2;
    if kw(toks, i, "IF") {
        i += 2;
    }
    if kw(toks, i, "ONLY") {
        i += 1;
    }
    if kw(toks, i, "ALL") {
        return;
    }
    let Some((table, mut next)) = name_at(toks, i) else { return };
    if kw(toks, next, "*") {
        next += 1;
    }
    let existing = !created.contains(&table);
    for action in actions(&toks[next..]) {
        if let Some(renamed) = alter_action(action, &table, existing, warn) {
            if !existing {
                created.insert(renamed);
            }
        }
    }
}

/// Checks one ALTER TABLE action; returns the new name of a renamed table.
fn alter_action(
    a: &[Tok<'_>],
    table: &str,
    existing: bool,
    warn: &mut impl FnMut(LintRule, usize, &str, String),
) -> Option<String> {
    let at = a[0].0;
    if kw(a, 0, "RENAME") {
        if kw(a, 1, "TO") {
            let (new, _) = name_at(a, 2)?;
            if existing {
                warn(
                    LintRule::RenameTable,
                    at,
                    table,
                    format!(
                        "renaming table {table} to {new} breaks the code still running that uses the old name"
                    ),
                );
            }
            return Some(new);
        }
        if kw(a, 1, "CONSTRAINT") || !existing {
            return None;
        }
        let from = if kw(a, 1, "COLUMN") { 2 } else { 1 };
        let (column, _) = name_at(a, from)?;
        let message =
            format!("renaming column {table}.{column} breaks the code still running that uses the old name");
        warn(LintRule::RenameColumn, at, table, message);
        return None;
    }
    if !existing {
        return None;
    }
    if kw(a, 0, "DROP") {
        if kw(a, 1, "CONSTRAINT") {
            return None;
        }
        let mut i = if kw(a, 1, "COLUMN") { 2 } else { 1 };
        if kw(a, i, "IF") {
            i += 2;
        }
        let (column, _) = name_at(a, i)?;
        let message = format!("dropping column {table}.{column} breaks the code still running that uses it");
        warn(LintRule::DropColumn, at, table, message);
    } else if kw(a, 0, "ALTER") {
        if kw(a, 1, "CONSTRAINT") {
            return None;
        }
        let i = if kw(a, 1, "COLUMN") { 2 } else { 1 };
        let (column, i) = name_at(a, i)?;
        if kw(a, i, "TYPE") || (kw(a, i, "SET") && kw(a, i + 1, "DATA") && kw(a, i + 2, "TYPE")) {
            let message = format!(
                "changing the type of {table}.{column} rewrites the table and its indexes under an \
                 ACCESS EXCLUSIVE lock (unless the types are binary compatible, as varchar(n) to text)"
            );
            warn(LintRule::AlterColumnType, at, table, message);
        } else if kw(a, i, "SET") && kw(a, i + 1, "NOT") && kw(a, i + 2, "NULL") {
            let message = format!(
                "SET NOT NULL on {table}.{column} scans the whole table under an ACCESS EXCLUSIVE lock"
            );
            warn(LintRule::SetNotNull, at, table, message);
        }
    } else if kw(a, 0, "ADD") {
        let kinds = ["FOREIGN", "CHECK", "UNIQUE", "PRIMARY", "EXCLUDE"];
        if kw(a, 1, "CONSTRAINT") || kinds.iter().any(|k| kw(a, 1, k)) {
            add_constraint(a, table, warn);
        } else {
            add_column(a, table, warn);
        }
    }
    None
}

/// `ADD [CONSTRAINT name] <kind> ...`.
fn add_constraint(a: &[Tok<'_>], table: &str, warn: &mut impl FnMut(LintRule, usize, &str, String)) {
    let k = if kw(a, 1, "CONSTRAINT") { 3 } else { 1 };
    let not_valid = has_pair(a, "NOT", "VALID");
    let what = if kw(a, 1, "CONSTRAINT") {
        a.get(2).and_then(|(_, n)| ident(n)).map(|n| format!(" {n}")).unwrap_or_default()
    } else {
        String::new()
    };
    let at = a[0].0;
    if kw(a, k, "FOREIGN") && !not_valid {
        let message = format!(
            "adding foreign key{what} to existing table {table} without NOT VALID checks every row while \
             blocking writes to both tables"
        );
        warn(LintRule::ForeignKey, at, table, message);
    } else if kw(a, k, "CHECK") && !not_valid {
        let message = format!(
            "adding CHECK{what} to existing table {table} without NOT VALID scans every row under an \
             ACCESS EXCLUSIVE lock"
        );
        warn(LintRule::CheckConstraint, at, table, message);
    } else if (kw(a, k, "UNIQUE") || kw(a, k, "PRIMARY")) && !has_pair(a, "USING", "INDEX") {
        let message = format!(
            "adding {}{what} to existing table {table} builds its index while blocking writes",
            if kw(a, k, "UNIQUE") { "UNIQUE constraint" } else { "PRIMARY KEY" }
        );
        warn(LintRule::UniqueConstraint, at, table, message);
    }
}

/// `ADD [COLUMN] [IF NOT EXISTS] name type [constraints]`.
fn add_column(a: &[Tok<'_>], table: &str, warn: &mut impl FnMut(LintRule, usize, &str, String)) {
    let mut i = if kw(a, 1, "COLUMN") { 2 } else { 1 };
    if kw(a, i, "IF") {
        i += 3;
    }
    let Some((column, i)) = name_at(a, i) else { return };
    let at = a[0].0;
    let rest = &a[i..];
    let ty = rest.first().map_or("", |t| t.1);
    let default = (0..rest.len()).find(|&j| kw(rest, j, "DEFAULT"));
    let volatile = default.and_then(|d| {
        (d + 1..rest.len()).find_map(|j| {
            let name = rest[j].1.to_ascii_lowercase();
            (VOLATILE.contains(&name.as_str()) && kw(rest, j + 1, "(")).then_some(name)
        })
    });
    let generated = (0..rest.len()).find(|&j| kw(rest, j, "GENERATED"));
    let computed = if let Some(f) = volatile {
        Some(format!("the volatile default {f}()"))
    } else if SERIAL.iter().any(|s| ty.eq_ignore_ascii_case(s)) {
        Some(format!("the {} type", ty.to_ascii_lowercase()))
    } else if generated.is_some_and(|g| (g..rest.len()).any(|j| kw(rest, j, "IDENTITY"))) {
        Some("an identity".to_owned())
    } else if generated.is_some() && (0..rest.len()).any(|j| kw(rest, j, "STORED")) {
        Some("a stored generated value".to_owned())
    } else {
        None
    };
    if let Some(what) = computed {
        let message = format!(
            "adding column {table}.{column} with {what} computes a value per row and rewrites the whole \
             table under an ACCESS EXCLUSIVE lock"
        );
        warn(LintRule::VolatileDefault, at, table, message);
    }
    if (0..rest.len()).any(|j| kw(rest, j, "REFERENCES")) {
        let message = format!(
            "adding column {table}.{column} with REFERENCES checks every row of existing table {table} \
             under an ACCESS EXCLUSIVE lock (a column constraint cannot be NOT VALID)"
        );
        warn(LintRule::ForeignKey, at, table, message);
    }
    if (0..rest.len()).any(|j| kw(rest, j, "CHECK")) {
        let message = format!(
            "adding column {table}.{column} with a CHECK scans every row of existing table {table} under \
             an ACCESS EXCLUSIVE lock (a column constraint cannot be NOT VALID)"
        );
        warn(LintRule::CheckConstraint, at, table, message);
    }
    if (0..rest.len()).any(|j| kw(rest, j, "UNIQUE") || (kw(rest, j, "PRIMARY") && kw(rest, j + 1, "KEY"))) {
        let message = format!(
            "adding column {table}.{column} with UNIQUE or PRIMARY KEY builds an index on existing table \
             {table} while blocking writes"
        );
        warn(LintRule::UniqueConstraint, at, table, message);
    }
}

#[cfg(test)]
mod tests;
