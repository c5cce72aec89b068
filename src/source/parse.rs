//! The only parser of revision files: (path, bytes) -> Revision. Pure: the
//! embedded and the on-disk sources both call it, so they cannot disagree.
//!
//! A file is a header of `-- pgskein: <directive>` comments, then an `up`
//! section and optional `down` and `verify` sections. Unknown directives are
//! errors: a typo must not silently change how a migration runs.

use crate::error::{Error, ParseErrorKind};
use crate::id::{Checksum, RevisionId};
use crate::migration::{Body, Revision, Transaction};
use crate::split;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Header,
    Up,
    Down,
    Verify,
}

/// The header's directives, as they are read.
#[derive(Default)]
struct Header {
    revises: Option<Vec<RevisionId>>,
    depends_on: Option<Vec<RevisionId>>,
    branch: Option<String>,
    message: Option<String>,
    release: Option<semver::Version>,
    tx: Option<Transaction>,
    lock_timeout: Option<std::time::Duration>,
    statement_timeout: Option<std::time::Duration>,
    repeatable: bool,
}

/// The directives a header may hold (the section markers aside).
const DIRECTIVES: [&str; 9] = [
    "revises",
    "depends-on",
    "branch",
    "transaction",
    "message",
    "release",
    "lock-timeout",
    "statement-timeout",
    "repeatable",
];

impl Header {
    /// Records directive `name` (one of [`DIRECTIVES`]) of the revision `id`.
    fn set(&mut self, name: &'static str, value: &str, id: &RevisionId) -> Result<(), ParseErrorKind> {
        let bad = |reason: String| ParseErrorKind::BadValue { directive: name, reason };
        let fresh = match name {
            "revises" | "depends-on" => {
                let ids = id_list(value).map_err(bad)?;
                if ids.contains(id) {
                    return Err(ParseErrorKind::SelfReference(name));
                }
                let slot = if name == "revises" { &mut self.revises } else { &mut self.depends_on };
                slot.replace(ids).is_none()
            }
            "branch" => {
                let label = RevisionId::new(value).map_err(|_| {
                    bad(format!(
                        "branch label {value:?} must be ASCII letters, digits, '_', '.' or '-', \
                         start with a letter or digit, and not be head, heads or base; rename the label"
                    ))
                })?;
                self.branch.replace(label.as_str().to_owned()).is_none()
            }
            "transaction" => {
                if value != "none" {
                    return Err(bad(format!(
                        "expected `none` (revisions are transactional unless declared otherwise), found {value:?}"
                    )));
                }
                self.tx.replace(Transaction::None).is_none()
            }
            "message" => self.message.replace(value.to_owned()).is_none(),
            "repeatable" => {
                if !value.is_empty() {
                    return Err(bad(format!("takes no value, found {value:?}")));
                }
                !std::mem::replace(&mut self.repeatable, true)
            }
            "lock-timeout" | "statement-timeout" => {
                let d = parse_duration(value).map_err(bad)?;
                let slot =
                    if name == "lock-timeout" { &mut self.lock_timeout } else { &mut self.statement_timeout };
                slot.replace(d).is_none()
            }
            _ => {
                let v = semver::Version::parse(value)
                    .map_err(|e| bad(format!("{value:?} is not a semantic version ({e})")))?;
                self.release.replace(v).is_none()
            }
        };
        if fresh { Ok(()) } else { Err(ParseErrorKind::DuplicateDirective(name.to_owned())) }
    }

    /// A repeatable revision is re-run whenever it changes, so it stands
    /// outside the graph and inside a transaction: the directive that says
    /// otherwise, if any.
    fn repeatable_conflict(&self) -> Option<&'static str> {
        if !self.repeatable {
            return None;
        }
        [
            ("revises", self.revises.is_some()),
            ("depends-on", self.depends_on.is_some()),
            ("branch", self.branch.is_some()),
            ("release", self.release.is_some()),
            ("transaction", self.tx == Some(Transaction::None)),
        ]
        .into_iter()
        .find_map(|(directive, set)| set.then_some(directive))
    }
}

