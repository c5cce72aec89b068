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
use std::io::Read;
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
///
/// A start at head reads every file, so this is the part of it that grows
/// with the set: the type of an entry comes with the directory listing on
/// most file systems, so a plain file costs no `stat` of its own (symlinks
/// and unknown types are followed with one), a file is read without the
/// `stat` `fs::read` makes to size its buffer, and a large directory is read
/// by a few threads at once.
pub(crate) fn read_revisions(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut named = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(looks) = looks_like_revision(entry.file_name().as_encoded_bytes()) else {
            continue;
        };
        let plain = entry.file_type().is_ok_and(|t| t.is_file());
        named.push((entry.file_name(), entry.path(), looks, plain));
    }
    // One directory: the names alone order the paths.
    named.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(in_parallel(named, |(_, path, looks, plain)| {
        let read = read_entry(&path, looks, plain);
        (path, read)
    }))
}

fn read_entry(path: &Path, looks: Looks, plain: bool) -> Result<Vec<u8>, Unreadable> {
    if looks == Looks::UpperCase {
        return Err(Unreadable::UpperCase);
    }
    if !plain {
        match std::fs::metadata(path) {
            Err(e) => return Err(Unreadable::Io(e)),
            Ok(m) if m.is_dir() => return Err(Unreadable::Directory),
            Ok(m) if !m.is_file() => return Err(Unreadable::NotAFile),
            Ok(_) => {}
        }
    }
    if path.to_str().is_none() {
        return Err(Unreadable::NotUtf8);
    }
    read_small_file(path).map_err(Unreadable::Io)
}

/// Open, read to the end, close: without the `stat` and `lseek` that
/// `fs::read` and `File::read_to_end` make to size their buffer (through
/// `Take`, which reads into the spare capacity until a read returns nothing).
fn read_small_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(4096);
    file.take(u64::MAX).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Below this many files, threads cost more than they save.
const PARALLEL_FROM: usize = 256;

/// `f` over `items`, in order, on up to four threads for long lists.
fn in_parallel<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if threads < 2 || items.len() < PARALLEL_FROM {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    loop {
        let chunk: Vec<T> = items.by_ref().take(per_thread).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let mut chunks = chunks.into_iter();
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> =
            chunks.map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<U>>())).collect();
        let mut out: Vec<U> = first.into_iter().map(f).collect();
        for handle in others {
            match handle.join() {
                Ok(part) => out.extend(part),
                // `f` does not panic; if it did, say so where it happened.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
