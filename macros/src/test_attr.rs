//! `#[pgskein::test]`: wraps an async test taking one argument (a pool, a
//! client or a `MigratedDatabase`) in a plain `#[test]` that builds a runtime,
//! clones a database at head from the migration set's template, hands the
//! test its argument, and keeps the database when the test fails. The work is
//! done by `pgskein::testing::__private::run_test`; the attribute only
//! rewrites the signature and picks the migrations.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::{Expr, FnArg, ItemFn, LitStr};

/// Where the test's migrations come from.
enum Source {
    /// `migrations = "dir"` (or nothing: `migrations`), embedded at compile time.
    Dir(LitStr),
    /// `migrations = SOME_STATIC`: an `Embedded`, a `MigrationSet` or any `Migrator`.
    Value(Expr),
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut source = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("migrations") {
            if source.is_some() {
                return Err(meta.error("`migrations` is given twice"));
            }
            let value: Expr = meta.value()?.parse()?;
            source = Some(match value {
                Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(dir), .. }) => Source::Dir(dir),
                other => Source::Value(other),
            });
            Ok(())
        } else {
            Err(meta.error(
                "unknown argument; write `#[pgskein::test]`, `#[pgskein::test(migrations = \"dir\")]` \
                 or `#[pgskein::test(migrations = path::TO_STATIC)]`",
            ))
        }
    });
    parser.parse2(args)?;
    let source =
        source.unwrap_or_else(|| Source::Dir(LitStr::new("migrations", proc_macro2::Span::call_site())));

    let function: ItemFn = syn::parse2(item)?;
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(sig.fn_token, "a #[pgskein::test] function must be `async fn`"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(&sig.generics, "a #[pgskein::test] function cannot be generic"));
    }
    let argument = match (sig.inputs.len(), sig.inputs.first()) {
        (1, Some(FnArg::Typed(argument))) => argument,
        _ => {
            return Err(syn::Error::new_spanned(
                &sig.inputs,
                "a #[pgskein::test] function takes one argument: a `deadpool_postgres::Pool`, \
                 a `tokio_postgres::Client` or a `pgskein::testing::MigratedDatabase`",
            ));
        }
    };

    let attrs = &function.attrs;
    let vis = &function.vis;
    let name = &sig.ident;
    let output = &sig.output;
    let body = &function.block;
    let inner = format_ident!("__pgskein_test_{}", name);
    let (prelude, migrations) = match source {
        Source::Dir(dir) => {
            let embedded = crate::embed::expansion(&dir)?;
            (quote!(static MIGRATIONS: ::pgskein::Embedded = #embedded;), quote!(&MIGRATIONS))
        }
        Source::Value(value) => (quote!(), quote!(&#value)),
    };
    Ok(quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() #output {
            #prelude
            async fn #inner(#argument) #output #body
            ::pgskein::testing::__private::run_test(#migrations, ::core::module_path!(), ::core::stringify!(#name), #inner)
        }
    })
}
