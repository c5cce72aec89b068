//! Where revisions come from: a directory embedded at compile time by
//! `embed_migrations!` (checked there by this same parser), one bundled with
//! include_dir, or the same directory read at run time. All hand (path,
//! bytes) pairs to the one parser in `parse`, then to the graph builder.
//!
//! A builder keeps the files it is given unparsed until the set is built, so
//! that a [`LazySet`] can compute the set's fingerprint from the files' ids
//! and bytes alone (the same digest the graph computes from the parsed
//! revisions), and parse only when a run has work to do.

#[cfg(feature = "macros")]
mod embedded;
pub(crate) mod fs;
pub(crate) mod parse;
pub(crate) mod parse_error;

#[cfg(feature = "macros")]
pub use embedded::{Embedded, EmbeddedFile, EmbeddedState};

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use crate::backfill::decl::Backfill;
use crate::digest::SetDigest;
use crate::error::Error;
use crate::graph::Graph;
use crate::id::{Checksum, RevisionId};
use crate::migration::{Body, Revision};

/// A validated set of revisions: the revision graph the migrator works from.
///
/// Embed the directory at compile time with
/// [`embed_migrations!`](crate::embed_migrations), which checks every file
/// while the crate compiles, and take the set from the [`Embedded`] value:
///
/// ```
/// static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");
///
/// let set = MIGRATIONS.set()?;
/// assert_eq!(set.heads().len(), 1);
/// # Ok::<(), pgskein::Error>(())
/// ```
///
/// or read it from disk at run time with [`MigrationSet::from_dir`], or from
/// an `include_dir` bundle with [`MigrationSet::from_embedded`]. Only the
/// `*.sql` files at the top of the directory are read; other files are ignored.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub(crate) graph: Graph,
    pub(crate) digest: String,
    /// Declared backfills, in declaration order.
    pub(crate) backfills: Vec<Backfill>,
}

impl MigrationSet {
    /// Loads the `*.sql` files of a directory bundled with `include_dir!`.
    ///
    /// [`embed_migrations!`](crate::embed_migrations) is the simpler way: it
    /// needs no `include_dir` dependency and checks the files at compile time.
    /// With `include_dir`, add `println!("cargo:rerun-if-changed=migrations");`
    /// to `build.rs`, so adding a file rebuilds the crate.
    ///
    /// ```
    /// use include_dir::{include_dir, Dir};
    /// static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
    ///
    /// let set = pgskein::MigrationSet::from_embedded(&MIGRATIONS)?;
    /// assert_eq!(set.heads().len(), 1);
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn from_embedded(dir: &include_dir::Dir<'_>) -> Result<Self, Error> {
        Self::builder().embedded(dir).build()
    }

    /// Loads the `*.sql` files of a directory on disk, parsing and validating
    /// every one. To parse them only when a run has work to do, build a
    /// [`LazySet`] instead: `MigrationSet::builder().dir(path).lazy()?`.
    pub fn from_dir(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder().dir(path).build()
    }

    /// A builder, to combine sources or allow several heads.
    ///
    /// ```
    /// # use include_dir::{include_dir, Dir};
    /// # static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
    /// let set = pgskein::MigrationSet::builder()
    ///     .embedded(&MIGRATIONS)
    ///     .allow_multiple_heads(true)
    ///     .build()?;
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn builder() -> SetBuilder {
        SetBuilder::default()
    }

    /// The revisions in canonical order (parents first, ties broken by id).
    pub fn revisions(&self) -> impl ExactSizeIterator<Item = &Revision> {
        self.graph.revs.iter()
    }

    /// The revision with this id.
    pub fn get(&self, id: &str) -> Option<&Revision> {
        self.graph.get(id).map(|i| &self.graph.revs[i])
    }

    /// The heads: revisions that no revision revises.
    pub fn heads(&self) -> Vec<&RevisionId> {
        self.graph.heads.iter().map(|&h| &self.graph.revs[h].id).collect()
    }

    /// A fingerprint of the whole set: it changes when any revision is added,
    /// removed or edited. The ledger keeps the same digest of what is applied,
    /// which is how a run at head returns after one query.
    pub fn fingerprint(&self) -> &str {
        &self.digest
    }

