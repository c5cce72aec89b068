//! A helper for the build script of a crate that embeds its migrations.
//!
//! A build script needs no pgskein to do this: one line of std does it,
//! without building pgskein's dependencies a second time for the build script:
//!
//! ```no_run
//! fn main() {
//!     println!("cargo:rerun-if-changed=migrations");
//! }
//! ```

/// Tells cargo to rebuild the crate when anything under `dir` changes.
///
/// Neither `include_dir!` nor [`embed_migrations!`](crate::embed_migrations)
/// can make cargo watch a directory, so without this a new migration file is
/// not embedded until something else triggers a rebuild. Prefer the std line
/// in the module documentation; this function only prints it.
///
/// ```no_run
/// pgskein::build::rerun_if_changed("migrations");
/// ```
pub fn rerun_if_changed(dir: &str) {
    println!("cargo:rerun-if-changed={dir}");
}
