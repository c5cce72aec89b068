//! What is wrong in a revision file: the kinds of load errors the parser
//! reports. A leaf, shared as it is with `embed_migrations!` (the proc-macro
//! crate links this file), so a file is refused with the same words at
//! compile time and at run time.

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
    /// The file contains a NUL byte, which PostgreSQL cannot receive.
    #[error("the file contains a NUL byte, which cannot be sent to PostgreSQL; remove it")]
    NulByte,
    /// A `transaction none` body opens a transaction and does not end it.
    #[error(
        "this BEGIN opens a transaction that the section does not end; add COMMIT (pgskein records the revision outside any transaction)"
    )]
    UnendedTransaction,
    /// Something in the migration directory is named like a revision but is not a readable file.
    #[error("{0}")]
    NotARevisionFile(&'static str),
}
