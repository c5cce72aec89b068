//! The only parser of revision files: (path, bytes) -> Revision. Pure: the
//! embedded and the on-disk sources both call it, so they cannot disagree.
//!
//! A file is a header of `-- pgskein: <directive>` comments, then an `up`
//! section and optional `down` and `verify` sections. Unknown directives are
//! errors: a typo must not silently change how a migration runs.

use crate::error::{Error, ParseErrorKind};
use crate::id::{Checksum, RevisionId};
use crate::migration::{Body, Revision, TxMode};
use crate::split;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Header,
    Up,
    Down,
    Verify,
}

/// Parses one revision file. `path` names the file in errors; its stem is the id.
pub(crate) fn parse(path: &str, bytes: &[u8]) -> Result<Revision, Error> {
    let err = |line: Option<usize>, kind| Error::Parse { path: path.to_owned(), line, kind };
    let text = std::str::from_utf8(bytes)
        .map_err(|e| err(None, ParseErrorKind::NotUtf8 { offset: e.valid_up_to() }))?;
    let checksum = Checksum::of_sql(text);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(err(None, ParseErrorKind::Empty));
    }
    let id = file_id(path).map_err(|m| err(None, ParseErrorKind::BadFileName(m)))?;

    let mut revises = None;
    let mut depends_on = None;
    let mut branch = None;
    let mut message = None;
    let mut release = None;
    let mut tx = None;
    let mut lock_timeout = None;
    let mut repeatable = false;
    let mut statement_timeout = None;
    let mut bodies: [Option<(usize, String)>; 3] = [None, None, None];
    let mut section = Section::Header;

    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let Some((name, value)) = directive(line) else {
            match section {
                Section::Header => {
                    let t = line.trim();
                    if t.trim_start_matches('-').trim_start().starts_with("pgskein") && t.starts_with("--") {
                        return Err(err(Some(lineno), ParseErrorKind::MalformedDirective));
                    }
                    if !(t.is_empty() || t.starts_with("--")) {
                        return Err(err(Some(lineno), ParseErrorKind::SqlBeforeUp));
                    }
                }
                s => {
                    let body = &mut bodies[s as usize - 1].as_mut().expect("section opened").1;
                    body.push_str(line);
                    body.push('\n');
                }
            }
            continue;
        };
        let at = |kind| err(Some(lineno), kind);
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
        let known = [
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
        let Some(&name) = known.iter().find(|k| **k == name) else {
            return Err(at(ParseErrorKind::UnknownDirective(name.to_owned())));
        };
        if section != Section::Header {
            return Err(at(ParseErrorKind::DirectiveAfterUp(name.to_owned())));
        }
        let dup = || at(ParseErrorKind::DuplicateDirective(name.to_owned()));
        let bad = |reason: String| at(ParseErrorKind::BadValue { directive: name, reason });
        match name {
            "revises" | "depends-on" => {
                let ids = id_list(value).map_err(bad)?;
                if ids.contains(&id) {
                    return Err(at(ParseErrorKind::SelfReference(name)));
                }
                let slot = if name == "revises" { &mut revises } else { &mut depends_on };
                if slot.replace(ids).is_some() {
                    return Err(dup());
                }
            }
            "branch" => {
                let label = RevisionId::new(value).map_err(|_| {
                    bad(format!(
                        "branch label {value:?} must be ASCII letters, digits, '_', '.' or '-', \
                         start with a letter or digit, and not be head, heads or base; rename the label"
                    ))
                })?;
                if branch.replace(label.as_str().to_owned()).is_some() {
                    return Err(dup());
                }
            }
            "transaction" => {
                if value != "none" {
                    return Err(bad(format!(
                        "expected `none` (revisions are transactional unless declared otherwise), found {value:?}"
                    )));
                }
                if tx.replace(TxMode::None).is_some() {
                    return Err(dup());
                }
            }
            "message" => {
                if message.replace(value.to_owned()).is_some() {
                    return Err(dup());
                }
            }
            "repeatable" => {
                if !value.is_empty() {
                    return Err(bad(format!("takes no value, found {value:?}")));
                }
                if std::mem::replace(&mut repeatable, true) {
                    return Err(dup());
                }
            }
            "lock-timeout" | "statement-timeout" => {
                let d = parse_duration(value).map_err(bad)?;
                let slot = if name == "lock-timeout" { &mut lock_timeout } else { &mut statement_timeout };
                if slot.replace(d).is_some() {
                    return Err(dup());
                }
            }
            "release" => {
                let v = semver::Version::parse(value)
                    .map_err(|e| bad(format!("{value:?} is not a semantic version ({e})")))?;
                if release.replace(v).is_some() {
                    return Err(dup());
                }
            }
            _ => unreachable!("filtered by `known`"),
        }
    }

    let [up, down, verify] = bodies;
    let Some((up_line, up)) = up else {
        return Err(err(None, ParseErrorKind::MissingUp));
    };
    let tx = tx.unwrap_or_default();
    if repeatable {
        // A repeatable revision is re-run whenever it changes, so it stands
        // outside the graph and inside a transaction.
        let conflict = [
            ("revises", revises.is_some()),
            ("depends-on", depends_on.is_some()),
            ("branch", branch.is_some()),
            ("release", release.is_some()),
            ("transaction", tx == TxMode::None),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        if let Some((directive, _)) = conflict {
            return Err(err(
                None,
                ParseErrorKind::BadValue {
                    directive: "repeatable",
                    reason: format!("a repeatable revision cannot also declare `{directive}`"),
                },
            ));
        }
    }
    let (down_line, down) = match down {
        Some((line, body)) => (line, Some(body)),
        None => (0, None),
    };
    if tx == TxMode::Transactional {
        check_transactional(path, up_line, &up)?;
        if let Some(down) = &down {
            check_transactional(path, down_line, down)?;
        }
    }
    if let Some((line, verify)) = &verify {
        check_transactional(path, *line, verify)?;
    }
    let revises = revises.unwrap_or_default();
    let depends_on: Vec<RevisionId> = depends_on.unwrap_or_default();
    Ok(Revision {
        lock_timeout,
        statement_timeout,
        repeatable,
        id,
        revises,
        depends_on,
        branch,
        message,
        release,
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

/// Whether a directory entry named `name` is a revision file: `*.sql`, not hidden.
/// Every source (include_dir, disk, `embed_migrations!`) picks files with it.
pub(crate) fn is_revision_file_name(name: &str) -> bool {
    !name.starts_with('.') && name.len() > ".sql".len() && name.ends_with(".sql")
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

#[cfg(test)]
mod tests;
