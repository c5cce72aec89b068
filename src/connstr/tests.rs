use std::str::FromStr;

use tokio_postgres::Config;

use super::*;

fn parse(s: &str) -> ConnStr {
    ConnStr::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    let e = ConnStr::parse(s).err().unwrap_or_else(|| panic!("{s} parsed"));
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}

#[test]
fn reads_what_tokio_postgres_reads() {
    for s in [
        "postgresql://u:Sl4sh/Pw@db.example:5433/app",
        "postgres://u:p%40ss@h/db?application_name=x&connect_timeout=5",
        "postgres://u@h1:1,h2:2/db?password=a&password=b",
        "postgresql://postgres@/db?host=/var/run/postgresql&port=5432",
        "postgresql://[::1]:5432/db",
        "host=h port=1 user=u password='a b\\'c' dbname=d",
        "host = h   password = x\\ y user=u",
        "user=u password=pa:ss@w/rd?# dbname=d",
        "",
    ] {
        let ours = parse(s);
        let mut theirs = Config::from_str(s).unwrap();
        // The one difference: no TLS over Unix sockets, as libpq.
        theirs.ssl_mode(ours.config().get_ssl_mode());
        assert_eq!(ours.config(), &theirs, "{s}");
    }
}

#[test]
fn the_last_of_two_passwords_is_the_one_used() {
    assert_eq!(parse("postgres://u:a@h/d?password=b").password(), Some(&b"b"[..]));
    assert_eq!(parse("postgres://u@h/d?password=a&password=b").password(), Some(&b"b"[..]));
    assert_eq!(parse("host=h password=a password=b").password(), Some(&b"b"[..]));
}

#[test]
fn tls_options_are_read_alongside_and_taken_out() {
    let c = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/c&sslkey=/k");
    assert_eq!(c.tls_options().mode, SslMode::VerifyFull);
    assert_eq!(c.tls_options().root_cert, Some(RootCert::File("/etc/ca.pem".into())));
    assert_eq!(c.tls_options().cert, Some("/c".into()));
    assert_eq!(c.tls_options().key, Some("/k".into()));
    assert_eq!(c.config().get_ssl_mode(), PgSslMode::Require);
    let c = parse("host=h sslmode=verify-ca sslrootcert=system");
    assert_eq!(c.tls_options().root_cert, Some(RootCert::System));
    assert_eq!(parse("host=h sslmode=disable").config().get_ssl_mode(), PgSslMode::Disable);
    assert_eq!(parse("host=h").config().get_ssl_mode(), PgSslMode::Prefer);
    // No TLS over a Unix socket, as libpq.
    assert_eq!(parse("host=/tmp sslmode=require").config().get_ssl_mode(), PgSslMode::Disable);
}

#[test]
fn display_is_rebuilt_without_the_password() {
    let c = parse("postgresql://app:Sl4sh/Pw@db.example:5433/app?sslmode=require");
    assert_eq!(c.display(), "postgresql://app:***@db.example:5433/app?sslmode=require");
    let c = parse("host=/run/pg port=5432 user=postgres dbname=t_1");
    assert_eq!(c.display(), "postgresql://postgres@/t_1?host=/run/pg&port=5432");
    assert!(ConnStr::parse("host=h sslrootcert=/a b").is_err(), "an unquoted space");
    let c = parse("host=h user='we ird' password='x y' dbname=d sslrootcert='/a b'");
    assert_eq!(c.display(), "postgresql://we%20ird:***@h/d?sslrootcert=/a%20b");
    assert_eq!(parse("postgres://[::1]:5/d").display(), "postgresql://[::1]:5/d");
}

#[test]
fn a_url_with_the_password_reads_back_as_the_same_connection() {
    for s in [
        "postgresql://app:Sl4sh/Pw@db.example:5433/app?sslmode=verify-full&sslrootcert=/ca%20dir/ca.pem",
        "host=/run/pg port=5432 user=postgres password='p@ss:w/o?rd#%é' dbname='t 1'",
        "host=h1,h2 port=1,2 user=u dbname=d application_name=x",
        "postgres://u:%F0%9F%94%91@h/d",
    ] {
        let c = parse(s);
        let again = parse(&c.url_with_password());
        assert_eq!(again.config(), c.config(), "{s} -> {}", c.url_with_password());
        assert_eq!(again.tls_options(), c.tls_options());
        assert_eq!(again.display(), c.display());
    }
}

