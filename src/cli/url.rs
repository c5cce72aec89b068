//! Connection strings as the CLI shows and hands them on: the password is
//! masked in everything printed, and removed from what is passed to
//! `pg_dump` (which gets it through `PGPASSWORD` instead, out of `ps`).
//! Both forms libpq accepts are handled: `postgres[ql]://` URLs and
//! `key=value` strings.

const MASK: &str = "***";

/// A connection string split around its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    /// The text before and after each password, in order.
    pieces: Vec<String>,
    /// The password as written (percent-encoded or quoted), if any.
    password: Option<String>,
    /// The password's value, decoded.
    secret: Option<String>,
    /// Whether the password sits in URL userinfo (`user:pw@`), dropped with its colon.
    in_userinfo: bool,
}

impl ConnInfo {
    pub(crate) fn parse(s: &str) -> ConnInfo {
        for scheme in ["postgresql://", "postgres://"] {
            if s.starts_with(scheme) {
                return url(s, scheme.len());
            }
        }
        key_values(s)
    }

    /// The string with its password replaced by `***`.
    pub(crate) fn masked(&self) -> String {
        self.join(Some(MASK))
    }

    /// The string without its password.
    pub(crate) fn without_password(&self) -> String {
        self.join(None)
    }

    /// The decoded password, if the string has one.
    pub(crate) fn password(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// The raw password as written, to scrub from anything printed.
    pub(crate) fn raw_password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    fn join(&self, replacement: Option<&str>) -> String {
        match (&self.password, replacement) {
            (None, _) => self.pieces.concat(),
            (Some(_), Some(r)) => self.pieces.join(r),
            (Some(_), None) if self.in_userinfo => {
                // `user:` + `` + `@host`: drop the colon too.
                let (before, after) = (&self.pieces[0], &self.pieces[1..].concat());
                format!("{}{after}", before.strip_suffix(':').unwrap_or(before))
            }
            (Some(_), None) => {
                // `password=` + value: drop the whole parameter.
                let mut out = String::new();
                for (i, piece) in self.pieces.iter().enumerate() {
                    let piece = if i + 1 < self.pieces.len() { strip_key(piece) } else { piece.as_str() };
                    out.push_str(piece);
                }
                tidy(&out)
            }
        }
    }
}

/// Removes a trailing `password=` (and the separator before it) from a piece.
fn strip_key(piece: &str) -> &str {
    let Some(at) = piece.rfind("password") else { return piece };
    piece[..at].trim_end_matches(['&', '?']).trim_end()
}

fn tidy(s: &str) -> String {
    let s = s.replace("?&", "?").replace("&&", "&");
    let s = s.strip_suffix('?').unwrap_or(&s).to_owned();
    s.split(' ').filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ")
}

fn url(s: &str, after_scheme: usize) -> ConnInfo {
    let rest = &s[after_scheme..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if let Some(at) = authority.rfind('@') {
        if let Some(colon) = authority[..at].find(':') {
            let start = after_scheme + colon + 1;
            let end = after_scheme + at;
            let raw = &s[start..end];
            return ConnInfo {
                pieces: vec![s[..start].to_owned(), s[end..].to_owned()],
                password: Some(raw.to_owned()),
                secret: Some(percent_decode(raw)),
                in_userinfo: true,
            };
        }
    }
    // `?password=...` in the query.
    if let Some(q) = s.find('?') {
        for (offset, param) in param_offsets(&s[q + 1..], '&') {
            if let Some(value) = param.strip_prefix("password=") {
                let start = q + 1 + offset + "password=".len();
                let end = start + value.len();
                return ConnInfo {
                    pieces: vec![s[..start].to_owned(), s[end..].to_owned()],
                    password: Some(value.to_owned()),
                    secret: Some(percent_decode(value)),
                    in_userinfo: false,
                };
            }
        }
    }
    ConnInfo { pieces: vec![s.to_owned()], password: None, secret: None, in_userinfo: false }
}

fn param_offsets(s: &str, sep: char) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for part in s.split(sep) {
        out.push((offset, part));
        offset += part.len() + 1;
    }
    out
}

/// `key=value` strings: values may be single-quoted with `\'` and `\\` escapes.
fn key_values(s: &str) -> ConnInfo {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[key_start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value_start = i;
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let c = s[i..].chars().next().unwrap_or_default();
                value.push(c);
                i += c.len_utf8().max(1);
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                let c = s[i..].chars().next().unwrap_or_default();
                value.push(c);
                i += c.len_utf8().max(1);
            }
        }
        if key == "password" {
            return ConnInfo {
                pieces: vec![s[..value_start].to_owned(), s[i..].to_owned()],
                password: Some(s[value_start..i].to_owned()),
                secret: Some(value),
                in_userinfo: false,
            };
        }
        if key.is_empty() {
            break;
        }
    }
    ConnInfo { pieces: vec![s.to_owned()], password: None, secret: None, in_userinfo: false }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
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
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::ConnInfo;

    #[test]
    fn masks_the_password_of_a_url() {
        let c = ConnInfo::parse("postgresql://app:s%40cret@localhost:5432/app?sslmode=disable");
        assert_eq!(c.masked(), "postgresql://app:***@localhost:5432/app?sslmode=disable");
        assert_eq!(c.without_password(), "postgresql://app@localhost:5432/app?sslmode=disable");
        assert_eq!(c.password(), Some("s@cret"));
        assert_eq!(c.raw_password(), Some("s%40cret"));
    }

    #[test]
    fn a_password_may_contain_at_signs_and_the_path_slashes() {
        let c = ConnInfo::parse("postgres://u:p@ss@h/db/x");
        assert_eq!(c.masked(), "postgres://u:***@h/db/x");
        assert_eq!(c.password(), Some("p@ss"));
    }

    #[test]
    fn masks_a_password_in_the_query() {
        let c = ConnInfo::parse("postgres://u@h/db?sslmode=disable&password=hunter2&port=5");
        assert_eq!(c.masked(), "postgres://u@h/db?sslmode=disable&password=***&port=5");
        assert_eq!(c.without_password(), "postgres://u@h/db?sslmode=disable&port=5");
        let c = ConnInfo::parse("postgres://u@h/db?password=hunter2");
        assert_eq!(c.without_password(), "postgres://u@h/db");
    }

    #[test]
    fn masks_a_key_value_password_quoted_or_not() {
        let c = ConnInfo::parse("host=h password='se cr\\'et' user=u");
        assert_eq!(c.masked(), "host=h password=*** user=u");
        assert_eq!(c.without_password(), "host=h user=u");
        assert_eq!(c.password(), Some("se cr'et"));
        let c = ConnInfo::parse("password=x1 host=h");
        assert_eq!(c.masked(), "password=*** host=h");
        assert_eq!(c.without_password(), "host=h");
    }

    #[test]
    fn strings_without_password_are_unchanged() {
        for s in [
            "postgresql://postgres@/db?host=/var/run/postgresql&port=5432",
            "host=h user=u",
            "postgres://h/db",
        ] {
            let c = ConnInfo::parse(s);
            assert_eq!(c.masked(), s);
            assert_eq!(c.without_password(), s);
            assert_eq!(c.password(), None);
        }
    }
}
