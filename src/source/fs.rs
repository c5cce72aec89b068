//! Which entries of a migration directory are revisions, and reading them
//! from disk. Shared by the run-time loaders and `embed_migrations!` (the
//! proc-macro crate links this file), so every source picks the same files
//! and refuses the same ones.
//!
//! Invariant: an entry named like a revision file is read or reported, never
//! skipped in silence: another case of `.sql`, a directory, a dangling
//! symlink, a symlink loop, a name that is not UTF-8. Hidden entries (editor
//! backups, lock files) are not revisions.

use std::fmt;
use std::path::{Path, PathBuf};

/// How a directory entry's name looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Looks {
    /// `<id>.sql`: a revision file.
    Revision,
    /// `<id>.SQL` or another case of it: meant as one, but not loaded alike on every file system.
    UpperCase,
}

/// Whether an entry named `name` (its bytes: a name need not be UTF-8) is
/// named like a revision file.
pub(crate) fn looks_like_revision(name: &[u8]) -> Option<Looks> {
    if name.starts_with(b".") || name.len() <= 4 {
        return None;
    }
    let ext = &name[name.len() - 4..];
    if ext == b".sql" {
        Some(Looks::Revision)
    } else if ext.eq_ignore_ascii_case(b".sql") {
        Some(Looks::UpperCase)
    } else {
        None
    }
}

/// Why an entry named like a revision file cannot be loaded.
#[derive(Debug)]
pub(crate) enum Unreadable {
    UpperCase,
    Directory,
    NotAFile,
    NotUtf8,
    /// Reading it failed: a dangling symlink, a symlink loop, no permission.
    Io(std::io::Error),
}

impl Unreadable {
    /// What is wrong and what to do, for errors that name the entry.
    pub(crate) fn problem(&self) -> &'static str {
        match self {
            Unreadable::UpperCase => "revision files end in lower-case `.sql`; rename it",
            Unreadable::Directory => "a directory named like a revision file; rename or remove it",
            Unreadable::NotAFile => "not a regular file (a socket, a FIFO or a device); remove it",
            Unreadable::NotUtf8 => "the file name is not valid UTF-8; rename it",
            Unreadable::Io(_) => "cannot be read (a dangling symlink, a symlink loop, or no permission)",
        }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::Io(e) => write!(f, "{}: {e}", self.problem()),
            other => f.write_str(other.problem()),
        }
    }
}

/// An entry named like a revision file: its path, and its bytes or why it cannot be loaded.
pub(crate) type Entry = (PathBuf, Result<Vec<u8>, Unreadable>);

/// The entries of `dir` named like revision files, sorted by name.
pub(crate) fn read_revisions(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(looks) = path.file_name().and_then(|n| looks_like_revision(n.as_encoded_bytes())) else {
            continue;
        };
        let read = match (looks, std::fs::metadata(&path)) {
            (Looks::UpperCase, _) => Err(Unreadable::UpperCase),
            (_, Err(e)) => Err(Unreadable::Io(e)),
            (_, Ok(m)) if m.is_dir() => Err(Unreadable::Directory),
            (_, Ok(m)) if !m.is_file() => Err(Unreadable::NotAFile),
            (_, Ok(_)) if path.to_str().is_none() => Err(Unreadable::NotUtf8),
            (_, Ok(_)) => std::fs::read(&path).map_err(Unreadable::Io),
        };
        found.push((path, read));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}
