//! The compile-time macros of [pgskein](https://docs.rs/pgskein):
//! `embed_migrations!` and `#[pgskein::test]`. Use them through pgskein
//! (`pgskein::embed_migrations!`, `#[pgskein::test]`), which documents them;
//! the code they generate names pgskein's types.
//!
//! One parser: `id.rs`, `split.rs`, `migration.rs`, `parse.rs` and `fs.rs` here are
//! pgskein's own files (symbolic links in the repository, copied into the
//! published package), so a file is accepted or refused at compile time by
//! the very code that reads it at run time. `error.rs` gives that code the two
//! error variants it returns, and `digest.rs` the set digest; tests in
//! pgskein compare both with the runtime's.

// The shared files carry pgskein's unit tests, which need pgskein (and its
// dev-dependencies) and run there; a test build of this crate is empty.
#![cfg(not(test))]

use proc_macro::TokenStream;

#[allow(dead_code)]
mod digest;
mod embed;
mod error;
mod fs;
mod guide;
// `Checksum::to_hex(&self)` is public API in pgskein, where clippy keeps it.
#[allow(dead_code, unused_imports, clippy::wrong_self_convention)]
mod id;
#[allow(dead_code, unused_imports)]
mod migration;
#[allow(dead_code, unused_imports)]
mod parse;
#[allow(dead_code)]
mod parse_error;
#[allow(dead_code, unused_imports)]
mod split;
mod test_attr;

/// What `migration.rs` needs of pgskein's Rust revisions: only the name of
/// the type a Rust body holds, since the macro never builds one.
mod rust {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct RustCode;
}

/// Embeds a directory of revision files; see `pgskein::embed_migrations!`.
#[proc_macro]
pub fn embed_migrations(input: TokenStream) -> TokenStream {
    embed::expand(input.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Runs an async test against a database at head; see `pgskein::test`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::expand(args.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// A page of pgskein's guide, as a doc string for its `guide` module.
#[doc(hidden)]
#[proc_macro]
pub fn __guide_page(input: TokenStream) -> TokenStream {
    guide::expand(input.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}