/// Parses one revision file. `path` names the file in errors; its stem is the id.
///
/// A little over 80 lines, kept whole: one pass over the lines, whose section
/// state (header, up, down, verify) reads best in one place.
pub(crate) fn parse(path: &str, bytes: &[u8]) -> Result<Revision, Error> {
    let err = |line: Option<usize>, kind| Error::Parse { path: path.to_owned(), line, kind };
    let (text, checksum) = text_of(bytes).map_err(|(line, kind)| err(line, kind))?;
    let id = file_id(path).map_err(|m| err(None, ParseErrorKind::BadFileName(m)))?;
    let mut header = Header::default();
    let mut bodies: [Option<(usize, String)>; 3] = [None, None, None];
    let mut section = Section::Header;
    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let at = |kind| err(Some(lineno), kind);
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let Some((name, value)) = directive(line) else {
            match bodies.get_mut((section as usize).wrapping_sub(1)).and_then(Option::as_mut) {
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => header_line(line).map_err(at)?,
            }
            continue;
        };
        let next = match name {
            "up" => Some(Section::Up),
            "down" => Some(Section::Down),
            "verify" => Some(Section::Verify),
            _ => None,
        };
        if let Some(next) = next {
            if !value.is_empty() {
                return Err(at(ParseErrorKind::BadValue {
                    directive: section_name(next),
                    reason: format!("section markers take no value, found {value:?}"),
                }));
            }
            if next != Section::Up && section == Section::Header {
                return Err(at(ParseErrorKind::SectionBeforeUp(name.to_owned())));
            }
            let slot = &mut bodies[next as usize - 1];
            if slot.is_some() {
                return Err(at(ParseErrorKind::DuplicateDirective(name.to_owned())));
            }
            *slot = Some((lineno + 1, String::new()));
            section = next;
            continue;
        }
        let Some(&name) = DIRECTIVES.iter().find(|k| **k == name) else {
            return Err(at(ParseErrorKind::UnknownDirective(name.to_owned())));
        };
        if section != Section::Header {
            return Err(at(ParseErrorKind::DirectiveAfterUp(name.to_owned())));
        }
        header.set(name, value, &id).map_err(at)?;
    }
    let [up, down, verify] = bodies;
    let Some((up_line, up)) = up else {
        return Err(err(None, ParseErrorKind::MissingUp));
    };
    if let Some(directive) = header.repeatable_conflict() {
        let reason = format!("a repeatable revision cannot also declare `{directive}`");
        return Err(err(None, ParseErrorKind::BadValue { directive: "repeatable", reason }));
    }
    let tx = header.tx.unwrap_or_default();
    let (down_line, down) = down.map_or((0, None), |(line, body)| (line, Some(body)));
    check_bodies(path, tx, (up_line, &up), down.as_ref().map(|d| (down_line, d)), verify.as_ref())?;
    Ok(Revision {
        lock_timeout: header.lock_timeout,
        statement_timeout: header.statement_timeout,
        repeatable: header.repeatable,
        id,
        revises: header.revises.unwrap_or_default(),
        depends_on: header.depends_on.unwrap_or_default(),
        branch: header.branch,
        message: header.message,
        release: header.release,
        tx,
        up: Body::Sql(up),
        up_line,
        down: down.map(Body::Sql),
        down_line,
        verify: verify.map(|(_, v)| v).filter(|v| !split::split(v).is_empty()),
        checksum,
        origin: path.to_owned(),
    })
}

/// The text of a revision file without its BOM, and the checksum of the whole
/// file. Refuses what no server could run: invalid UTF-8, a NUL byte (the
/// client would refuse the body mid-run), an empty file.
fn text_of(bytes: &[u8]) -> Result<(&str, Checksum), (Option<usize>, ParseErrorKind)> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| (None, ParseErrorKind::NotUtf8 { offset: e.valid_up_to() }))?;
    if let Some(at) = text.find('\0') {
        let line = text[..at].matches('\n').count() + 1;
        return Err((Some(line), ParseErrorKind::NulByte));
    }
    let checksum = Checksum::of_sql(text);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err((None, ParseErrorKind::Empty));
    }
    Ok((text, checksum))
}

