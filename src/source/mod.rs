//! Where revisions come from: a directory embedded at compile time by
//! `embed_migrations!` (checked there by this same parser), one bundled with
//! include_dir, or the same directory read at run time. All hand (path,
//! bytes) pairs to the one parser in `parse`, then to the graph builder.

#[cfg(feature = "macros")]
mod embedded;
pub(crate) mod fs;
pub(crate) mod parse;
pub(crate) mod parse_error;

#[cfg(feature = "macros")]
pub use embedded::{Embedded, EmbeddedFile};

use std::path::Path;

use crate::backfill::Backfill;
use crate::error::Error;
use crate::graph::Graph;
use crate::id::RevisionId;
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

    /// The backfills declared with [`SetBuilder::backfill`], in declaration order.
    pub fn backfills(&self) -> &[Backfill] {
        &self.backfills
    }

    /// A builder holding what this set has besides its SQL files: its
    /// Rust-coded revisions and its backfills. The CLI's `--dir` adds the
    /// directory's files to it, so a service's commands over the source tree
    /// keep the service's own revisions and backfills.
    pub(crate) fn without_files(&self) -> SetBuilder {
        SetBuilder {
            revisions: self.revisions().filter(|r| matches!(r.up, Body::Rust(_))).cloned().collect(),
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

/// Collects sources for a [`MigrationSet`]. Errors are reported by [`build`](SetBuilder::build).
#[derive(Debug, Default)]
pub struct SetBuilder {
    revisions: Vec<Revision>,
    /// Every file that did not load, in the order the sources were added.
    errors: Vec<Error>,
    allow_multiple_heads: bool,
    backfills: Vec<Backfill>,
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
            let parsed = match looks {
                fs::Looks::UpperCase => Err(not_a_file(f.path(), fs::Unreadable::UpperCase.problem())),
                fs::Looks::Revision => parse::parse(&f.path().to_string_lossy(), f.contents()),
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
        let entries = match fs::read_revisions(path) {
            Ok(e) => e,
            Err(e) => {
                self.push(Err(io_error(path, e)));
                return self;
            }
        };
        for (f, read) in entries {
            let parsed = match read {
                Ok(bytes) => parse::parse(&f.to_string_lossy(), &bytes),
                Err(fs::Unreadable::Io(e)) => Err(io_error(&f, e)),
                Err(other) => Err(not_a_file(&f, other.problem())),
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
    pub fn build(mut self) -> Result<MigrationSet, Error> {
        if !self.errors.is_empty() {
            return Err(self.errors.swap_remove(0));
        }
        self.build_graph()
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
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        self.build_graph().map_err(|e| vec![e])
    }

    fn build_graph(self) -> Result<MigrationSet, Error> {
        let attached = crate::backfill::validate(&self.backfills, &self.revisions)?;
        let graph = Graph::build_with_backfills(self.revisions, self.allow_multiple_heads, &attached)?;
        let digest = graph.digest();
        Ok(MigrationSet { graph, digest, backfills: self.backfills })
    }

    fn push(&mut self, r: Result<Revision, Error>) {
        match r {
            Ok(r) => self.revisions.push(r),
            Err(e) => self.errors.push(e),
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
fn rust_revision(r: crate::RustRevision) -> Result<Revision, Error> {
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
