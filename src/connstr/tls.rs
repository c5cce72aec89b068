//! TLS as libpq's `sslmode` means it, on rustls: which certificate checks
//! each mode makes, where the root certificates come from, the client
//! certificate, and the connection itself.
//!
//! Invariant: a mode never checks less than libpq's does. `require` checks
//! nothing unless a root certificate file is present (then, as libpq, it
//! checks the chain); `verify-ca` checks the chain but not the host name;
//! `verify-full` checks both. `prefer` and `require` without roots accept any
//! certificate, as libpq does: they protect against eavesdropping only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{ConnStr, ConnStrError, RootCert, SslMode, TlsOptions};

/// Why the TLS options cannot be put in effect. Names files and options, never secrets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A certificate or key file cannot be read.
    #[error("cannot read the {option} file {}", path.display())]
    Read {
        option: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file without what it should hold.
    #[error("the {option} file {} holds no {what} in PEM form", path.display())]
    Empty { option: &'static str, path: PathBuf, what: &'static str },
    /// A private key others can read, which libpq refuses too.
    #[error(
        "the sslkey file {} can be read by other users: make it private (chmod 600 {})",
        path.display(),
        path.display()
    )]
    KeyNotPrivate { path: PathBuf },
    /// `sslcert` without a key, or the other way round.
    #[error("{given} is set but {missing} is not: a client certificate needs both")]
    HalfClientCert { given: &'static str, missing: &'static str },
    /// The chain alone proves nothing when any public CA could have signed it.
    #[error(
        "sslmode={mode} with sslrootcert=system would accept any certificate a public CA issued: \
         use sslmode=verify-full, or set sslrootcert to the file of your server's CA"
    )]
    WeakSystemRoots { mode: SslMode },
    /// `verify-ca` with no CA file.
    #[error(
        "sslmode=verify-ca needs the CA that signed the server's certificate: \
         set sslrootcert to its file (or use sslmode=verify-full to check against the platform's roots)"
    )]
    VerifyCaWithoutRoots,
    /// No platform roots to check against.
    #[error(
        "no trusted root certificates were found on this system: install them (ca-certificates), \
         or set sslrootcert to the file of your server's CA"
    )]
    NoSystemRoots,
    /// rustls refused the certificates or key.
    #[error("the TLS configuration was refused")]
    Rustls(#[source] rustls::Error),
}

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndHost,
}

/// The root certificates a connection checks against, `None` when it checks nothing.
pub(crate) fn root_source(tls: &TlsOptions) -> Option<RootCert> {
    let default_file = || home_file("root.crt").map(RootCert::File);
    match tls.mode {
        SslMode::Disable | SslMode::Prefer => None,
        SslMode::Require | SslMode::VerifyCa => tls.root_cert.clone().or_else(default_file),
        // libpq asks for sslrootcert=system explicitly here; the platform's
        // roots are the sensible default for a managed server's public CA.
        SslMode::VerifyFull => tls.root_cert.clone().or_else(default_file).or(Some(RootCert::System)),
    }
}

/// `~/.postgresql/<name>`, libpq's default place for TLS files, if it exists.
fn home_file(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".postgresql").join(name)).filter(|p| p.is_file())
}