    /// Plans towards `target` from a list of applied revision ids, without a
    /// database: what [`Migrator::plan`](crate::Migrator::plan) computes after
    /// reading the ledger. Ids unknown to the set count as applied revisions of
    /// a newer release.
    ///
    /// ```
    /// # use include_dir::{include_dir, Dir};
    /// # static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
    /// let set = pgskein::MigrationSet::from_embedded(&MIGRATIONS)?;
    /// let plan = set.plan_from(["0001_extensions", "0002_core_tables"], &"+1".parse()?)?;
    /// assert_eq!(plan.steps[0].id.as_str(), "0003_enhance_documents");
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn plan_from<'a>(
        &self,
        applied: impl IntoIterator<Item = &'a str>,
        target: &crate::Target,
    ) -> Result<crate::Plan, Error> {
        let steps = crate::plan::either_way(&self.graph, &self.reconcile_ids(applied), target)?;
        Ok(crate::Plan::of(&self.graph, &steps))
    }

    pub(crate) fn reconcile_ids<'a>(
        &self,
        applied: impl IntoIterator<Item = &'a str>,
    ) -> crate::plan::Reconciled {
        let rows: Vec<crate::state::Record> = applied
            .into_iter()
            .map(|id| {
                let checksum = self.get(id).map(|r| r.checksum.to_hex()).unwrap_or_default();
                crate::state::Record::applied(id, checksum)
            })
            .collect();
        crate::plan::reconcile(&self.graph, &rows)
    }

    /// The backfills revision `id` lists in `depends-on` (its graph edge goes
    /// to each backfill's revision instead).
    pub(crate) fn backfill_dependencies(&self, id: &str) -> &[String] {
        self.graph.get(id).map_or(&[], |i| self.graph.backfill_deps[i].as_slice())
    }

    /// The backfills declared with [`SetBuilder::backfill`], in declaration
    /// order. [`Migrator::backfills`](crate::Migrator::backfills) runs them.
    pub fn declared_backfills(&self) -> &[Backfill] {
        &self.backfills
    }

    /// A builder holding what this set has besides its SQL files: its
    /// Rust-coded revisions and its backfills. The CLI's `--dir` adds the
    /// directory's files to it, so a service's commands over the source tree
    /// keep the service's own revisions and backfills.
    pub(crate) fn without_files(&self) -> SetBuilder {
        SetBuilder {
            entries: self
                .revisions()
                .filter(|r| matches!(r.up, Body::Rust(_)))
                .map(|r| Entry::Source(Source::Revision(Box::new(r.clone()))))
                .collect(),
            backfills: self.backfills.clone(),
            ..SetBuilder::default()
        }
    }

    /// Replaces each backfill with `f` of it; `f` must keep its name and
    /// revision, which the graph refers to (the CLI adds a progress display).
    pub(crate) fn map_backfills(&mut self, f: impl FnMut(&Backfill) -> Backfill) {
        self.backfills = self.backfills.iter().map(f).collect();
    }

    /// The number of revisions.
    pub fn len(&self) -> usize {
        self.graph.len()
    }

    /// Whether the set has no revisions.
    pub fn is_empty(&self) -> bool {
        self.graph.len() == 0
    }
}

/// Collects sources for a [`MigrationSet`]. Errors are reported by
/// [`build`](SetBuilder::build): the files are read when added, and parsed
/// when the set is built.
#[derive(Debug, Default)]
pub struct SetBuilder {
    /// The sources and the entries that could not be read, in the order added.
    entries: Vec<Entry>,
    allow_multiple_heads: bool,
    backfills: Vec<Backfill>,
}

/// What a source added to a builder.
#[derive(Debug)]
enum Entry {
    Source(Source),
    /// An entry that could not be read, or a Rust-coded revision that is invalid.
    Failed(Error),
}

/// A revision of a set, as given: built already, or a file not parsed yet.
#[derive(Debug, Clone)]
enum Source {
    /// A Rust-coded revision.
    Revision(Box<Revision>),
    File(File),
}

/// A revision file read but not parsed.
#[derive(Clone)]
struct File {
    /// The path errors name; its stem is the id.
    path: Cow<'static, str>,
    bytes: Cow<'static, [u8]>,
    /// The checksum, when the source computed it already (`embed_migrations!`).
    checksum: Option<Checksum>,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File").field("path", &self.path).field("len", &self.bytes.len()).finish()
    }
}

impl Source {
    fn revision(&self) -> Result<Revision, Error> {
        match self {
            Source::Revision(r) => Ok((**r).clone()),
            Source::File(f) => parse::parse(&f.path, &f.bytes),
        }
    }

