//! Where revisions come from: a directory bundled into the binary with
//! include_dir, or the same directory read at run time. Both hand (path,
//! bytes) pairs to the one parser in `parse`, then to the graph builder.

pub(crate) mod parse;

use std::path::Path;

use crate::backfill::Backfill;
use crate::error::Error;
use crate::graph::Graph;
use crate::id::RevisionId;
use crate::migration::Revision;

/// A validated set of revisions: the revision graph the migrator works from.
///
/// Load it from a directory bundled at compile time:
///
/// ```
/// use include_dir::{include_dir, Dir};
/// static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
///
/// let set = pgskein::MigrationSet::from_embedded(&MIGRATIONS)?;
/// assert_eq!(set.heads().len(), 1);
/// # Ok::<(), pgskein::Error>(())
/// ```
///
/// or from disk at run time with [`MigrationSet::from_dir`]. Only the `*.sql`
/// files at the top of the directory are read; other files are ignored.
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
    /// Pair it with [`build::rerun_if_changed`](crate::build::rerun_if_changed) in
    /// `build.rs`, so adding a file rebuilds the crate.
    pub fn from_embedded(dir: &include_dir::Dir<'_>) -> Result<Self, Error> {
        Self::builder().embedded(dir).build()
    }

    /// Loads the `*.sql` files of a directory on disk.
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
        crate::plan::either_way(&self.graph, &self.reconcile_ids(applied), target)
    }

    /// The offline script from a list of applied revision ids to `target`,
    /// without a database: what [`Migrator::sql`](crate::Migrator::sql) renders
    /// after reading the ledger. `schema` is the bookkeeping schema.
    pub fn render_sql<'a>(
        &self,
        applied: impl IntoIterator<Item = &'a str>,
        target: &crate::Target,
        schema: &str,
        style: crate::SqlStyle,
    ) -> Result<String, Error> {
        let rec = self.reconcile_ids(applied);
        let plan = crate::plan::either_way(&self.graph, &rec, target)?;
        crate::offline::render(self, schema, &plan, style)
    }

    fn reconcile_ids<'a>(&self, applied: impl IntoIterator<Item = &'a str>) -> crate::plan::Reconciled {
        let rows: Vec<crate::state::Record> = applied
            .into_iter()
            .map(|id| {
                let checksum = self.get(id).map(|r| r.checksum.to_hex()).unwrap_or_default();
                crate::state::Record::applied(id, checksum)
            })
            .collect();
        crate::plan::reconcile(&self.graph, &rows)
    }

    /// The backfills declared with [`SetBuilder::backfill`], in declaration order.
    pub fn backfills(&self) -> &[Backfill] {
        &self.backfills
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

/// Collects sources for a [`MigrationSet`]. Errors are reported by [`build`](SetBuilder::build).
#[derive(Debug, Default)]
pub struct SetBuilder {
    revisions: Vec<Revision>,
    error: Option<Error>,
    allow_multiple_heads: bool,
    backfills: Vec<Backfill>,
}

impl SetBuilder {
    /// Adds the `*.sql` files of an embedded directory.
    pub fn embedded(mut self, dir: &include_dir::Dir<'_>) -> Self {
        for sub in dir.dirs() {
            if let Some(kind) = looks_like_revision(sub.path()) {
                let problem = match kind {
                    Looks::Revision => "a directory named like a revision file; rename or remove it",
                    Looks::UpperCase => UPPER_CASE,
                };
                self.push(Err(not_a_file(sub.path(), problem)));
            }
        }
        let mut files: Vec<_> = dir.files().filter(|f| looks_like_revision(f.path()).is_some()).collect();
        files.sort_by_key(|f| f.path());
        for f in files {
            let parsed = match looks_like_revision(f.path()) {
                Some(Looks::UpperCase) => Err(not_a_file(f.path(), UPPER_CASE)),
                _ => parse::parse(&f.path().to_string_lossy(), f.contents()),
            };
            self.push(parsed);
        }
        self
    }

    /// Adds the `*.sql` files of a directory on disk. Every entry named like a
    /// revision file is loaded or reported: a name with another case of
    /// `.sql`, a directory, a dangling symlink or a symlink loop is an error,
    /// never skipped. Hidden entries (names starting with `.`) are ignored.
    pub fn dir(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let entries = match std::fs::read_dir(path).and_then(|rd| rd.collect::<Result<Vec<_>, _>>()) {
            Ok(e) => e,
            Err(e) => {
                self.push(Err(io_error(path, e)));
                return self;
            }
        };
        let mut files: Vec<_> = entries
            .into_iter()
            .map(|e| e.path())
            .filter_map(|p| looks_like_revision(&p).map(|kind| (p, kind)))
            .collect();
        files.sort();
        for (f, kind) in files {
            // Anything named like a revision is read or reported: never skipped in silence.
            let parsed = match (kind, std::fs::metadata(&f)) {
                (Looks::UpperCase, _) => Err(not_a_file(&f, UPPER_CASE)),
                // A dangling symlink, a symlink loop, a file we may not read.
                (_, Err(e)) => Err(io_error(&f, e)),
                (_, Ok(m)) if m.is_dir() => {
                    Err(not_a_file(&f, "a directory named like a revision file; rename or remove it"))
                }
                (_, Ok(m)) if !m.is_file() => {
                    Err(not_a_file(&f, "not a regular file (a socket, a FIFO or a device); remove it"))
                }
                (_, Ok(_)) => match f.to_str() {
                    None => Err(not_a_file(&f, "the file name is not valid UTF-8; rename it")),
                    Some(name) => {
                        std::fs::read(&f).map_err(|e| io_error(&f, e)).and_then(|b| parse::parse(name, &b))
                    }
                },
            };
            self.push(parsed);
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
        self.push(parse::parse(path, contents));
        self
    }

    /// Adds a Rust-coded revision.
    pub fn rust(mut self, revision: crate::RustRevision) -> Self {
        self.push(revision.into_revision());
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
    /// use pgskein::{Backfill, MigrationSet};
    /// let set = MigrationSet::builder()
    ///     .file("0001_docs.sql", b"-- pgskein: up\nALTER TABLE documents ADD COLUMN sha256 text;\n")
    ///     .backfill(Backfill::sql(
    ///         "documents_sha256",
    ///         "0001_docs",
    ///         "documents",
    ///         "id",
    ///         "UPDATE documents SET sha256 = encode(sha256(body::bytea), 'hex') WHERE id >= $1 AND id < $2",
    ///     ))
    ///     .build()?;
    /// assert_eq!(set.backfills()[0].name(), "documents_sha256");
    /// # Ok::<(), pgskein::Error>(())
    /// ```
    pub fn backfill(mut self, backfill: Backfill) -> Self {
        self.backfills.push(backfill);
        self
    }

    /// Validates the graph: duplicate ids, unknown parents, cycles, several
    /// heads; and the backfills: unique names, known revisions.
    pub fn build(self) -> Result<MigrationSet, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let attached = crate::backfill::validate(&self.backfills, &self.revisions)?;
        let graph = Graph::build_with_backfills(self.revisions, self.allow_multiple_heads, &attached)?;
        let digest = graph.digest();
        Ok(MigrationSet { graph, digest, backfills: self.backfills })
    }

    fn push(&mut self, r: Result<Revision, Error>) {
        match r {
            Ok(r) => self.revisions.push(r),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// How a directory entry looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Looks {
    /// `<id>.sql`: a revision file.
    Revision,
    /// `<id>.SQL` or another case of it: meant as one, but not loaded the same on every file system.
    UpperCase,
}

const UPPER_CASE: &str = "revision files end in lower-case `.sql`; rename it";

/// Whether an entry is named like a revision file. Hidden entries (editor
/// backups, lock files) are not; names that are not UTF-8 are judged by their bytes.
fn looks_like_revision(p: &Path) -> Option<Looks> {
    let name = p.file_name()?.as_encoded_bytes();
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

fn not_a_file(path: &Path, problem: &'static str) -> Error {
    Error::Parse {
        path: path.to_string_lossy().into_owned(),
        line: None,
        kind: crate::error::ParseErrorKind::NotARevisionFile(problem),
    }
}
