//! Connection strings as the CLI and the testing helpers read, show and hand
//! them on (features `cli` and `testing`).
//!
//! A string is read once, in either form libpq accepts (`postgres[ql]://`
//! URLs and `key=value` strings), into the [`tokio_postgres::Config`] that
//! actually connects, plus the libpq TLS options tokio-postgres does not
//! model (`sslmode=verify-ca|verify-full`, `sslrootcert`, `sslcert`,
//! `sslkey`), which [`tls`] turns into a rustls connector.
//!
//! Invariant: the password lives in the parsed `Config` only. Nothing this
//! module produces for people (the [`ConnStr::display`] text, `Debug`, every
//! error) contains it or any value of the input string: what is shown is
//! rebuilt from the parsed configuration, never cut out of the input. Child
//! processes get the connection through libpq's environment variables and
//! the password through a private passfile ([`ChildEnv`]), never through
//! their command line.

#[cfg(test)]
mod tests;
pub(crate) mod tls;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::config::{Host, SslMode as PgSslMode};

#[cfg(feature = "cli")]
pub(crate) use tls::{ConnectError, connect, hint};

/// The options tokio-postgres reads itself.
const TOKIO_POSTGRES_KEYS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// The TLS options read here, alongside tokio-postgres.
const TLS_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// libpq options that pgskein does not implement: refused by name rather
/// than ignored, so that nobody believes a setting took effect.
const UNSUPPORTED_KEYS: &[&str] = &[
    "passfile",
    "service",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "sslcertmode",
    "sslkeylogfile",
    "requiressl",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "requirepeer",
    "require_auth",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "min_protocol_version",
    "max_protocol_version",
    "replication",
    "fallback_application_name",
    "client_encoding",
];

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS or fail; the certificate is not checked, unless a root certificate
    /// file is given (then as `verify-ca`, as libpq does).
    Require,
    /// TLS, with the server's certificate chain checked against the root certificates.
    VerifyCa,
    /// TLS, with the chain checked and the host name matched against the certificate.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the root certificates come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCert {
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the platform's trusted roots.
    System,
}

/// The TLS options of a connection string, as libpq reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    pub(crate) mode: SslMode,
    /// Whether `sslmode` was written (the default, `prefer`, is then not shown).
    pub(crate) mode_given: bool,
    pub(crate) root_cert: Option<RootCert>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions { mode: SslMode::Prefer, mode_given: false, root_cert: None, cert: None, key: None }
    }
}

/// A parsed connection string: what connects, and how to show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ConnStr {
    config: tokio_postgres::Config,
    tls: TlsOptions,
}

/// Why a connection string cannot be used. No variant holds a value of the
/// string: only option names its reader knows, and byte positions.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnStrError {
    /// The `key=value` form is malformed.
    #[error("the connection string is malformed at byte {at}: {what}")]
    Syntax { at: usize, what: &'static str },
    /// An option that is not known, shown because it is close to a known one.
    #[error("unknown connection option `{given}`; did you mean `{known}`?")]
    Misspelt { given: String, known: &'static str },
    /// An option that is not known, not shown: it may be a piece of a value.
    #[error(
        "unknown connection option at byte {at} (not shown, in case it is part of a value: \
         quote values that hold spaces, as in password='a b', and percent-encode `&` in URLs as %26)"
    )]
    Unknown { at: usize },
    /// A known option written in upper case: libpq's names are lower case.
    #[error("connection option `{given}` must be written in lower case: `{known}`")]
    UpperCase { given: String, known: &'static str },
    /// A libpq option pgskein does not implement.
    #[error("connection option `{0}` is not supported by pgskein")]
    Unsupported(&'static str),
    /// A value outside the option's set.
    #[error("invalid value for connection option `{key}`: expected {expected}")]
    InvalidValue { key: &'static str, expected: &'static str },
    /// A URL with an unencoded `@` after its host or in its query.
    #[error(
        "the connection URL has an `@` after its host, database or parameters: \
         write `@` in a password or other value as %40 (and `?` in a password as %3F)"
    )]
    AtAfterHost,
    /// tokio-postgres refused the string (its messages name options, not values).
    #[error("invalid connection string")]
    Config(#[source] tokio_postgres::Error),
    /// The TLS options cannot be put in effect.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// One `key=value` of the input, with the byte where its key starts.
struct Param<'a> {
    key: std::borrow::Cow<'a, str>,
    /// Decoded (URL) or unquoted (`key=value`).
    value: String,
    /// The text as written, `key=value` of a URL's query.
    raw: &'a str,
    at: usize,
}