    /// The id and checksum the parsed revision would have, without parsing
    /// it; `None` for a file whose name is no revision id. (A file that is
    /// not UTF-8 gets a checksum no loaded file has, so it never matches.)
    fn fingerprint(&self) -> Option<(Cow<'_, str>, Checksum)> {
        match self {
            Source::Revision(r) => Some((Cow::Borrowed(r.id.as_str()), r.checksum)),
            Source::File(f) => {
                let id = parse::file_id(&f.path).ok()?;
                let checksum = f.checksum.unwrap_or_else(|| Checksum::of_sql_bytes(&f.bytes));
                Some((Cow::Owned(id.as_str().to_owned()), checksum))
            }
        }
    }
}

/// The fingerprint of the set these sources build, computed from the files'
/// ids and whole-file checksums without parsing them: the graph's digest of
/// the same revisions (see `Graph::digest`). `None` when a file's name is
/// no revision id or two sources give the same id: such a set never builds,
/// and only building it reports why.
fn fingerprint_of(sources: &[Source]) -> Option<(String, HashSet<String>)> {
    let mut digest = SetDigest::default();
    let mut seen = HashSet::with_capacity(sources.len());
    for source in sources {
        let (id, checksum) = source.fingerprint()?;
        digest.add(&id, &checksum.to_hex());
        if !seen.insert(id.into_owned()) {
            return None;
        }
    }
    Some((digest.to_string(), seen))
}

/// Parses the sources and builds the graph; every source that does not
/// parse is an error, in order.
fn build_set(
    revisions: Vec<Revision>,
    allow_multiple_heads: bool,
    backfills: Vec<Backfill>,
) -> Result<MigrationSet, Error> {
    let ids = revisions.iter().map(|r| r.id.as_str()).collect();
    let attached = crate::backfill::decl::validate(&backfills, &ids)?;
    let graph = Graph::build_with_backfills(revisions, allow_multiple_heads, &attached)?;
    let digest = graph.digest();
    Ok(MigrationSet { graph, digest, backfills })
}

impl SetBuilder {
    /// Adds the `*.sql` files of an embedded directory. As for [`dir`](SetBuilder::dir),
    /// an entry named like a revision file that is not one is an error.
    pub fn embedded(mut self, dir: &include_dir::Dir<'_>) -> Self {
        let looks = |p: &Path| p.file_name().and_then(|n| fs::looks_like_revision(n.as_encoded_bytes()));
        for sub in dir.dirs().filter(|d| looks(d.path()).is_some()) {
            self.push(Err(not_a_file(sub.path(), fs::Unreadable::Directory.problem())));
        }
        let mut files: Vec<_> = dir.files().filter_map(|f| looks(f.path()).map(|l| (f, l))).collect();
        files.sort_by_key(|(f, _)| f.path());
        for (f, looks) in files {
            match looks {
                fs::Looks::UpperCase => {
                    self.push(Err(not_a_file(f.path(), fs::Unreadable::UpperCase.problem())))
                }
                fs::Looks::Revision => self.push_file(
                    f.path().to_string_lossy().into_owned().into(),
                    f.contents().to_vec().into(),
                    None,
                ),
            }
        }
        self
    }

    /// Adds the `*.sql` files of a directory on disk. Every entry named like a
    /// revision file is loaded or reported: a name with another case of
    /// `.sql`, a directory, a dangling symlink or a symlink loop is an error,
    /// never skipped. Hidden entries (names starting with `.`) are ignored.
    pub fn dir(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let entries = match fs::read_revisions(path) {
            Ok(e) => e,
            Err(e) => {
                self.push(Err(io_error(path, e)));
                return self;
            }
        };
        for (f, read) in entries {
            match read {
                Ok(bytes) => self.push_file(f.to_string_lossy().into_owned().into(), bytes.into(), None),
                Err(fs::Unreadable::Io(e)) => self.push(Err(io_error(&f, e))),
                Err(other) => self.push(Err(not_a_file(&f, other.problem()))),
            }
        }
        self
    }

    /// Adds one revision file from memory: `path` names it in errors, and its
    /// stem is the id.
    ///
    /// ```
    /// let set = pgskein::MigrationSet::builder()
    ///     .file("0001_init.sql", b"-- pgskein: up\nCREATE TABLE t (id int);\n")
    ///     .build()?;
    /// assert_eq!(set.len(), 1);
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn file(mut self, path: &str, contents: &[u8]) -> Self {
        self.push_file(path.to_owned().into(), contents.to_vec().into(), None);
        self
    }

