//! The two errors the shared parser returns, as the macro sees them.
//!
//! The parser (`parse.rs`) builds `crate::error::Error::Parse` and
//! `Error::NeedsNoTransaction`; pgskein's `Error` has many more variants that
//! need the database and the runtime, which a proc macro cannot carry. So this
//! module gives the parser the same two variants with the same messages, and
//! `ParseErrorKind` below is pgskein's, item for item: the test
//! `embed::macro_error_kinds_are_the_runtime_ones` compares the two enums'
//! text, and `embed::compile_errors_read_as_the_runtime_errors` the messages.

/// A load error of one file, with pgskein's message for it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A revision file is malformed.
    #[error("{path}{}: {kind}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: String,
        /// The 1-based line, when the problem has one.
        line: Option<usize>,
        /// What is wrong.
        kind: ParseErrorKind,
    },
    /// A transactional revision contains a statement that must run outside a
    /// transaction, or transaction control of its own.
    #[error("{path}:{line}: {operation} cannot run inside the revision's transaction; declare the revision `-- pgskein: transaction none`{}", if *control { " (it then runs statement by statement, as psql runs the file)" } else { "" })]
    NeedsNoTransaction {
        /// The file.
        path: String,
        /// The statement's line.
        line: usize,
        /// The offending operation, e.g. `CREATE INDEX CONCURRENTLY` or `COMMIT`.
        operation: &'static str,
        /// Whether the operation is transaction control (`BEGIN`, `COMMIT`, ...).
        control: bool,
    },
}

/// What is wrong in a revision file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The file is not UTF-8.
    #[error("the file is not valid UTF-8 (first bad byte at offset {offset}); save it as UTF-8")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The file is empty.
    #[error("the file is empty; a revision needs at least a `-- pgskein: up` line")]
    Empty,
    /// The file name is not a valid revision id.
    #[error("bad file name: {0}")]
    BadFileName(String),
    /// There is no `-- pgskein: up` section.
    #[error("no `-- pgskein: up` section; put the migration's SQL after a `-- pgskein: up` line")]
    MissingUp,
    /// A directive pgskein does not know.
    #[error(
        "unknown directive `{0}`; known: revises, depends-on, branch, transaction, message, release, repeatable, lock-timeout, statement-timeout, up, down, verify"
    )]
    UnknownDirective(String),
    /// A directive that may appear once appears again.
    #[error("directive `{0}` appears more than once")]
    DuplicateDirective(String),
    /// A header directive after the sections started.
    #[error("directive `{0}` must come before `-- pgskein: up`")]
    DirectiveAfterUp(String),
    /// SQL in the header, before `-- pgskein: up`.
    #[error("SQL before `-- pgskein: up`; only `--` comments and directives may precede it")]
    SqlBeforeUp,
    /// A header comment that looks like a directive but is not one.
    #[error(
        "this looks like a directive but is not one; write `-- pgskein: <directive> <value>` (with the colon)"
    )]
    MalformedDirective,
    /// A section marker appears out of order.
    #[error("section `{0}` must come after `-- pgskein: up`")]
    SectionBeforeUp(String),
    /// A directive value is invalid.
    #[error("invalid value for `{directive}`: {reason}")]
    BadValue {
        /// The directive.
        directive: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// A revision revises itself.
    #[error("the revision lists itself in `{0}`")]
    SelfReference(&'static str),
}