impl ConnStr {
    /// Reads a connection string the way tokio-postgres does, with libpq's
    /// TLS options on top.
    pub(crate) fn parse(s: &str) -> Result<ConnStr, ConnStrError> {
        // For a URL, the text before its query, which tokio-postgres reads as is.
        let (url_head, params) = match url_body(s) {
            Some(body) => {
                let offset = s.len() - body.len();
                let (head, params) = url_params(body, offset)?;
                (Some(&s[..offset + head.len()]), params)
            }
            None => (None, key_values(s)?),
        };
        let mut tls = TlsOptions::default();
        let mut kept = Vec::new();
        for p in &params {
            match p.key.as_ref() {
                "sslmode" => {
                    tls.mode = SslMode::parse(&p.value).ok_or(ConnStrError::InvalidValue {
                        key: "sslmode",
                        expected: "disable, prefer, require, verify-ca or verify-full",
                    })?;
                    tls.mode_given = true;
                }
                "sslrootcert" => {
                    tls.root_cert = Some(if p.value == "system" {
                        RootCert::System
                    } else {
                        RootCert::File(p.value.clone().into())
                    })
                }
                "sslcert" => tls.cert = Some(p.value.clone().into()),
                "sslkey" => tls.key = Some(p.value.clone().into()),
                key if TOKIO_POSTGRES_KEYS.contains(&key) => kept.push(p),
                key => return Err(unknown(key, p.at)),
            }
        }
        // What tokio-postgres reads: the string less the options read here.
        let rest = match url_head {
            Some(head) if kept.is_empty() => head.to_owned(),
            Some(head) => format!("{head}?{}", kept.iter().map(|p| p.raw).collect::<Vec<_>>().join("&")),
            None => {
                kept.iter().map(|p| format!("{}={}", p.key, quote(&p.value))).collect::<Vec<_>>().join(" ")
            }
        };
        let config = tokio_postgres::Config::from_str(&rest).map_err(ConnStrError::Config)?;
        Ok(ConnStr::new(config, tls))
    }

    /// A connection string for a configuration built in code.
    pub(crate) fn from_config(config: tokio_postgres::Config) -> ConnStr {
        ConnStr::new(config, TlsOptions::default())
    }