    /// Adds a Rust-coded revision.
    pub fn rust(mut self, revision: crate::rust::RustRevision) -> Self {
        self.push(rust_revision(revision));
        self
    }

    /// Allows the graph to have several heads (default: an error, since
    /// `head` is then ambiguous and the branches were probably meant to be merged).
    pub fn allow_multiple_heads(mut self, allow: bool) -> Self {
        self.allow_multiple_heads = allow;
        self
    }

    /// Declares a [`Backfill`]: a batched data change that becomes eligible once
    /// its revision is applied. A revision may list the backfill's name in
    /// `-- pgskein: depends-on`; it is then not applied until the backfill is done.
    ///
    /// ```
    /// use pgskein::backfill::Backfill;
    /// use pgskein::MigrationSet;
    /// let set = MigrationSet::builder()
    ///     .file("0001_docs.sql", b"-- pgskein: up\nALTER TABLE documents ADD COLUMN sha256 text;\n")
    ///     .backfill(
    ///         Backfill::sql("documents_sha256", "0001_docs")
    ///             .table("documents")
    ///             .key("id")
    ///             .statement("UPDATE documents SET sha256 = encode(sha256(body::bytea), 'hex') WHERE id >= $1 AND id < $2"),
    ///     )
    ///     .build()?;
    /// assert_eq!(set.declared_backfills()[0].name(), "documents_sha256");
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn backfill(mut self, backfill: Backfill) -> Self {
        self.backfills.push(backfill);
        self
    }

    /// Parses the files and validates the graph: duplicate ids, unknown
    /// parents, cycles, several heads; and the backfills: unique names, known
    /// revisions. Returns the first error.
    pub fn build(self) -> Result<MigrationSet, Error> {
        self.build_reporting_all().map_err(|mut errors| errors.swap_remove(0))
    }

