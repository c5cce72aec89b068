//! TLS as libpq's sslmode means it, against a private server with `ssl=on`
//! and certificates made here: through the `pgskein` binary and through the
//! testing helpers.

use std::path::{Path, PathBuf};

use pgskein::testing::{ServerOptions, TestServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::cli::{Out, run_url};
use crate::common::{chain, fixture_dir};

/// A certificate authority of the test's own.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate (PEM) and its key (PEM) for `names`, as a server or a client.
    fn issue(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory of files for one test, removed with it; readable by the
/// server's user (the server reads `ssl_ca_file` from it).
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("pgskein-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        Files(dir)
    }

    fn write(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        set_mode(&path, mode);
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A private server that accepts TLS connections only, its certificate
/// issued by `ca` for `localhost`.
fn tls_only_server(ca: &Ca, extra: ServerOptions) -> TestServer {
    let (cert, key) = ca.issue("localhost", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    TestServer::start_private_with(extra.tls(cert, key).hba("hostnossl all all 127.0.0.1/32 reject"))
        .expect("a private server with TLS")
}

/// A URL for `host` (the name TLS checks) reaching the server at 127.0.0.1.
fn url(server: &TestServer, host: &str, params: &str) -> String {
    let port = server.tcp_port().unwrap();
    format!("postgresql://postgres@{host}:{port}/postgres?hostaddr=127.0.0.1&{params}")
}

async fn status(url: &str) -> Out {
    run_url(Some(url), &fixture_dir("linear"), &["status"]).await
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn the_cli_follows_sslmode_as_libpq_does() {
    let ca = Ca::new("pgskein test CA");
    let server = tls_only_server(&ca, ServerOptions::new());
    let files = Files::new("cli");
    let ca_file = files.write("ca.pem", &ca.cert.pem(), 0o644);
    let other_ca = files.write("other-ca.pem", &Ca::new("another CA").cert.pem(), 0o644);

    let ok = [
        // No root certificate: encrypted, nothing checked.
        url(&server, "localhost", "sslmode=require"),
        url(&server, "127.0.0.1", "sslmode=prefer"),
        // The chain checked, the host name not: the certificate names only localhost.
        url(&server, "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", path(&ca_file))),
        // Both checked.
        url(&server, "localhost", &format!("sslmode=verify-full&sslrootcert={}", path(&ca_file))),
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{}'",
            server.tcp_port().unwrap(),
            path(&ca_file)
        ),
    ];
    for url in &ok {
        let out = status(url).await;
        assert_eq!(out.code, 0, "{url}: {out:?}");
        assert!(out.stdout.contains("current   base (nothing applied)"), "{url}: {out:?}");
    }

    let out =
        status(&url(&server, "localhost", &format!("sslmode=verify-full&sslrootcert={}", path(&other_ca))))
            .await;
    assert_eq!(out.code, 1, "a wrong CA: {out:?}");
    assert!(out.stderr.contains("error: cannot connect to postgresql://postgres@localhost:"), "{out:?}");
    assert!(out.stderr.contains("invalid peer certificate: UnknownIssuer"), "{out:?}");
    assert!(
        out.stderr.contains("hint: the server's certificate is not signed by a CA in sslrootcert"),
        "{out:?}"
    );

    // libpq's require checks the chain when a root certificate is given.
    let out =
        status(&url(&server, "localhost", &format!("sslmode=require&sslrootcert={}", path(&other_ca)))).await;
    assert_eq!(out.code, 1, "require with a wrong root: {out:?}");
    assert!(out.stderr.contains("UnknownIssuer"), "{out:?}");

    let out =
        status(&url(&server, "127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", path(&ca_file))))
            .await;
    assert_eq!(out.code, 1, "a host name the certificate does not name: {out:?}");
    assert!(out.stderr.contains("certificate not valid for name \"127.0.0.1\""), "{out:?}");
    assert!(
        out.stderr.contains("hint: the server's certificate does not name the host connected to"),
        "{out:?}"
    );

    let out = status(&url(&server, "localhost", "sslmode=disable")).await;
    assert_eq!(out.code, 1, "the server takes TLS only: {out:?}");
    assert!(out.stderr.contains("no encryption"), "{out:?}");

    let out = status(&url(&server, "localhost", "sslmode=verify-ca")).await;
    assert_eq!(out.code, 2, "verify-ca without a CA: {out:?}");
    assert!(
        out.stderr.contains("sslmode=verify-ca needs the CA that signed the server's certificate"),
        "{out:?}"
    );

    let missing = files.0.join("missing.pem");
    let out =
        status(&url(&server, "localhost", &format!("sslmode=verify-full&sslrootcert={}", path(&missing))))
            .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&format!("cannot read the sslrootcert file {}", path(&missing))), "{out:?}");
}