    fn new(mut config: tokio_postgres::Config, tls: TlsOptions) -> ConnStr {
        // libpq uses no TLS over Unix sockets, whatever sslmode says.
        let sockets_only =
            !config.get_hosts().is_empty() && config.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)));
        config.ssl_mode(match tls.mode {
            _ if sockets_only => PgSslMode::Disable,
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        ConnStr { config, tls }
    }

    /// The configuration that connects (its `ssl_mode` as tokio-postgres
    /// understands it; certificate checks are the connector's).
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The configuration, to set what the string leaves open (timeouts, the
    /// application name); its TLS mode is this module's to set.
    pub(crate) fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    /// The TLS options.
    pub(crate) fn tls_options(&self) -> &TlsOptions {
        &self.tls
    }

    /// The same connection to another database.
    pub(crate) fn with_dbname(&self, dbname: &str) -> ConnStr {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other
    }

    /// The password, if one was given.
    pub(crate) fn password(&self) -> Option<&[u8]> {
        self.config.get_password()
    }

    /// The connection as a URL for people: rebuilt from the configuration,
    /// the password shown as `***` when there is one.
    pub(crate) fn display(&self) -> String {
        self.url(Password::Masked)
    }

    /// The connection as a URL that connects, password included when there
    /// is one: for the environment of a process, never for a command line.
    pub(crate) fn url_with_password(&self) -> String {
        self.url(Password::Included)
    }

    fn url(&self, password: Password) -> String {
        let c = &self.config;
        let mut out = String::from("postgresql://");
        if let Some(user) = c.get_user() {
            out.push_str(&percent_encode(user.as_bytes(), false));
        }
        match (c.get_password(), password) {
            (Some(_), Password::Masked) => out.push_str(":***"),
            (Some(p), Password::Included) => {
                out.push(':');
                out.push_str(&percent_encode(p, false));
            }
            (None, _) => {}
        }
        if c.get_user().is_some() || c.get_password().is_some() {
            out.push('@');
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        let hosts = c.get_hosts();
        let ports = c.get_ports();
        let all_tcp = hosts.iter().all(|h| matches!(h, Host::Tcp(_)));
        if all_tcp {
            let authority: Vec<String> = hosts
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let Host::Tcp(name) = h else { unreachable!("all hosts are TCP") };
                    let mut a = if name.contains(':') {
                        format!("[{name}]")
                    } else {
                        percent_encode(name.as_bytes(), false)
                    };
                    // tokio-postgres repeats a lone port for every host.
                    if let Some(port) = ports.get(i).or(ports.first().filter(|_| ports.len() == 1)) {
                        a.push_str(&format!(":{port}"));
                    }
                    a
                })
                .collect();
            out.push_str(&authority.join(","));
            if hosts.is_empty() && !ports.is_empty() {
                query.push(("port", join(ports.iter().map(u16::to_string))));
            }
        } else {
            let names = hosts.iter().map(|h| match h {
                Host::Tcp(name) => percent_encode(name.as_bytes(), true),
                #[cfg(unix)]
                Host::Unix(path) => percent_encode(path.as_os_str().as_encoded_bytes(), true),
            });
            query.push(("host", join(names)));
            if !ports.is_empty() {
                query.push(("port", join(ports.iter().map(u16::to_string))));
            }
        }
        out.push('/');
        if let Some(db) = c.get_dbname() {
            out.push_str(&percent_encode(db.as_bytes(), false));
        }
        let addrs = c.get_hostaddrs();
        if !addrs.is_empty() {
            query.push(("hostaddr", join(addrs.iter().map(|a| a.to_string()))));
        }
        if self.tls.mode_given {
            query.push(("sslmode", self.tls.mode.as_str().to_owned()));
        }
        match &self.tls.root_cert {
            Some(RootCert::System) => query.push(("sslrootcert", "system".to_owned())),
            Some(RootCert::File(p)) => query.push(("sslrootcert", path_param(p))),
            None => {}
        }
        if let Some(p) = &self.tls.cert {
            query.push(("sslcert", path_param(p)));
        }
        if let Some(p) = &self.tls.key {
            query.push(("sslkey", path_param(p)));
        }
        if password == Password::Included {
            if let Some(app) = c.get_application_name() {
                query.push(("application_name", percent_encode(app.as_bytes(), false)));
            }
            if let Some(options) = c.get_options() {
                query.push(("options", percent_encode(options.as_bytes(), false)));
            }
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
        }
        out
    }

    /// The environment that gives a libpq program (`pg_dump`, `psql`) this
    /// connection, the password in a private passfile that lives as long as
    /// the returned value.
    pub(crate) fn child_env(&self) -> std::io::Result<ChildEnv> {
        ChildEnv::new(self)
    }
}

impl fmt::Debug for ConnStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnStr").field(&self.display()).finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Password {
    Masked,
    Included,
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}

fn path_param(p: &Path) -> String {
    percent_encode(p.as_os_str().as_encoded_bytes(), true)
}

