//! The two errors the shared parser returns, as the macro sees them.
//!
//! The parser (`parse.rs`) builds `crate::error::Error::Parse` and
//! `Error::NeedsNoTransaction`; pgskein's `Error` has many more variants that
//! need the database and the runtime, which a proc macro cannot carry. So this
//! module gives the parser the same two variants with the same messages;
//! `ParseErrorKind` is pgskein's own file (`parse_error.rs`), and the test
//! `embed::compile_errors_read_as_the_runtime_errors` compares the messages.

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

pub(crate) use crate::parse_error::ParseErrorKind;