#[tokio::test]
async fn the_testing_helpers_connect_with_the_tls_options_of_their_url() {
    let ca = Ca::new("pgskein test CA");
    let server = tls_only_server(&ca, ServerOptions::new());
    let files = Files::new("helpers");
    let ca_file = files.write("ca.pem", &ca.cert.pem(), 0o644);
    let other_ca = files.write("other-ca.pem", &Ca::new("another CA").cert.pem(), 0o644);

    let verified = TestServer::external(&url(
        &server,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", path(&ca_file)),
    ))
    .unwrap();
    let db = verified.create_database("over_tls").await.unwrap();
    let client = db.connect().await.unwrap();
    let ssl: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the session is encrypted");
    let pooled = db.pool(1).get().await.unwrap();
    let ssl: bool = pooled
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "pooled sessions too");
    assert!(db.url().contains("sslmode=verify-full&sslrootcert="), "{}", db.url());
    drop((client, pooled));
    drop(db);

    let wrong = TestServer::external(&url(
        &server,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", path(&other_ca)),
    ))
    .unwrap();
    let err = wrong.create_database("wrong_ca").await.expect_err("a certificate from another CA is refused");
    assert!(chain(&err).contains("invalid peer certificate: UnknownIssuer"), "{}", chain(&err));

    let err = TestServer::external(&url(&server, "localhost", "sslmode=verify-ca")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("sslmode=verify-ca needs the CA"), "{err}");
}

#[tokio::test]
async fn a_client_certificate_is_offered_from_sslcert_and_sslkey() {
    let ca = Ca::new("pgskein test CA");
    let files = Files::new("client");
    let ca_file = files.write("ca.pem", &ca.cert.pem(), 0o644);
    let server = tls_only_server(
        &ca,
        ServerOptions::new().setting("ssl_ca_file", path(&ca_file)).hba("hostssl all all 127.0.0.1/32 cert"),
    );
    let (cert, key) = ca.issue("postgres", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = files.write("client.crt", &cert, 0o644);
    let key_file = files.write("client.key", &key, 0o600);
    let base = format!("sslmode=verify-full&sslrootcert={}", path(&ca_file));

    let out = status(&url(&server, "localhost", &base)).await;
    assert_eq!(out.code, 1, "no client certificate: {out:?}");
    assert!(out.stderr.contains("connection requires a valid client certificate"), "{out:?}");

    let with_cert = format!("{base}&sslcert={}&sslkey={}", path(&cert_file), path(&key_file));
    let out = status(&url(&server, "localhost", &with_cert)).await;
    assert_eq!(out.code, 0, "{out:?}");

    set_mode(&key_file, 0o644);
    let out = status(&url(&server, "localhost", &with_cert)).await;
    assert_eq!(out.code, 2, "a key others can read: {out:?}");
    assert!(out.stderr.contains("can be read by other users: make it private (chmod 600"), "{out:?}");
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_and_prefer_falls_back() {
    let server = TestServer::start_private_with(ServerOptions::new().tcp()).unwrap();
    let out = status(&url(&server, "localhost", "sslmode=prefer")).await;
    assert_eq!(out.code, 0, "prefer connects in plain: {out:?}");
    let out = status(&url(&server, "localhost", "sslmode=require")).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("server does not support TLS"), "{out:?}");
    assert!(
        out.stderr.contains("hint: sslmode=require needs TLS, which this server does not offer"),
        "{out:?}"
    );
}
