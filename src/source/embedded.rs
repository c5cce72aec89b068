//! Revisions embedded at compile time by `embed_migrations!`: the files'
//! bytes, their checksums and the set digest, computed by the macro with the
//! runtime's parser. Nothing is parsed until a [`MigrationSet`] is asked for,
//! so a run at head, which needs only the digest, does no parsing and no
//! hashing.

use std::path::Path;
use std::sync::{Once, OnceLock};

use crate::error::Error;
use crate::id::Checksum;

use super::{MigrationSet, SetBuilder};

/// A directory of revision files embedded at compile time by
/// [`embed_migrations!`](crate::embed_migrations).
///
/// It holds each file's bytes and checksum and the digest of the whole set,
/// all computed when the crate was compiled; it parses the files only when a
/// [`MigrationSet`] is needed, and keeps that set. It is a [`Migrator`](crate::Migrator): a
/// run on a database at head compares the compile-time digest with the
/// database's in one query and returns, without parsing or hashing anything;
/// a run with work to do (and `status`, `plan`, ...) parses the files first.
/// Each file was parsed and checked while the crate compiled, so what a run
/// can still report is the graph's errors (an unknown parent, a cycle,
/// several heads).
///
/// ```no_run
/// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
///
/// # async fn start(pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
/// MIGRATIONS.run(&pool).await?;
/// # Ok(()) }
/// ```
///
/// With settings of your own, [`with_config`](crate::Migrator::with_config). To add
/// Rust-coded revisions or backfills, start a [`SetBuilder`] from it with
/// [`Embedded::builder`], and finish with [`SetBuilder::lazy`] to keep the
/// fast start.
///
/// In debug builds, the first [`set`](Embedded::set) or [`run`](Embedded::run)
/// compares the embedded files with the directory on disk and logs a warning
/// (with `tracing`) when they differ: a file added since the last build is
/// only embedded after a rebuild, which `build.rs` asks for with
/// `println!("cargo:rerun-if-changed=migrations");`.
///
/// It is `Copy`: a copy shares the parsed set with the original, so
/// `MIGRATIONS.with_config(...)` on a `static` parses the files at most once too.
#[derive(Clone, Copy)]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub struct Embedded {
    files: &'static [EmbeddedFile],
    digest: &'static str,
    /// The directory the files came from; `None` in release builds.
    source: Option<&'static str>,
    state: &'static EmbeddedState,
}

/// What an [`Embedded`] set learns at run time, in a `static` of its own
/// that `embed_migrations!` declares, so that copies of the set share it.
/// Not a stable API.
#[doc(hidden)]
pub struct EmbeddedState {
    set: OnceLock<MigrationSet>,
    checked: Once,
}

impl EmbeddedState {
    /// Called by the code `embed_migrations!` generates; not a stable API.
    #[doc(hidden)]
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self { set: OnceLock::new(), checked: Once::new() }
    }
}

/// One file of an [`Embedded`] set.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub struct EmbeddedFile {
    path: &'static str,
    id: &'static str,
    checksum: [u8; 32],
    contents: &'static [u8],
}

impl Embedded {
    /// Called by the code `embed_migrations!` generates; not a stable API.
    #[doc(hidden)]
    pub const fn __new(
        files: &'static [EmbeddedFile],
        digest: &'static str,
        source: Option<&'static str>,
        state: &'static EmbeddedState,
    ) -> Self {
        Self { files, digest, source, state }
    }

    /// The digest of the embedded files, computed at compile time: equal to the
    /// [`fingerprint`](MigrationSet::fingerprint) of a set of these files alone.
    ///
    /// ```
    /// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
    /// assert_eq!(MIGRATIONS.digest(), MIGRATIONS.set()?.fingerprint());
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn digest(&self) -> &'static str {
        self.digest
    }

    /// The embedded files, sorted by path.
    ///
    /// ```
    /// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
    /// let first = &MIGRATIONS.files()[0];
    /// assert_eq!(first.id(), "0001_extensions");
    /// assert_eq!(first.path(), "migrations/0001_extensions.sql");
    /// assert_eq!(first.checksum(), pgskein::Checksum::of_sql(std::str::from_utf8(first.contents()).unwrap()));
    /// ```
    pub fn files(&self) -> &'static [EmbeddedFile] {
        self.files
    }

    /// The number of embedded files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file was embedded.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The validated [`MigrationSet`] of these files, parsed on the first call
    /// and kept. The files were checked one by one at compile time; what can
    /// still fail here is the graph (an unknown parent, a cycle, several heads).
    ///
    /// ```
    /// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
    /// let set = MIGRATIONS.set()?;
    /// assert_eq!(set.len(), MIGRATIONS.len());
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn set(&self) -> Result<&MigrationSet, Error> {
        self.check_source();
        if let Some(set) = self.state.set.get() {
            return Ok(set);
        }
        let set = self.builder().build()?;
        Ok(self.state.set.get_or_init(|| set))
    }

    /// A [`SetBuilder`] holding these files, to add Rust-coded revisions,
    /// backfills or other sources before building the set.
    ///
    /// ```
    /// use pgskein::backfill::Backfill;
    ///
    /// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
    /// let set = MIGRATIONS
    ///     .builder()
    ///     .backfill(
    ///         Backfill::sql("documents_sha256_fill", "0003_enhance_documents")
    ///             .table("documents")
    ///             .key("id")
    ///             .statement("UPDATE documents SET sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex') WHERE id >= $1 AND id < $2"),
    ///     )
    ///     .build()?;
    /// assert_eq!(set.declared_backfills().len(), 1);
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn builder(&self) -> SetBuilder {
        self.check_source();
        MigrationSet::builder().files(self)
    }

    /// In debug builds, once: warns when the directory the files came from
    /// no longer holds the same revision files.
    pub(crate) fn check_source(&self) {
        let Some(dir) = self.source else { return };
        self.state.checked.call_once(|| {
            if let Some(difference) = differs_from_disk(self.files, Path::new(dir)) {
                tracing::warn!(
                    directory = dir,
                    %difference,
                    "the embedded migrations differ from the directory on disk; rebuild the crate \
                     (a build.rs with `println!(\"cargo:rerun-if-changed=migrations\");` makes cargo \
                     rebuild when a file is added)"
                );
            }
        });
    }
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("files", &self.files.len()).field("digest", &self.digest).finish()
    }
}

