//! pgskein's integration tests: one binary, one database per test, all against a
//! real PostgreSQL (DATABASE_URL, or a throwaway server started from the
//! machine's binaries).

mod backfill;
mod bad_inputs;
mod cancel;
mod cli;
mod cli_embedded;
mod cli_operator;
mod cli_ops;
mod common;
mod concurrency;
mod crash;
mod drift;
mod embed;
mod example;
mod failures;
mod fast_start;
mod hooks;
mod hostile;
mod layers;
mod lease;
mod lock_timeouts;
mod locking;
mod offline;
mod operations;
mod pgbouncer;
mod preflight;
mod props;
mod repeatable;
mod restart;
mod round_trips;
mod rust_revisions;
mod secrets;
mod test_attribute;
mod testing_databases;
mod testing_example;
mod testing_reversible;
mod testing_snapshot;
mod tls;
