//! Writing revision files for `new` and `merge`: the next id in the
//! directory's numbering, and the header the parser expects.

use std::io;
use std::path::{Path, PathBuf};

/// The next number of the directory's `NNNN_slug.sql` files and its width
/// (at least 4 digits, more if the files already use more).
pub(crate) fn next_number(dir: &Path) -> io::Result<(u64, usize)> {
    let mut max = 0u64;
    let mut width = 4;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((1, width)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".sql")) else { continue };
        let digits: &str = stem.split('_').next().unwrap_or_default();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() == stem.len() {
            continue;
        }
        if let Ok(n) = digits.parse::<u64>() {
            max = max.max(n);
            width = width.max(digits.len());
        }
    }
    Ok((max + 1, width))
}

/// `Add users!` → `add_users`: lowercase ASCII letters and digits, words joined by `_`.
pub(crate) fn slugify(text: &str) -> Option<String> {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let slug = slug.trim_end_matches('_');
    (!slug.is_empty()).then(|| slug.chars().take(60).collect::<String>().trim_end_matches('_').to_owned())
}

/// What a new revision file declares.
pub(crate) struct NewFile<'a> {
    pub(crate) revises: &'a [String],
    pub(crate) depends_on: &'a [String],
    pub(crate) branch: Option<&'a str>,
    pub(crate) no_transaction: bool,
    pub(crate) repeatable: bool,
    pub(crate) message: &'a str,
    pub(crate) merge: bool,
}

/// The file's text: header directives, then empty up and down sections.
pub(crate) fn render(f: &NewFile<'_>) -> String {
    let mut out = String::new();
    if !f.revises.is_empty() {
        out.push_str(&format!("-- pgskein: revises {}\n", f.revises.join(", ")));
    }
    if !f.depends_on.is_empty() {
        out.push_str(&format!("-- pgskein: depends-on {}\n", f.depends_on.join(", ")));
    }
    if let Some(b) = f.branch {
        out.push_str(&format!("-- pgskein: branch {b}\n"));
    }
    if f.repeatable {
        out.push_str("-- pgskein: repeatable\n");
    }
    if f.no_transaction {
        out.push_str("-- pgskein: transaction none\n");
    }
    let message: String = f.message.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    out.push_str(&format!("-- pgskein: message {}\n", message.trim()));
    if f.merge {
        out.push_str("-- Merges the branches above; add SQL only if they need reconciling.\n");
    }
    out.push_str("-- pgskein: up\n\n");
    out.push_str("-- pgskein: down\n\n");
    out
}

/// Writes `dir/<id>.sql`, creating `dir` if needed; never overwrites.
pub(crate) fn write(dir: &Path, id: &str, text: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{id}.sql"));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_words_joined_by_underscores() {
        assert_eq!(slugify("Add users!").as_deref(), Some("add_users"));
        assert_eq!(slugify("  documents: source-index  ").as_deref(), Some("documents_source_index"));
        assert_eq!(slugify("--").as_deref(), None);
        assert_eq!(slugify("élan vital").as_deref(), Some("lan_vital"));
    }

    #[test]
    fn the_next_number_follows_the_files_present() {
        let dir = std::env::temp_dir().join(format!("pgskein-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(next_number(&dir).unwrap(), (1, 4));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["0001_a.sql", "0009_b.sql", "0010.sql", "notes.md", "x_0100.sql"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(next_number(&dir).unwrap(), (10, 4));
        std::fs::write(dir.join("00120_c.sql"), "").unwrap();
        assert_eq!(next_number(&dir).unwrap(), (121, 5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_file_parses_as_a_revision_with_its_directives() {
        let text = render(&NewFile {
            revises: &["0001_a".into()],
            depends_on: &["0002_b".into()],
            branch: Some("auth"),
            no_transaction: true,
            repeatable: false,
            message: "Add users",
            merge: false,
        });
        let set = crate::MigrationSet::builder()
            .file("0001_a.sql", b"-- pgskein: up\n")
            .file("0002_b.sql", b"-- pgskein: up\n")
            .file("0003_c.sql", text.as_bytes())
            .allow_multiple_heads(true)
            .build()
            .unwrap();
        let c = set.get("0003_c").unwrap();
        assert_eq!(c.revises()[0].as_str(), "0001_a");
        assert_eq!(c.depends_on()[0].as_str(), "0002_b");
        assert_eq!(c.branch(), Some("auth"));
        assert_eq!(c.transaction(), crate::migration::Transaction::None);
        assert_eq!(c.message(), Some("Add users"));
        assert!(c.down().is_some());
    }

    #[test]
    fn a_new_repeatable_file_parses_as_a_repeatable_revision() {
        let text = render(&NewFile {
            revises: &[],
            depends_on: &[],
            branch: None,
            no_transaction: false,
            repeatable: true,
            message: "Current plans view",
            merge: false,
        });
        let set = crate::MigrationSet::builder().file("R_plans.sql", text.as_bytes()).build().unwrap();
        assert!(set.get("R_plans").unwrap().is_repeatable());
    }
}
