//! A helper for the build script of a crate that embeds its migrations.

/// Tells cargo to rebuild the crate when anything under `dir` changes.
///
/// `include_dir!` does not track its directory, so without this a new
/// migration file is not embedded until something else triggers a rebuild.
/// Call it from `fn main` in `build.rs`, with pgskein as a build-dependency:
///
/// ```no_run
/// pgskein::build::rerun_if_changed("migrations");
/// ```
pub fn rerun_if_changed(dir: &str) {
    println!("cargo:rerun-if-changed={dir}");
}