/// The error for an option that is not read here or by tokio-postgres.
fn unknown(key: &str, at: usize) -> ConnStrError {
    let known = TOKIO_POSTGRES_KEYS.iter().chain(TLS_KEYS).chain(UNSUPPORTED_KEYS);
    if let Some(&k) = UNSUPPORTED_KEYS.iter().find(|k| **k == key) {
        return ConnStrError::Unsupported(k);
    }
    if let Some(&k) = known.clone().find(|k| k.eq_ignore_ascii_case(key)) {
        return ConnStrError::UpperCase { given: key.to_owned(), known: k };
    }
    match known.map(|k| (edit_distance(k, &key.to_ascii_lowercase()), *k)).min() {
        // A name this close to a known option is a typo, not a piece of a secret.
        Some((d, k)) if d <= 2 && key.len() > 3 => ConnStrError::Misspelt { given: key.to_owned(), known: k },
        _ => ConnStrError::Unknown { at },
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// The text after `postgres://` or `postgresql://`, if `s` is a URL.
fn url_body(s: &str) -> Option<&str> {
    ["postgres://", "postgresql://"].iter().find_map(|p| s.strip_prefix(p))
}

/// Splits a URL's body (after the scheme) as tokio-postgres does: the part
/// before the query, and the query's parameters.
fn url_params(body: &str, offset: usize) -> Result<(&str, Vec<Param<'_>>), ConnStrError> {
    // tokio-postgres takes everything up to the first `@` as user and password.
    let after_creds = match body.find('@') {
        Some(at) => {
            // An `@` after the host, or in a query parameter, would make
            // tokio-postgres read the host or the query as user and password:
            // a user name with `/` or `?`, or a "password" holding `?key=`.
            let creds = &body[..at];
            let user = creds.split(':').next().unwrap_or_default();
            let query_like = creds.find('?').is_some_and(|q| creds[q..].contains('='));
            if user.contains(['/', '?']) || query_like {
                return Err(ConnStrError::AtAfterHost);
            }
            at + 1
        }
        None => 0,
    };
    let Some(q) = body[after_creds..].find('?').map(|q| after_creds + q) else {
        return Ok((body, Vec::new()));
    };
    let mut params = Vec::new();
    let mut start = q + 1;
    while start < body.len() {
        let end = body[start..].find('&').map_or(body.len(), |e| start + e);
        let raw = &body[start..end];
        let at = offset + start;
        let Some((key, value)) = raw.split_once('=') else {
            return Err(ConnStrError::Syntax { at, what: "a URL parameter without `=`" });
        };
        let key = percent_decode(key.as_bytes());
        let key = String::from_utf8(key)
            .map_err(|_| ConnStrError::Syntax { at, what: "a parameter name that is not UTF-8" })?;
        // tokio-postgres decodes `host` itself, as a path or a name.
        let value = if key == "host" {
            value.to_owned()
        } else {
            String::from_utf8_lossy(&percent_decode(value.as_bytes())).into_owned()
        };
        params.push(Param { key: key.into(), value, raw, at });
        start = end + 1;
    }
    Ok((&body[..q], params))
}

/// Splits a `key=value` string exactly as tokio-postgres's parser does.
fn key_values(s: &str) -> Result<Vec<Param<'_>>, ConnStrError> {
    let mut params = Vec::new();
    let mut it = s.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else { break };
        while it.next_if(|(_, c)| !c.is_whitespace() && *c != '=').is_some() {}
        let end = it.peek().map_or(s.len(), |&(i, _)| i);
        if end == start {
            // tokio-postgres stops, silently, at a `=` with no name before it.
            break;
        }
        skip_ws(&mut it);
        match it.next() {
            Some((_, '=')) => {}
            Some((at, _)) => {
                return Err(ConnStrError::Syntax {
                    at,
                    what: "expected `=` after an option name; quote values that hold spaces",
                });
            }
            None => {
                return Err(ConnStrError::Syntax { at: s.len(), what: "expected `=` after an option name" });
            }
        }
        skip_ws(&mut it);
        let value_at = it.peek().map_or(s.len(), |&(i, _)| i);
        let mut value = String::new();
        if it.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match it.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(it.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => {
                        return Err(ConnStrError::Syntax {
                            at: value_at,
                            what: "a quoted value is not closed",
                        });
                    }
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(ConnStrError::Syntax { at: value_at, what: "an option without a value" });
            }
        }
        params.push(Param { key: s[start..end].into(), value, raw: "", at: start });
    }
    Ok(params)
}

/// A value for a `key=value` string, quoted so that any text reads back as itself.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encodes all but URL-unreserved characters (and `/` when
/// `keep_slash`, which libpq accepts as is in a query value).
pub(crate) fn percent_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// libpq's environment variables that could change where a child connects
/// or how it authenticates: removed from a child's environment, then set
/// from the parsed connection.
const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLNEGOTIATION",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLROOTCERT",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGSSLCERTMODE",
    "PGCHANNELBINDING",
    "PGREQUIREAUTH",
    "PGGSSENCMODE",
    "PGKRBSRVNAME",
    "PGGSSLIB",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
];

