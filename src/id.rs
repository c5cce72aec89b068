//! Newtypes for revision ids and checksums. An id is validated once, when a
//! revision is built, so every later layer can treat it as a plain name.

use std::fmt;

use sha2::{Digest, Sha256};

/// The id of a revision: the file stem of `<id>.sql`, e.g. `0003_enhance_documents`.
///
/// Ids start with an ASCII letter or digit and contain only ASCII letters,
/// digits, `_`, `.` and `-`; `head`, `heads` and `base` are reserved target words.
///
/// ```
/// use pgskein::RevisionId;
/// let id = RevisionId::new("0001_extensions").unwrap();
/// assert_eq!(id.as_str(), "0001_extensions");
/// assert!(RevisionId::new("head").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionId(String);

/// Longest id accepted; PostgreSQL identifiers stop at 63 bytes and ids often
/// end up in object names, but ours live in text columns, so allow more.
const MAX_ID_LEN: usize = 200;

impl RevisionId {
    /// Validates and wraps an id. The error says what is wrong with it.
    pub fn new(id: impl Into<String>) -> Result<Self, String> {
        let id = id.into();
        let mut chars = id.chars();
        match chars.next() {
            None => return Err("a revision id cannot be empty".into()),
            Some(c) if !c.is_ascii_alphanumeric() => {
                return Err(format!("revision id {id:?} must start with an ASCII letter or digit"));
            }
            _ => {}
        }
        if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
            return Err(format!(
                "revision id {id:?} contains {c:?}; use only ASCII letters, digits, '_', '.' and '-'"
            ));
        }
        if id.len() > MAX_ID_LEN {
            return Err(format!("revision id {id:?} is longer than {MAX_ID_LEN} bytes"));
        }
        if matches!(id.as_str(), "head" | "heads" | "base") {
            return Err(format!("revision id {id:?} is a reserved target word; rename the file"));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::borrow::Borrow<str> for RevisionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for RevisionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 checksum of a revision's source, as stored in the ledger.
///
/// For SQL files it covers the whole file after a leading byte-order mark is
/// removed and CRLF line endings become LF, so a Windows checkout of the same
/// file gives the same checksum.
///
/// ```
/// use pgskein::Checksum;
/// assert_eq!(Checksum::of_sql("SELECT 1;\r\n"), Checksum::of_sql("\u{feff}SELECT 1;\n"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// The version of the checksum algorithm, stored beside each checksum so a
    /// later pgskein can change the normalisation without flagging drift.
    pub const VERSION: i16 = 1;

    /// Checksum of SQL source text, normalised as described on the type.
    pub fn of_sql(text: &str) -> Self {
        Self::of_sql_bytes(text.as_bytes())
    }

    /// [`of_sql`](Checksum::of_sql) of a file's bytes, normalised the same
    /// way without checking that they are UTF-8 (a file that is not never
    /// loads, so its checksum is never compared with a recorded one).
    pub(crate) fn of_sql_bytes(bytes: &[u8]) -> Self {
        let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        if !bytes.contains(&b'\r') {
            return Self::of_bytes(bytes);
        }
        let mut hasher = Sha256::new();
        let mut rest = bytes;
        while let Some(cr) = rest.iter().position(|&b| b == b'\r') {
            if rest.get(cr + 1) == Some(&b'\n') {
                hasher.update(&rest[..cr]);
                hasher.update(b"\n");
                rest = &rest[cr + 2..];
            } else {
                hasher.update(&rest[..=cr]);
                rest = &rest[cr + 1..];
            }
        }
        hasher.update(rest);
        Self(hasher.finalize().into())
    }

    /// A checksum from its raw digest, as `embed_migrations!` stores it.
    #[allow(dead_code)] // unused without the `macros` feature
    pub(crate) const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Checksum of raw bytes, without normalisation.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_characters() {
        assert!(RevisionId::new("0003_enhance-documents.v2").is_ok());
    }

    #[test]
    fn ids_reject_spaces_slashes_and_reserved_words() {
        assert!(RevisionId::new("a b").is_err());
        assert!(RevisionId::new("a/b").is_err());
        assert!(RevisionId::new("_x").is_err());
        assert!(RevisionId::new("").is_err());
        assert!(RevisionId::new("base").is_err());
        assert!(RevisionId::new("x".repeat(201)).is_err());
    }

    #[test]
    fn checksum_keeps_a_lone_carriage_return_and_reads_bytes_as_text() {
        assert_ne!(Checksum::of_sql("a\rb"), Checksum::of_sql("a\nb"));
        assert_eq!(Checksum::of_sql("a\r\r\nb\r"), Checksum::of_bytes(b"a\r\nb\r"));
        // The bytes of a file hash as its text does: BOM dropped, CRLF as LF.
        for (file, text) in [
            (&b""[..], &b""[..]),
            (b"\xef\xbb\xbf", b""),
            (b"x\r\n", b"x\n"),
            (b"\xef\xbb\xbf\r\n\r\n", b"\n\n"),
            ("é\r\nü".as_bytes(), "é\nü".as_bytes()),
            (b"\r", b"\r"),
        ] {
            assert_eq!(Checksum::of_sql_bytes(file), Checksum::of_bytes(text), "{file:?}");
        }
    }

    #[test]
    fn checksum_ignores_crlf_and_bom_but_not_content() {
        let a = Checksum::of_sql("-- pgskein: up\nSELECT 1;\n");
        assert_eq!(a, Checksum::of_sql("\u{feff}-- pgskein: up\r\nSELECT 1;\r\n"));
        assert_ne!(a, Checksum::of_sql("-- pgskein: up\nSELECT 2;\n"));
        assert_eq!(a.to_hex().len(), 64);
    }
}
