//! `embed_migrations!("dir")`: reads the directory at compile time with the
//! runtime's parser and expands to a `pgskein::Embedded` holding each file's
//! bytes (through `include_bytes!`, so an edited file rebuilds the crate),
//! its checksum and the set digest. Every file that does not load becomes a
//! compile error with its message, which names the file and line.

use std::path::PathBuf;

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::LitStr;

use crate::digest::SetDigest;
use crate::{fs, parse};

/// The directory when the macro is given none, as at run time.
const DEFAULT_DIR: &str = "migrations";

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let dir =
        if input.is_empty() { LitStr::new(DEFAULT_DIR, Span::call_site()) } else { syn::parse2(input)? };
    expansion(&dir)
}

/// The `pgskein::Embedded` expression for the directory `dir` names,
/// relative to the crate's manifest directory.
pub(crate) fn expansion(dir: &LitStr) -> syn::Result<TokenStream> {
    let span = dir.span();
    let relative = dir.value();
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| syn::Error::new(span, "CARGO_MANIFEST_DIR is not set; build the crate with cargo"))?;
    let absolute = root.join(&relative);
    let files = fs::read_revisions(&absolute).map_err(|e| {
        syn::Error::new(
            span,
            format!("cannot read the migration directory {relative:?} ({}): {e}", absolute.display()),
        )
    })?;

    let shown = relative.trim_end_matches(['/', '\\']);
    let mut errors: Option<syn::Error> = None;
    let mut digest = SetDigest::default();
    let mut entries = Vec::new();
    for (path, read) in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let origin = if shown.is_empty() { name.clone() } else { format!("{shown}/{name}") };
        let loaded = read
            .map_err(|why| format!("{origin}: {why}"))
            .and_then(|bytes| parse::parse(&origin, &bytes).map_err(|e| e.to_string()));
        let revision = match loaded {
            Ok(r) => r,
            Err(message) => {
                let e = syn::Error::new(span, message);
                match &mut errors {
                    Some(all) => all.combine(e),
                    None => errors = Some(e),
                }
                continue;
            }
        };
        let Some(include) = path.to_str() else {
            return Err(syn::Error::new(
                span,
                format!("{origin}: the path is not UTF-8; rename the directory"),
            ));
        };
        let id = revision.id.as_str();
        digest.add(id, &revision.checksum.to_hex());
        let checksum = revision.checksum.as_bytes().iter();
        entries.push(quote! {
            ::pgskein::EmbeddedFile::__new(#origin, #id, [#(#checksum),*], ::core::include_bytes!(#include))
        });
    }
    if let Some(errors) = errors {
        return Err(errors);
    }
    let digest = digest.to_string();
    let source = absolute
        .to_str()
        .map(|s| quote!(::core::option::Option::Some(#s)))
        .unwrap_or_else(|| quote!(::core::option::Option::None));
    Ok(quote! {{
        const FILES: &[::pgskein::EmbeddedFile] = &[#(#entries),*];
        // The directory on disk, for the debug-build check that the embedded
        // files are still the ones there; release builds do not keep it.
        const SOURCE: ::core::option::Option<&str> =
            if ::core::cfg!(debug_assertions) { #source } else { ::core::option::Option::None };
        // Shared by every copy of the value: the set, parsed on first use.
        static STATE: ::pgskein::EmbeddedState = ::pgskein::EmbeddedState::new();
        ::pgskein::Embedded::__new(FILES, #digest, SOURCE, &STATE)
    }})
}