#[test]
fn errors_name_options_never_values() {
    let secret = "hunter2secret";
    let cases = [
        (
            format!("postgres://u@h/d?PASSWORD={secret}"),
            "`PASSWORD` must be written in lower case: `password`",
        ),
        (format!("host=h Password={secret}"), "`Password` must be written in lower case"),
        (format!("host=h password={secret} {secret}"), "expected `=`"),
        (format!("host=h password={secret} {secret}=1"), "unknown connection option at byte 30"),
        (format!("host=h password='{secret}"), "a quoted value is not closed"),
        (format!("postgres://h/d?password={secret}@x"), "write `@` in a password or other value as %40"),
        (format!("postgres://h/d?password={secret}&{secret}"), "a URL parameter without `=`"),
        (format!("postgres://h:5/d?password={secret}@x"), "write `@` in a password or other value as %40"),
        (format!("host=h sslmdoe={secret}"), "unknown connection option `sslmdoe`; did you mean `sslmode`?"),
        (format!("host=h sslmode={secret}"), "invalid value for connection option `sslmode`"),
        (format!("host=h port={secret}"), "invalid value for option `port`"),
        (format!("host=h service={secret}"), "`service` is not supported by pgskein"),
    ];
    for (s, expected) in cases {
        let text = err(&s);
        assert!(text.contains(expected), "{s}: {text}");
        assert!(!text.contains(secret), "{s}: {text}");
    }
}

#[test]
fn children_get_the_password_in_a_private_passfile() {
    let c = parse("postgres://u:pa%3Ass%5Cword@h:5/d?sslmode=require&application_name=a");
    let env = c.child_env().unwrap();
    let vars: std::collections::HashMap<&str, String> =
        env.vars().map(|(k, v)| (k, v.to_string_lossy().into_owned())).collect();
    assert_eq!(vars["PGHOST"], "h");
    assert_eq!(vars["PGPORT"], "5");
    assert_eq!(vars["PGUSER"], "u");
    assert_eq!(vars["PGDATABASE"], "d");
    assert_eq!(vars["PGSSLMODE"], "require");
    assert!(!vars.contains_key("PGPASSWORD"));
    let passfile = std::path::PathBuf::from(&vars["PGPASSFILE"]);
    assert_eq!(std::fs::read_to_string(&passfile).unwrap(), "*:*:*:*:pa\\:ss\\\\word\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&passfile).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(env.removed().any(|k| k == "PGPASSWORD") && env.removed().any(|k| k == "PGSERVICE"));
    drop(env);
    assert!(!passfile.exists(), "removed with the environment");

    let c = parse("host=h password='two\nlines'");
    let env = c.child_env().unwrap();
    assert!(env.vars().any(|(k, v)| k == "PGPASSWORD" && v == "two\nlines"));
    assert!(!env.vars().any(|(k, _)| k == "PGPASSFILE"));
}

#[test]
fn tls_modes_check_what_libpq_checks() {
    let opts = |mode, root: Option<RootCert>| TlsOptions {
        mode,
        mode_given: true,
        root_cert: root,
        cert: None,
        key: None,
    };
    assert!(tls::connector(&opts(SslMode::Require, None)).is_ok());
    let e = tls::connector(&opts(SslMode::VerifyCa, Some(RootCert::System))).err().unwrap();
    assert!(e.to_string().contains("use sslmode=verify-full"), "{e}");
    let e = tls::connector(&opts(SslMode::VerifyFull, Some(RootCert::File("/nonexistent/ca.pem".into()))))
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "cannot read the sslrootcert file /nonexistent/ca.pem");
    let e = tls::connector(&TlsOptions { cert: Some("/c".into()), ..opts(SslMode::Require, None) }).err();
    if std::env::var_os("HOME")
        .is_none_or(|h| !std::path::Path::new(&h).join(".postgresql/postgresql.key").exists())
    {
        assert_eq!(
            e.unwrap().to_string(),
            "sslcert is set but sslkey is not: a client certificate needs both"
        );
    }
}

#[test]
fn percent_encoding_round_trips() {
    for s in ["", "plain", "a b/c?d&e=f%g@h:i#j", "é🔑", "\u{0}"] {
        assert_eq!(percent_decode(percent_encode(s.as_bytes(), false).as_bytes()), s.as_bytes());
    }
    assert_eq!(percent_encode(b"/tmp/a b", true), "/tmp/a%20b");
}
