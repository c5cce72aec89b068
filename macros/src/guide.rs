//! `__guide_page!("docs/x.md")`: a page of pgskein's guide as a doc string,
//! with what works on a repository host rewritten for rustdoc. Links to
//! sibling pages (`graph.md#targets`) become intra-doc links to their module
//! (`crate::guide::graph#targets`), links into the source tree (`../src/hooks.rs`)
//! point at the published source, and code blocks, which are fragments, are
//! shown but not run as doctests.

use proc_macro2::TokenStream;
use quote::quote;
use syn::LitStr;

/// Where the published package's files are shown.
const SOURCE: &str = "https://docs.rs/crate/pgskein/latest/source/";

pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let page: LitStr = syn::parse2(input)?;
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from).ok_or_else(|| {
        syn::Error::new(page.span(), "CARGO_MANIFEST_DIR is not set; build the crate with cargo")
    })?;
    let path = root.join(page.value());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| syn::Error::new(page.span(), format!("cannot read {}: {e}", path.display())))?;
    let doc = rewrite(&text);
    Ok(quote!(#doc))
}

fn rewrite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut fence: Option<String> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.trim_end() == open {
                fence = None;
            }
            out.push_str(line);
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = &line[..line.len() - trimmed.len()];
            fence = Some("```".to_owned());
            let info = info.trim();
            // Untagged and `rust` blocks would be doctests; the guide's are fragments.
            let info = match info {
                "" => "text",
                "rust" => "rust,ignore",
                other => other,
            };
            out.push_str(&format!("{indent}```{info}\n"));
            continue;
        }
        out.push_str(&links(line));
    }
    out
}

/// Rewrites the targets of `](target)` links on one line of prose.
fn links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        out.push_str(&rest[..start + 2]);
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        out.push_str(&target(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn target(link: &str) -> String {
    if link.contains("://") || link.starts_with('#') || link.starts_with("mailto:") {
        return link.to_owned();
    }
    if let Some(file) = link.strip_prefix("../") {
        return format!("{SOURCE}{file}");
    }
    let (file, anchor) = link.split_once('#').map_or((link, None), |(f, a)| (f, Some(a)));
    match file.strip_suffix(".md") {
        Some(page) if !page.contains('/') => {
            let module = page.replace('-', "_");
            match anchor {
                Some(anchor) => format!("crate::guide::{module}#{anchor}"),
                None => format!("crate::guide::{module}"),
            }
        }
        _ => link.to_owned(),
    }
}