impl EmbeddedFile {
    /// Called by the code `embed_migrations!` generates; not a stable API.
    #[doc(hidden)]
    pub const fn __new(
        path: &'static str,
        id: &'static str,
        checksum: [u8; 32],
        contents: &'static [u8],
    ) -> Self {
        Self { path, id, checksum, contents }
    }

    /// The path errors name: the macro's directory argument and the file name,
    /// e.g. `migrations/0001_extensions.sql`.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// The revision id: the file stem.
    pub fn id(&self) -> &'static str {
        self.id
    }

    /// The file's checksum, as [`Checksum::of_sql`] computes it.
    pub fn checksum(&self) -> Checksum {
        Checksum::from_bytes(self.checksum)
    }

    /// The file's bytes.
    pub fn contents(&self) -> &'static [u8] {
        self.contents
    }
}

impl SetBuilder {
    /// Adds the files of an [`Embedded`] set (see also [`Embedded::builder`]).
    ///
    /// ```
    /// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
    /// let set = pgskein::MigrationSet::builder()
    ///     .files(&MIGRATIONS)
    ///     .file("0011_notes.sql", b"-- pgskein: revises 0010_audit_log\n-- pgskein: up\nCREATE TABLE notes (id int);\n")
    ///     .build()?;
    /// assert_eq!(set.len(), MIGRATIONS.len() + 1);
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn files(mut self, embedded: &Embedded) -> Self {
        for f in embedded.files {
            self.push_file(f.path.into(), f.contents.into(), Some(f.checksum()));
        }
        self
    }
}

/// What differs between the embedded files and the revision files now in
/// `dir`, or `None` when they are the same (or `dir` cannot be read: a
/// binary run away from its source tree has nothing to compare with).
fn differs_from_disk(files: &[EmbeddedFile], dir: &Path) -> Option<String> {
    let on_disk: Vec<(String, std::path::PathBuf)> = super::fs::read_revisions(dir)
        .ok()?
        .into_iter()
        .map(|(path, _)| (path.file_name().unwrap_or_default().to_string_lossy().into_owned(), path))
        .collect();
    let embedded_name = |f: &EmbeddedFile| f.path.rsplit(['/', '\\']).next().unwrap_or(f.path).to_owned();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (name, path) in &on_disk {
        match files.iter().find(|f| embedded_name(f) == *name) {
            None => added.push(name.as_str()),
            Some(f) => {
                if std::fs::read(path).ok().as_deref() != Some(f.contents) {
                    changed.push(name.as_str());
                }
            }
        }
    }
    let removed: Vec<String> =
        files.iter().map(embedded_name).filter(|n| !on_disk.iter().any(|(d, _)| d == n)).collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("new on disk: {}", added.join(", ")));
    }
    if !changed.is_empty() {
        parts.push(format!("changed on disk: {}", changed.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("gone from disk: {}", removed.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &'static str, contents: &'static [u8]) -> EmbeddedFile {
        let id = path.trim_end_matches(".sql").rsplit('/').next().unwrap();
        EmbeddedFile::__new(path, id, *Checksum::of_bytes(contents).as_bytes(), contents)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pgskein-embedded-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn same_files_on_disk_is_no_difference() {
        let dir = scratch("same");
        std::fs::write(dir.join("0001_a.sql"), b"-- pgskein: up\nSELECT 1;\n").unwrap();
        std::fs::write(dir.join("notes.txt"), b"not a revision").unwrap();
        let files = [file("m/0001_a.sql", b"-- pgskein: up\nSELECT 1;\n")];
        assert_eq!(differs_from_disk(&files, &dir), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn difference_names_new_changed_and_gone_files() {
        let dir = scratch("differs");
        std::fs::write(dir.join("0001_a.sql"), b"-- pgskein: up\nSELECT 2;\n").unwrap();
        std::fs::write(dir.join("0003_c.sql"), b"-- pgskein: up\nSELECT 3;\n").unwrap();
        let files = [file("m/0001_a.sql", b"-- pgskein: up\nSELECT 1;\n"), file("m/0002_b.sql", b"x")];
        assert_eq!(
            differs_from_disk(&files, &dir).as_deref(),
            Some("new on disk: 0003_c.sql; changed on disk: 0001_a.sql; gone from disk: 0002_b.sql")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unreadable_source_directory_is_no_difference() {
        let files = [file("m/0001_a.sql", b"x")];
        assert_eq!(differs_from_disk(&files, Path::new("/nonexistent/pgskein/migrations")), None);
    }
}