/// The rustls connector for `tls`'s options.
pub(crate) fn connector(tls: &TlsOptions) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = root_source(tls);
    let check = match (tls.mode, &roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Check::Nothing,
        (SslMode::Require | SslMode::VerifyCa, Some(RootCert::System)) => {
            return Err(TlsError::WeakSystemRoots { mode: tls.mode });
        }
        (SslMode::VerifyCa, None) => return Err(TlsError::VerifyCaWithoutRoots),
        (SslMode::Require | SslMode::VerifyCa, Some(_)) => Check::Chain,
        (SslMode::VerifyFull, _) => Check::ChainAndHost,
    };
    let webpki = match roots.filter(|_| check != Check::Nothing) {
        Some(source) => {
            let store = Arc::new(root_store(&source)?);
            Some(
                WebPkiServerVerifier::builder_with_provider(store, Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?,
            )
        }
        None => None,
    };
    let verifier = Verifier { check, webpki, provider: Arc::clone(&provider) };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match client_cert(tls)? {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(TlsError::Rustls)?,
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// A connector that checks no certificate and offers none: for the
/// testing helpers' connections to servers given without TLS options.
#[cfg(feature = "testing")]
pub(crate) fn unchecked_connector() -> MakeRustlsConnect {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier { check: Check::Nothing, webpki: None, provider: Arc::clone(&provider) };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

fn root_store(source: &RootCert) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match source {
        RootCert::File(path) => {
            let certs = read_certs("sslrootcert", path)?;
            for cert in certs {
                store.add(cert).map_err(TlsError::Rustls)?;
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    Ok(store)
}

fn read_certs(option: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read { option, path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(read)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Empty { option, path: path.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// `sslcert` and `sslkey`, or libpq's default files when both exist.
fn client_cert(tls: &TlsOptions) -> Result<Option<ClientCert>, TlsError> {
    let (cert, key) = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (Some(c), None) => match home_file("postgresql.key") {
            Some(k) => (c.clone(), k),
            None => return Err(TlsError::HalfClientCert { given: "sslcert", missing: "sslkey" }),
        },
        (None, Some(_)) => return Err(TlsError::HalfClientCert { given: "sslkey", missing: "sslcert" }),
        (None, None) => match (home_file("postgresql.crt"), home_file("postgresql.key")) {
            (Some(c), Some(k)) => (c, k),
            _ => return Ok(None),
        },
    };
    if tls.mode == SslMode::Disable {
        return Ok(None);
    }
    let chain = read_certs("sslcert", &cert)?;
    let read = |source| TlsError::Read { option: "sslkey", path: key.clone(), source };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&key).map_err(read)?;
        // SAFETY: geteuid has no preconditions. Keys owned by root may be
        // group-readable, as libpq allows.
        let own = meta.uid() == unsafe { libc::geteuid() };
        if (own && meta.mode() & 0o077 != 0) || (!own && meta.mode() & 0o037 != 0) {
            return Err(TlsError::KeyNotPrivate { path: key });
        }
    }
    let bytes = std::fs::read(&key).map_err(read)?;
    let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Empty {
        option: "sslkey",
        path: key.clone(),
        what: "private key",
    })?;
    Ok(Some((chain, key_der)))
}

/// Checks the server's certificate as much as the mode asks, and the
/// handshake's signatures always.
#[derive(Debug)]
struct Verifier {
    check: Check,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = self.webpki.as_ref().filter(|_| self.check != Check::Nothing) else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name only once the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects with `conn`'s TLS options; the caller drives the returned
/// connection future (spawned, or polled alongside the client).
pub(crate) async fn connect(
    conn: &ConnStr,
) -> Result<
    (tokio_postgres::Client, impl Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static),
    ConnectError,
> {
    let tls = connector(&conn.tls).map_err(|e| ConnectError::Setup(ConnStrError::Tls(e)))?;
    let (client, connection) = conn.config.connect(tls).await.map_err(ConnectError::Connect)?;
    Ok((client, connection))
}

/// Why [`connect`] failed: before trying (the TLS files), or trying.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The TLS options cannot be put in effect.
    #[error(transparent)]
    Setup(ConnStrError),
    /// tokio-postgres could not connect (its messages hold no password).
    #[error(transparent)]
    Connect(tokio_postgres::Error),
}

/// What to do about a failed connection, when its cause is a TLS one.
pub(crate) fn hint(conn: &ConnStr, err: &ConnectError) -> Option<String> {
    let ConnectError::Connect(err) = err else { return None };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        // rustls's error arrives inside an io::Error, whose source() skips it.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &dyn std::error::Error);
        let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| inner.and_then(|i| i.downcast_ref()));
        if let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error {
            return Some(match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    "the server's certificate is not signed by a CA in sslrootcert: \
                     set sslrootcert to the file of the CA that issued it"
                        .to_owned()
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    "the server's certificate does not name the host connected to: \
                     connect with a host name the certificate was issued for \
                     (hostaddr can give the address), or use sslmode=verify-ca to check the CA only"
                        .to_owned()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired: renew it on the server".to_owned()
                }
                _ => return None,
            });
        }
        if e.to_string() == "server does not support TLS" {
            return Some(format!(
                "sslmode={} needs TLS, which this server does not offer: enable ssl on the server, \
                 or use sslmode=prefer or disable on a trusted network",
                conn.tls.mode
            ));
        }
        cur = e.source();
    }
    None
}