    /// [`build`](SetBuilder::build), but a set whose files do not all load
    /// returns every file's error, not only the first: for a report of all
    /// the mistakes at once (`pgskein check`). When every file loads, the
    /// graph's first error is the only one.
    ///
    /// ```
    /// let errors = pgskein::MigrationSet::builder()
    ///     .file("0001_a.sql", b"-- pgskein: upp\n")
    ///     .file("0002_b.sql", b"SELECT 1;\n")
    ///     .build_reporting_all()
    ///     .unwrap_err();
    /// assert_eq!(errors.len(), 2);
    /// ```
    pub fn build_reporting_all(self) -> Result<MigrationSet, Vec<Error>> {
        let mut revisions = Vec::with_capacity(self.entries.len());
        let mut errors = Vec::new();
        for entry in self.entries {
            let revision = match entry {
                Entry::Source(Source::Revision(r)) => Ok(*r),
                Entry::Source(source) => source.revision(),
                Entry::Failed(e) => Err(e),
            };
            match revision {
                Ok(r) => revisions.push(r),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        build_set(revisions, self.allow_multiple_heads, self.backfills).map_err(|e| vec![e])
    }

    /// A set that is parsed and validated only when first needed: see
    /// [`LazySet`]. What could not be read (a missing directory, an
    /// unreadable file, an invalid Rust-coded revision) is an error now;
    /// what does not parse, and the graph's errors, when the set is built.
    ///
    /// ```
    /// use pgskein::Migrator;
    ///
    /// let migrations = pgskein::MigrationSet::builder().dir("migrations").lazy()?;
    /// assert!(migrations.known_fingerprint().is_some());
    /// assert_eq!(migrations.set()?.len(), 10);
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn lazy(self) -> Result<LazySet, Error> {
        let mut sources = Vec::with_capacity(self.entries.len());
        for entry in self.entries {
            match entry {
                Entry::Source(s) => sources.push(s),
                Entry::Failed(e) => return Err(e),
            }
        }
        let fingerprint = fingerprint_of(&sources).map(|(fingerprint, ids)| {
            // The declarations are checked now, as a built set's are: they
            // need the revisions' ids only, which the files' names give.
            crate::backfill::decl::validate(&self.backfills, &ids.iter().map(String::as_str).collect())
                .map(|_| fingerprint)
        });
        let fingerprint = fingerprint.transpose()?;
        Ok(LazySet {
            sources,
            allow_multiple_heads: self.allow_multiple_heads,
            backfills: self.backfills,
            fingerprint,
            set: OnceLock::new(),
        })
    }

    fn push(&mut self, r: Result<Revision, Error>) {
        self.entries.push(match r {
            Ok(r) => Entry::Source(Source::Revision(Box::new(r))),
            Err(e) => Entry::Failed(e),
        });
    }

    fn push_file(&mut self, path: Cow<'static, str>, bytes: Cow<'static, [u8]>, checksum: Option<Checksum>) {
        self.entries.push(Entry::Source(Source::File(File { path, bytes, checksum })));
    }
}

/// A migration set checked when first needed, from [`SetBuilder::lazy`].
///
/// It holds the files unparsed and knows the set's
/// [fingerprint](MigrationSet::fingerprint) from their ids and bytes alone, so
/// a run on a database at head compares it with the database's in one query
/// and returns without parsing anything. When a run has work to do, or
/// anything else needs the revisions ([`set`](LazySet::set), `status`,
/// `plan`, ...), the files are parsed and the graph validated, once; the set
/// is kept.
///
/// A file that no longer parses therefore goes unnoticed while the database
/// holds exactly these files (they were valid when applied: this happens only
/// when a newer pgskein is stricter), and is reported by the first run that
/// has work and by `pgskein check`. Likewise a set with several heads applied
/// with [`allow_multiple_heads`](SetBuilder::allow_multiple_heads) is not
/// refused again at head.
///
/// ```no_run
/// use pgskein::backfill::Backfill;
/// use pgskein::{MigrationSet, Migrator};
///
/// # async fn start(pool: deadpool_postgres::Pool) -> Result<(), pgskein::Error> {
/// let migrations = MigrationSet::builder()
///     .dir("/srv/app/migrations")
///     .backfill(
///         Backfill::sql("documents_sha256_fill", "0003_enhance_documents")
///             .table("documents")
///             .key("id")
///             .statement("UPDATE documents SET sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex') WHERE id >= $1 AND id < $2"),
///     )
///     .lazy()?;
/// migrations.run(&pool).await?;
/// # Ok(()) }
/// ```
pub struct LazySet {
    sources: Vec<Source>,
    allow_multiple_heads: bool,
    backfills: Vec<Backfill>,
    fingerprint: Option<String>,
    set: OnceLock<MigrationSet>,
}

impl LazySet {
    /// The validated set: the files are parsed and the graph built on the
    /// first call, which reports the first error; the set is then kept.
    pub fn set(&self) -> Result<&MigrationSet, Error> {
        if let Some(set) = self.set.get() {
            return Ok(set);
        }
        let revisions = self.sources.iter().map(Source::revision).collect::<Result<Vec<_>, _>>()?;
        let set = build_set(revisions, self.allow_multiple_heads, self.backfills.clone())?;
        Ok(self.set.get_or_init(|| set))
    }

    /// The number of revisions given (files and Rust-coded revisions).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no revision was given.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

impl std::fmt::Debug for LazySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySet")
            .field("revisions", &self.sources.len())
            .field("fingerprint", &self.fingerprint)
            .field("built", &self.set.get().is_some())
            .finish()
    }
}

impl LazySet {
    /// The set's fingerprint when it is known without building the set.
    pub(crate) fn fingerprint_if_known(&self) -> Option<&str> {
        match self.set.get() {
            Some(set) => Some(set.fingerprint()),
            None => self.fingerprint.as_deref(),
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

fn not_a_file(path: &Path, problem: &'static str) -> Error {
    Error::Parse {
        path: path.to_string_lossy().into_owned(),
        line: None,
        kind: crate::error::ParseErrorKind::NotARevisionFile(problem),
    }
}

/// Validates a Rust-coded revision's ids and makes its graph node. Its
/// checksum is derived from its id and version string.
fn rust_revision(r: crate::rust::RustRevision) -> Result<Revision, Error> {
    let bad = |reason: String| Error::Parse {
        path: r.origin.clone(),
        line: None,
        kind: crate::error::ParseErrorKind::BadFileName(reason),
    };
    let id = RevisionId::new(r.id.clone()).map_err(bad)?;
    let ids =
        |list: &[String]| list.iter().map(|s| RevisionId::new(s.clone())).collect::<Result<Vec<_>, _>>();
    let revises = ids(&r.revises).map_err(bad)?;
    let depends_on = ids(&r.depends_on).map_err(bad)?;
    Ok(Revision {
        checksum: crate::id::Checksum::of_bytes(format!("rust\n{}\n{}", r.id, r.version).as_bytes()),
        id,
        revises,
        depends_on,
        branch: r.branch,
        message: r.message,
        release: None,
        tx: r.tx,
        up: crate::migration::Body::Rust(r.up),
        up_line: 0,
        down: r.down.map(crate::migration::Body::Rust),
        down_line: 0,
        verify: None,
        origin: r.origin,
        lock_timeout: None,
        statement_timeout: None,
        repeatable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Migrator;

    fn root() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn noop() -> crate::rust::RustRevision {
        crate::rust::RustRevision::from_fn("0011_rust", "2", |_| Box::pin(async { Ok(()) }))
            .revises(["0010_audit_log"])
    }

    #[test]
    fn the_fingerprint_of_unparsed_files_is_the_built_sets() {
        for dir in ["migrations", "tests/fixtures/embed_tricky", "tests/fixtures/linear"] {
            let lazy = MigrationSet::builder().dir(root().join(dir)).lazy().unwrap();
            let built = MigrationSet::builder().dir(root().join(dir)).build().unwrap();
            assert_eq!(lazy.known_fingerprint(), Some(built.fingerprint()), "{dir}");
        }
    }

    #[test]
    fn the_fingerprint_covers_rust_revisions_and_crlf_and_bom_as_the_checksum_does() {
        let lazy = MigrationSet::builder().dir(root().join("migrations")).rust(noop()).lazy().unwrap();
        let built = MigrationSet::builder().dir(root().join("migrations")).rust(noop()).build().unwrap();
        assert_eq!(lazy.known_fingerprint(), Some(built.fingerprint()));

        let unix = MigrationSet::builder().file("0001_a.sql", b"-- pgskein: up\nSELECT 1;\n").lazy().unwrap();
        let windows = MigrationSet::builder()
            .file("0001_a.sql", b"\xef\xbb\xbf-- pgskein: up\r\nSELECT 1;\r\n")
            .lazy()
            .unwrap();
        assert_eq!(unix.known_fingerprint(), windows.known_fingerprint());
        assert_eq!(unix.known_fingerprint(), Some(windows.set().unwrap().fingerprint()));
    }

    #[test]
    fn a_lazy_set_parses_nothing_until_it_is_asked_for_the_set() {
        let lazy = MigrationSet::builder()
            .file("0001_a.sql", b"-- pgskein: up\nSELECT 1;\n")
            .file("0002_b.sql", b"-- pgskein: revises 0001_a\n-- pgskein: upp\nSELECT 2;\n")
            .lazy()
            .expect("nothing is parsed yet");
        assert!(lazy.known_fingerprint().is_some());
        assert_eq!(lazy.len(), 2);
        let e = lazy.set().unwrap_err();
        assert!(matches!(&e, Error::Parse { path, line: Some(2), .. } if path == "0002_b.sql"), "{e}");
        // Asked again, it says the same: nothing half-built was kept.
        assert!(matches!(lazy.set().unwrap_err(), Error::Parse { .. }));
    }

    #[test]
    fn what_cannot_be_read_is_an_error_of_lazy_itself() {
        let e = MigrationSet::builder().dir(root().join("no/such/dir")).lazy().unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    #[test]
    fn a_set_that_cannot_build_has_no_fingerprint_to_compare() {
        let bad_name = MigrationSet::builder().file("0001 a.sql", b"-- pgskein: up\nSELECT 1;\n");
        assert_eq!(bad_name.lazy().unwrap().known_fingerprint(), None);
        let twice = MigrationSet::builder()
            .file("a/0001_a.sql", b"-- pgskein: up\nSELECT 1;\n")
            .file("b/0001_a.sql", b"-- pgskein: up\nSELECT 1;\n");
        let twice = twice.lazy().unwrap();
        assert_eq!(twice.known_fingerprint(), None);
        assert!(matches!(twice.set().unwrap_err(), Error::DuplicateRevision { .. }));
    }

    #[test]
    fn build_reports_every_file_in_the_order_added() {
        let errors = MigrationSet::builder()
            .file("0001_a.sql", b"-- pgskein: upp\n")
            .dir(root().join("no/such/dir"))
            .file("0002_b.sql", b"SELECT 1;\n")
            .build_reporting_all()
            .unwrap_err();
        let kinds: Vec<&str> = errors
            .iter()
            .map(|e| match e {
                Error::Parse { path, .. } if path == "0001_a.sql" => "first",
                Error::Io { .. } => "dir",
                Error::Parse { path, .. } if path == "0002_b.sql" => "last",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["first", "dir", "last"]);
    }
}
