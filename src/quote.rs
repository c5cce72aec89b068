//! SQL quoting: the one place identifiers and literals are quoted. Values are
//! bound as parameters wherever the protocol allows; these helpers are for
//! identifiers, which cannot be bound, and for the few statements sent with the
//! simple protocol.

/// A quoted SQL identifier. Every identifier pgskein writes goes through here.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal. Only for values that cannot be bound as parameters
/// (statements sent with the simple protocol).
pub(crate) fn quote_literal(s: &str) -> String {
    // E'' reads the same whatever standard_conforming_strings says.
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_their_quotes() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote_literal(r"it's a \ path"), r"E'it\'s a \\ path'");
    }
}