/// The environment of a libpq child process for one connection: libpq's
/// variables, and the password in a passfile readable by this user alone,
/// removed when this value is dropped.
pub(crate) struct ChildEnv {
    vars: Vec<(&'static str, OsString)>,
    passfile: Option<PathBuf>,
}

impl ChildEnv {
    fn new(conn: &ConnStr) -> std::io::Result<ChildEnv> {
        let c = &conn.config;
        let mut vars: Vec<(&'static str, OsString)> = Vec::new();
        let hosts: Vec<OsString> = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => OsString::from(name),
                #[cfg(unix)]
                Host::Unix(path) => path.clone().into_os_string(),
            })
            .collect();
        if !hosts.is_empty() {
            vars.push(("PGHOST", hosts.join(std::ffi::OsStr::new(","))));
        }
        if !c.get_hostaddrs().is_empty() {
            vars.push(("PGHOSTADDR", join(c.get_hostaddrs().iter().map(|a| a.to_string())).into()));
        }
        if !c.get_ports().is_empty() {
            vars.push(("PGPORT", join(c.get_ports().iter().map(u16::to_string)).into()));
        }
        let text = [
            ("PGUSER", c.get_user()),
            ("PGDATABASE", c.get_dbname()),
            ("PGAPPNAME", c.get_application_name()),
            ("PGOPTIONS", c.get_options()),
        ];
        vars.extend(text.into_iter().filter_map(|(k, v)| v.map(|v| (k, OsString::from(v)))));
        if let Some(t) = c.get_connect_timeout() {
            vars.push(("PGCONNECT_TIMEOUT", t.as_secs().max(1).to_string().into()));
        }
        vars.push(("PGSSLMODE", conn.tls.mode.as_str().into()));
        match tls::root_source(&conn.tls) {
            Some(RootCert::File(p)) => vars.push(("PGSSLROOTCERT", p.into_os_string())),
            Some(RootCert::System) => vars.push(("PGSSLROOTCERT", "system".into())),
            None => {}
        }
        if let Some(p) = &conn.tls.cert {
            vars.push(("PGSSLCERT", p.clone().into_os_string()));
        }
        if let Some(p) = &conn.tls.key {
            vars.push(("PGSSLKEY", p.clone().into_os_string()));
        }
        // tokio-postgres speaks neither GSSAPI encryption nor Kerberos.
        vars.push(("PGGSSENCMODE", "disable".into()));
        let mut env = ChildEnv { vars, passfile: None };
        if let Some(password) = c.get_password() {
            match passfile_line(password) {
                Some(line) => {
                    let path = write_private_file(&line)?;
                    env.vars.push(("PGPASSFILE", path.clone().into_os_string()));
                    env.passfile = Some(path);
                }
                // A passfile holds one password a line: one with a line break
                // goes in the child's environment instead (not its argv).
                None => env.vars.push(("PGPASSWORD", os_string(password))),
            }
        }
        Ok(env)
    }

    /// The variables to set on the child, after removing every one of
    /// [`ChildEnv::removed`].
    pub(crate) fn vars(&self) -> impl Iterator<Item = (&'static str, &std::ffi::OsStr)> {
        self.vars.iter().map(|(k, v)| (*k, v.as_os_str()))
    }

    /// The variables to remove from the child's inherited environment:
    /// libpq's, and `DATABASE_URL`, which may hold the password.
    pub(crate) fn removed(&self) -> impl Iterator<Item = &'static str> {
        LIBPQ_ENV.iter().copied().chain(["DATABASE_URL"])
    }

    /// Sets up `cmd`'s environment for this connection.
    pub(crate) fn apply(&self, cmd: &mut std::process::Command) {
        for k in self.removed() {
            cmd.env_remove(k);
        }
        cmd.envs(self.vars());
    }
}

impl Drop for ChildEnv {
    fn drop(&mut self) {
        if let Some(p) = &self.passfile {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(unix)]
fn os_string(bytes: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes.to_vec())
}

#[cfg(not(unix))]
fn os_string(bytes: &[u8]) -> OsString {
    String::from_utf8_lossy(bytes).into_owned().into()
}

/// `*:*:*:*:password`, with `:` and `\` escaped as libpq reads them; `None`
/// when the password holds a line break.
fn passfile_line(password: &[u8]) -> Option<Vec<u8>> {
    if password.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return None;
    }
    let mut line = b"*:*:*:*:".to_vec();
    for &b in password {
        if matches!(b, b':' | b'\\') {
            line.push(b'\\');
        }
        line.push(b);
    }
    line.push(b'\n');
    Some(line)
}

/// A new file with `content`, readable and writable by this user alone
/// (libpq ignores a passfile that others can read).
fn write_private_file(content: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!(
        "pgskein-passfile-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    if let Err(e) = file.write_all(content) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}
