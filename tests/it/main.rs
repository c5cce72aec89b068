//! pgskein's integration tests: one binary, one database per test, all against a
//! real PostgreSQL (DATABASE_URL, or a throwaway server started from the
//! machine's binaries).

mod cancel;
mod common;
mod concurrency;
mod drift;
mod example;
mod failures;
mod hooks;
mod lock_timeouts;
mod locking;
mod offline;
mod operations;
mod preflight;
mod repeatable;
mod rust_revisions;
