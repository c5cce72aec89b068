//! Migrating over TLS from a service: a deadpool-postgres pool whose
//! connections use rustls, checking the server's certificate against the
//! platform's roots and, when given, the CA of a managed database.
//!
//! ```text
//! DATABASE_URL='postgresql://app:secret@db.example.com/app?sslmode=require' \
//! DATABASE_CA=/etc/ssl/rds-global-bundle.pem \
//! cargo run --example tls_pool -- migrations
//! ```
//!
//! pgskein takes the pool (or a client) as it is: TLS is the pool's
//! business. `sslmode=require` in the URL makes tokio-postgres insist on TLS;
//! what the certificate is checked for is the rustls configuration's: this
//! one checks the chain and the host name, as libpq's `verify-full`.
//! See `docs/connections.md`.

use std::error::Error;
use std::sync::Arc;

use pgskein::{MigrationSet, Migrator};

/// A rustls client configuration that trusts the platform's roots and the
/// certificates of `ca_file`, if any.
fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, Box<dyn Error>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_file_iter(path)? {
            roots.add(cert?)?;
        }
    }
    if roots.is_empty() {
        return Err("no root certificates: install ca-certificates or set DATABASE_CA".into());
    }
    // An explicit provider, so that the choice does not depend on which
    // rustls features other crates of the program enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "migrations".to_owned());
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let ca_file = std::env::var("DATABASE_CA").ok();

    let pg_config: tokio_postgres::Config = url.parse()?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_file.as_deref())?);
    let manager = deadpool_postgres::Manager::new(pg_config, tls);
    let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build()?;

    let report = MigrationSet::from_dir(&dir)?.run(&pool).await?;
    println!("applied {} revisions", report.steps.len());
    Ok(())
}