/// Checks the bodies, each with the line it starts on, against the
/// revision's transaction mode: no transaction control in a transactional
/// body or a verify section, every transaction ended in a `transaction none` one.
fn check_bodies(
    path: &str,
    tx: Transaction,
    up: (usize, &String),
    down: Option<(usize, &String)>,
    verify: Option<&(usize, String)>,
) -> Result<(), Error> {
    for (line, body) in std::iter::once(up).chain(down) {
        match tx {
            Transaction::Transactional => check_transactional(path, line, body)?,
            Transaction::None => check_transactions_end(path, line, body)?,
        }
    }
    if let Some((line, verify)) = verify {
        check_transactional(path, *line, verify)?;
    }
    Ok(())
}

/// A header line that is not a directive: blank or a comment, and not a
/// comment that looks like a directive without its colon.
fn header_line(line: &str) -> Result<(), ParseErrorKind> {
    let t = line.trim();
    if t.trim_start_matches('-').trim_start().starts_with("pgskein") && t.starts_with("--") {
        return Err(ParseErrorKind::MalformedDirective);
    }
    if !(t.is_empty() || t.starts_with("--")) {
        return Err(ParseErrorKind::SqlBeforeUp);
    }
    Ok(())
}

fn section_name(s: Section) -> &'static str {
    match s {
        Section::Header => "header",
        Section::Up => "up",
        Section::Down => "down",
        Section::Verify => "verify",
    }
}

/// Splits `-- pgskein: name value` into (name, value).
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix("--")?.trim_start();
    let rest = rest.strip_prefix("pgskein:")?.trim();
    Some(match rest.split_once(char::is_whitespace) {
        Some((name, value)) => (name, value.trim()),
        None => (rest, ""),
    })
}

fn id_list(value: &str) -> Result<Vec<RevisionId>, String> {
    let mut ids: Vec<RevisionId> = Vec::new();
    for part in value.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
        let id = RevisionId::new(part)?;
        if ids.contains(&id) {
            return Err(format!("{id} is listed twice"));
        }
        ids.push(id);
    }
    if ids.is_empty() {
        return Err("expected one or more revision ids".into());
    }
    Ok(ids)
}

/// `250ms`, `5s`, `2min`, `1h`: a whole number and a unit, as PostgreSQL writes them.
pub(crate) fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 =
        number.parse().map_err(|_| format!("expected a duration like 500ms, 5s or 2min, found {value:?}"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("unknown unit in {value:?}: use ms, s, min or h")),
    };
    if ms == 0 {
        return Err("a timeout of zero would mean no timeout; omit the directive instead".into());
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// The id is the file stem of `<id>.sql`.
pub(crate) fn file_id(path: &str) -> Result<RevisionId, String> {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let stem = name.strip_suffix(".sql").ok_or_else(|| format!("{name:?} does not end in .sql"))?;
    RevisionId::new(stem)
}

fn check_transactional(path: &str, first_line: usize, body: &str) -> Result<(), Error> {
    for stmt in split::split(body) {
        let (operation, control) =
            match (split::transaction_control(stmt.text), split::non_transactional(stmt.text)) {
                (Some(op), _) => (op, true),
                (None, Some(op)) => (op, false),
                (None, None) => continue,
            };
        return Err(Error::NeedsNoTransaction {
            path: path.to_owned(),
            line: first_line + stmt.line - 1,
            operation,
            control,
        });
    }
    Ok(())
}

/// A `transaction none` body may open transactions of its own, but must end
/// each one: pgskein records the revision outside any transaction.
fn check_transactions_end(path: &str, first_line: usize, body: &str) -> Result<(), Error> {
    let mut open = None;
    for stmt in split::split(body) {
        match split::transaction_control(stmt.text) {
            Some("BEGIN" | "START TRANSACTION") => open = Some(stmt.line),
            Some(_) => open = None,
            None => {}
        }
    }
    match open {
        Some(line) => Err(Error::Parse {
            path: path.to_owned(),
            line: Some(first_line + line - 1),
            kind: ParseErrorKind::UnendedTransaction,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
