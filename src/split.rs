//! Splitting PostgreSQL scripts into statements, and classifying statements
//! that cannot share a transaction block. This module owns the lexical rules
//! (quotes, dollar quotes, nested comments, SQL-standard function bodies) that
//! decide where a statement ends.
//!
//! Invariant: every statement returned is a slice of the input cut at ASCII
//! token boundaries, so slicing never lands inside a UTF-8 sequence, and no
//! input makes any function here panic.

/// One statement of a SQL script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement<'a> {
    /// The statement text: starts at its first token (leading whitespace and comments skipped),
    /// ends before the terminating `;` (trailing whitespace trimmed). Comments inside are kept.
    pub text: &'a str,
    /// 1-based line number, in the input, of the statement's first token.
    pub line: usize,
}

/// Splits a script at top-level semicolons. Statements that are empty or only comments/whitespace
/// are dropped. A final statement without `;` is kept.
///
/// Like psql, a `;` inside parentheses (as in `CREATE RULE ... DO (a; b)`)
/// does not split. An unterminated quote or block comment runs to the end of
/// the input and is kept, so that the server reports it instead of the rest
/// of the script vanishing silently.
pub(crate) fn split(sql: &str) -> Vec<Statement<'_>> {
    let mut statements = Vec::new();
    let mut lines = LineCounter::default();
    let mut open: Option<Open> = None;
    for token in Lexer::new(sql) {
        if token.kind == Kind::Semicolon && open.as_ref().is_none_or(Open::can_end) {
            if let Some(done) = open.take() {
                statements.extend(statement(sql, done.start, token.start, &mut lines));
            }
            continue;
        }
        open.get_or_insert_with(|| Open::new(token.start)).observe(token, sql);
    }
    if let Some(done) = open {
        statements.extend(statement(sql, done.start, sql.len(), &mut lines));
    }
    statements
}

/// If the statement cannot run inside a transaction block, a short name of the operation (e.g.
/// "CREATE INDEX CONCURRENTLY"), else None.
///
/// Names follow the server's own error messages. Judged from the text alone,
/// so conditional cases err towards flagging (`CREATE SUBSCRIPTION` even
/// with `create_slot = false`) and cases that depend on the catalog are
/// missed (`CLUSTER` of a partitioned table).
pub(crate) fn non_transactional(statement: &str) -> Option<&'static str> {
    // Every body is checked at load, at each start of a service: lex only the
    // first tokens, and the whole statement for the three forms that need it.
    let head = tokens(statement, 5);
    let t = if ["ALTER", "REINDEX", "CLUSTER"].iter().any(|k| is_keyword(&head, 0, k)) {
        tokens(statement, usize::MAX)
    } else {
        head
    };
    let is = |i: usize, keyword: &str| is_keyword(&t, i, keyword);
    if is(0, "CREATE") {
        let index = if is(1, "UNIQUE") { 2 } else { 1 };
        if is(index, "INDEX") && is(index + 1, "CONCURRENTLY") {
            Some("CREATE INDEX CONCURRENTLY")
        } else if is(1, "DATABASE") {
            Some("CREATE DATABASE")
        } else if is(1, "TABLESPACE") {
            Some("CREATE TABLESPACE")
        } else if is(1, "SUBSCRIPTION") {
            Some("CREATE SUBSCRIPTION")
        } else {
            None
        }
    } else if is(0, "DROP") {
        if is(1, "INDEX") && is(2, "CONCURRENTLY") {
            Some("DROP INDEX CONCURRENTLY")
        } else if is(1, "DATABASE") {
            Some("DROP DATABASE")
        } else if is(1, "TABLESPACE") {
            Some("DROP TABLESPACE")
        } else if is(1, "SUBSCRIPTION") {
            Some("DROP SUBSCRIPTION")
        } else {
            None
        }
    } else if is(0, "ALTER") {
        if is(1, "SYSTEM") {
            Some("ALTER SYSTEM")
        } else if is(1, "DATABASE") && is(3, "SET") && is(4, "TABLESPACE") {
            Some("ALTER DATABASE SET TABLESPACE")
        } else if is(1, "TABLE")
            && is(t.len().saturating_sub(1), "CONCURRENTLY")
            && (2..t.len()).any(|i| is(i, "DETACH") && is(i + 1, "PARTITION"))
        {
            Some("ALTER TABLE ... DETACH CONCURRENTLY")
        } else {
            None
        }
    } else if is(0, "VACUUM") {
        Some("VACUUM")
    } else if is(0, "REINDEX") {
        let (kind, concurrently) = options(&t, 1);
        if concurrently || is(kind + 1, "CONCURRENTLY") {
            Some("REINDEX CONCURRENTLY")
        } else if is(kind, "SCHEMA") {
            Some("REINDEX SCHEMA")
        } else if is(kind, "DATABASE") {
            Some("REINDEX DATABASE")
        } else if is(kind, "SYSTEM") {
            Some("REINDEX SYSTEM")
        } else {
            None
        }
    } else if is(0, "CLUSTER") {
        // Without a table name CLUSTER walks every table, one transaction each.
        let (mut rest, _) = options(&t, 1);
        if is(rest, "VERBOSE") {
            rest += 1;
        }
        (rest >= t.len()).then_some("CLUSTER")
    } else if is(0, "DISCARD") && is(1, "ALL") {
        Some("DISCARD ALL")
    } else {
        None
    }
}

/// If the statement is top-level transaction control (BEGIN, START TRANSACTION, COMMIT, END,
/// ROLLBACK, ABORT, COMMIT/ROLLBACK PREPARED, PREPARE TRANSACTION), its name, else None.
/// SAVEPOINT / RELEASE / ROLLBACK TO SAVEPOINT are allowed inside a transaction: return None for
/// them.
pub(crate) fn transaction_control(statement: &str) -> Option<&'static str> {
    let t = tokens(statement, 3);
    let is = |i: usize, keyword: &str| is_keyword(&t, i, keyword);
    if is(0, "BEGIN") {
        (!is(1, "ATOMIC")).then_some("BEGIN")
    } else if is(0, "START") && is(1, "TRANSACTION") {
        Some("START TRANSACTION")
    } else if is(0, "COMMIT") {
        Some(if is(1, "PREPARED") { "COMMIT PREPARED" } else { "COMMIT" })
    } else if is(0, "END") {
        Some("END")
    } else if is(0, "ABORT") {
        Some("ABORT")
    } else if is(0, "ROLLBACK") {
        let to = if is(1, "WORK") || is(1, "TRANSACTION") { 2 } else { 1 };
        if is(1, "PREPARED") {
            Some("ROLLBACK PREPARED")
        } else if is(to, "TO") {
            None
        } else {
            Some("ROLLBACK")
        }
    } else if is(0, "PREPARE") && is(1, "TRANSACTION") {
        Some("PREPARE TRANSACTION")
    } else {
        None
    }
}

/// Whether a statement, run on its own outside a transaction block, leaves
/// something in its session for the statements after it, and what: `SET` or
/// `RESET` (a setting; not `SET LOCAL`, `SET TRANSACTION` or `SET
/// CONSTRAINTS`, which end with their transaction), `PREPARE`, `CREATE TEMP`
/// (a temporary object), `LISTEN`.
pub(crate) fn session_state(statement: &str) -> Option<&'static str> {
    let t = tokens(statement, 5);
    let is = |i: usize, keyword: &str| is_keyword(&t, i, keyword);
    if is(0, "SET") {
        (!(is(1, "LOCAL") || is(1, "TRANSACTION") || is(1, "CONSTRAINTS"))).then_some("SET")
    } else if is(0, "RESET") {
        Some("RESET")
    } else if is(0, "PREPARE") {
        (!is(1, "TRANSACTION")).then_some("PREPARE")
    } else if is(0, "CREATE") {
        // CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} ...
        let mut at = if is(1, "OR") && is(2, "REPLACE") { 3 } else { 1 };
        if is(at, "GLOBAL") || is(at, "LOCAL") {
            at += 1;
        }
        (is(at, "TEMP") || is(at, "TEMPORARY")).then_some("CREATE TEMP")
    } else if is(0, "LISTEN") {
        Some("LISTEN")
    } else {
        None
    }
}

fn statement<'a>(sql: &'a str, start: usize, end: usize, lines: &mut LineCounter) -> Option<Statement<'a>> {
    let text = sql.get(start..end)?.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
    if text.is_empty() {
        return None;
    }
    Some(Statement { text, line: lines.line_at(sql, start) })
}

/// Counts lines incrementally, since statement starts only move forward.
#[derive(Default)]
struct LineCounter {
    counted_to: usize,
    newlines: usize,
}

impl LineCounter {
    fn line_at(&mut self, sql: &str, at: usize) -> usize {
        let skipped = sql.as_bytes().get(self.counted_to..at).unwrap_or_default();
        self.newlines += skipped.iter().filter(|&&b| b == b'\n').count();
        self.counted_to = at;
        self.newlines + 1
    }
}

/// The statement being accumulated, with the nesting that keeps a `;` from ending it.
struct Open {
    start: usize,
    parens: usize,
    /// Open `BEGIN ATOMIC` blocks plus the `CASE`s inside them, all closed by `END`.
    atomic: usize,
    /// The first words, enough to recognise `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
    head: [Head; 4],
    words: usize,
    after_begin: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Head {
    Create,
    Or,
    Replace,
    Routine,
    Other,
}

impl Open {
    fn new(start: usize) -> Self {
        Self { start, parens: 0, atomic: 0, head: [Head::Other; 4], words: 0, after_begin: false }
    }

    fn can_end(&self) -> bool {
        self.parens == 0 && self.atomic == 0
    }

    fn is_routine(&self) -> bool {
        use Head::{Create, Or, Replace, Routine};
        matches!(self.head, [Create, Routine, _, _] | [Create, Or, Replace, Routine])
    }

    fn observe(&mut self, token: Token, sql: &str) {
        let after_begin = std::mem::take(&mut self.after_begin);
        match token.kind {
            Kind::Open => self.parens += 1,
            Kind::Close => self.parens = self.parens.saturating_sub(1),
            Kind::Word => {
                let word = sql.get(token.start..token.end).unwrap_or_default();
                if let Some(slot) = self.head.get_mut(self.words) {
                    *slot = Head::of(word);
                    self.words += 1;
                }
                // Only BEGIN followed by ATOMIC opens a block, so that a
                // routine merely named `begin` does not swallow the script.
                if self.parens == 0 && self.is_routine() {
                    if after_begin && word.eq_ignore_ascii_case("ATOMIC") {
                        self.atomic += 1;
                    } else if word.eq_ignore_ascii_case("BEGIN") {
                        self.after_begin = true;
                    } else if self.atomic > 0 && word.eq_ignore_ascii_case("CASE") {
                        self.atomic += 1;
                    } else if word.eq_ignore_ascii_case("END") {
                        self.atomic = self.atomic.saturating_sub(1);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Head {
    fn of(word: &str) -> Self {
        let is = |keyword: &str| word.eq_ignore_ascii_case(keyword);
        if is("CREATE") {
            Self::Create
        } else if is("OR") {
            Self::Or
        } else if is("REPLACE") {
            Self::Replace
        } else if is("FUNCTION") || is("PROCEDURE") {
            Self::Routine
        } else {
            Self::Other
        }
    }
}

/// The texts of the first `limit` tokens of a statement, comments skipped.
fn tokens(statement: &str, limit: usize) -> Vec<&str> {
    Lexer::new(statement)
        .take_while(|token| token.kind != Kind::Semicolon)
        .take(limit)
        .filter_map(|token| statement.get(token.start..token.end))
        .collect()
}

/// Every token of a statement with its byte offset, comments skipped: the
/// shape of a statement for readers such as the linter. Quoted identifiers and
/// literals come whole, quotes included.
pub(crate) fn tokens_at(statement: &str) -> Vec<(usize, &str)> {
    Lexer::new(statement)
        .filter_map(|token| statement.get(token.start..token.end).map(|t| (token.start, t)))
        .collect()
}

fn is_keyword(tokens: &[&str], i: usize, keyword: &str) -> bool {
    tokens.get(i).is_some_and(|t| t.eq_ignore_ascii_case(keyword))
}

/// Skips a parenthesised option list at `at`, returning the index after it
/// and whether it turned CONCURRENTLY on.
fn options(tokens: &[&str], at: usize) -> (usize, bool) {
    if !is_keyword(tokens, at, "(") {
        return (at, false);
    }
    let mut concurrently = false;
    for i in at + 1..tokens.len() {
        if is_keyword(tokens, i, ")") {
            return (i + 1, concurrently);
        }
        if is_keyword(tokens, i, "CONCURRENTLY") {
            let value = tokens.get(i + 1).map_or("", |v| v.trim_matches('\''));
            concurrently = !["false", "off", "0"].iter().any(|no| value.eq_ignore_ascii_case(no));
        }
    }
    (tokens.len(), concurrently)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// An unquoted identifier or keyword.
    Word,
    /// A string, quoted identifier or dollar-quoted body; also anything left
    /// unterminated, which then runs to the end of the input.
    Literal,
    Open,
    Close,
    Semicolon,
    /// Numbers, parameters, operators and other punctuation.
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Tokens of a script with whitespace and comments dropped. Works on bytes:
/// every byte that ends a token or a skip is ASCII, and bytes of multibyte
/// characters only ever occur inside words, literals and comments, so token
/// bounds are always character boundaries.
struct Lexer<'a> {
    sql: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str) -> Self {
        Self { sql, pos: 0 }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let bytes = self.sql.as_bytes();
        loop {
            let start = self.pos;
            let first = *bytes.get(start)?;
            let second = bytes.get(start + 1).copied();
            let (kind, end) = match first {
                _ if is_space(first) => {
                    self.pos += 1;
                    continue;
                }
                b'-' if second == Some(b'-') => {
                    self.pos = scan(bytes, start, |b| b != b'\n' && b != b'\r');
                    continue;
                }
                b'/' if second == Some(b'*') => match block_comment_end(bytes, start) {
                    Some(end) => {
                        self.pos = end;
                        continue;
                    }
                    None => (Kind::Literal, bytes.len()),
                },
                b'\'' | b'"' => (Kind::Literal, quote_end(bytes, start + 1, first, false)),
                b'$' => dollar(self.sql, start),
                b';' => (Kind::Semicolon, start + 1),
                b'(' => (Kind::Open, start + 1),
                b')' => (Kind::Close, start + 1),
                b'0'..=b'9' => {
                    (Kind::Other, scan(bytes, start, |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
                }
                _ if is_ident_start(first) => {
                    let end = scan(bytes, start + 1, is_ident_char);
                    // `E'...'` is an escape string, but `somee'...'` is a word then a string.
                    if end == start + 1 && first.eq_ignore_ascii_case(&b'e') && second == Some(b'\'') {
                        (Kind::Literal, quote_end(bytes, end + 1, b'\'', true))
                    } else {
                        (Kind::Word, end)
                    }
                }
                _ => (Kind::Other, start + 1),
            };
            self.pos = end;
            return Some(Token { kind, start, end });
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// PostgreSQL takes every byte with the high bit set as an identifier character.
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// `$` may continue an identifier (`a$b`), which keeps it from opening a dollar quote.
fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_tag_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

fn scan(bytes: &[u8], from: usize, keep: impl Fn(u8) -> bool) -> usize {
    bytes.get(from..).and_then(|rest| rest.iter().position(|&b| !keep(b))).map_or(bytes.len(), |n| from + n)
}

/// End of a quoted token whose body starts at `from`; a doubled quote is an
/// escaped quote, and with `backslash` so is any backslash-escaped byte.
fn quote_end(bytes: &[u8], from: usize, quote: u8, backslash: bool) -> usize {
    let mut i = from;
    while let Some(&b) = bytes.get(i) {
        let escaped = (backslash && b == b'\\') || (b == quote && bytes.get(i + 1) == Some(&quote));
        if escaped {
            i += 2;
        } else if b == quote {
            return i + 1;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// End of a nested block comment opened at `start`, if it is closed.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1usize;
    let mut i = start + 2;
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        if b == b'/' && next == Some(b'*') {
            depth += 1;
            i += 2;
        } else if b == b'*' && next == Some(b'/') {
            depth = depth.saturating_sub(1);
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// A `$` is a positional parameter (`$1`), the opening of a dollar quote
/// (`$$`, `$tag$`), or else a lone operator character.
fn dollar(sql: &str, start: usize) -> (Kind, usize) {
    let bytes = sql.as_bytes();
    let lone = (Kind::Other, start + 1);
    let tag_end = match bytes.get(start + 1) {
        Some(b) if b.is_ascii_digit() => {
            return (Kind::Other, scan(bytes, start + 1, |b| b.is_ascii_digit()));
        }
        Some(b'$') => start + 1,
        Some(&b) if is_ident_start(b) => scan(bytes, start + 1, is_tag_char),
        _ => return lone,
    };
    if bytes.get(tag_end) != Some(&b'$') {
        return lone;
    }
    let (Some(delimiter), Some(body)) = (sql.get(start..=tag_end), sql.get(tag_end + 1..)) else {
        return lone;
    };
    let end = body.find(delimiter).map_or(sql.len(), |n| tag_end + 1 + n + delimiter.len());
    (Kind::Literal, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_at_top_level_semicolons() {
        assert_eq!(
            texts("CREATE TABLE a (id int); INSERT INTO a VALUES (1);SELECT 1;"),
            ["CREATE TABLE a (id int)", "INSERT INTO a VALUES (1)", "SELECT 1"]
        );
    }

    #[test]
    fn keeps_final_statement_without_semicolon() {
        assert_eq!(texts("SELECT 1;\nSELECT 2  \n"), ["SELECT 1", "SELECT 2"]);
    }

    #[test]
    fn drops_empty_and_comment_only_statements() {
        assert_eq!(texts(";; -- nothing\n ; /* still nothing */ ;SELECT 1;\n-- trailing\n"), ["SELECT 1"]);
        assert!(split("").is_empty());
        assert!(split("  \n\t-- only a comment").is_empty());
    }

    #[test]
    fn skips_leading_comments_but_keeps_inner_and_trailing_ones() {
        assert_eq!(
            texts("-- header\n/* note */ SELECT /* inner */ 1 -- why\n;"),
            ["SELECT /* inner */ 1 -- why"]
        );
    }

    #[test]
    fn reports_line_of_first_token() {
        let statements = split("SELECT 1;\n\n-- comment\n  SELECT\n2;\r\nSELECT 3");
        let lines: Vec<usize> = statements.iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 4, 6]);
        assert_eq!(statements[1].text, "SELECT\n2");
    }

    #[test]
    fn single_quoted_string_hides_semicolons_and_doubled_quotes() {
        assert_eq!(
            texts("SELECT 'a;b', 'it''s; fine'; SELECT 2"),
            ["SELECT 'a;b', 'it''s; fine'", "SELECT 2"]
        );
    }

    #[test]
    fn escape_string_backslash_quote_does_not_close() {
        assert_eq!(
            texts(r"SELECT E'it\'s; fine', e'\\'; SELECT 2"),
            [r"SELECT E'it\'s; fine', e'\\'", "SELECT 2"]
        );
    }

    #[test]
    fn backslash_in_standard_string_is_literal() {
        assert_eq!(texts(r"SELECT 'C:\'; SELECT 2"), [r"SELECT 'C:\'", "SELECT 2"]);
    }

    #[test]
    fn word_ending_in_e_does_not_start_escape_string() {
        assert_eq!(texts(r"SELECT somee'\'; SELECT 2"), [r"SELECT somee'\'", "SELECT 2"]);
    }

    #[test]
    fn prefixed_strings_are_ordinary_quotes() {
        let sql = "SELECT U&'d\\0061;', B'1;0', X'1F;', N'a;b'; SELECT 2";
        assert_eq!(split(sql).len(), 2);
    }

    #[test]
    fn quoted_identifier_hides_semicolons_and_doubled_quotes() {
        assert_eq!(
            texts(r#"SELECT "a;b", "say ""hi"";" FROM t; SELECT 2"#),
            [r#"SELECT "a;b", "say ""hi"";" FROM t"#, "SELECT 2"]
        );
    }

    #[test]
    fn keeps_semicolons_inside_dollar_quoted_function_body() {
        let body = "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  PERFORM 1;\nEND;\n$$";
        assert_eq!(texts(&format!("{body};\nSELECT 2;")), [body, "SELECT 2"]);
    }

    #[test]
    fn tagged_dollar_quote_is_closed_only_by_its_own_tag() {
        let sql = "DO $a$ x; $b$ y; $$ z; $b$ $a$; SELECT 2";
        assert_eq!(texts(sql), ["DO $a$ x; $b$ y; $$ z; $b$ $a$", "SELECT 2"]);
    }

    #[test]
    fn positional_parameters_are_not_dollar_quotes() {
        assert_eq!(
            texts("PREPARE p AS SELECT $1, $2; EXECUTE p(1, 2); SELECT $1$"),
            ["PREPARE p AS SELECT $1, $2", "EXECUTE p(1, 2)", "SELECT $1$"]
        );
    }

    #[test]
    fn dollar_inside_identifier_is_not_a_quote() {
        assert_eq!(texts("SELECT a$b$; SELECT c$$; SELECT 2"), ["SELECT a$b$", "SELECT c$$", "SELECT 2"]);
    }

    #[test]
    fn lone_dollar_without_closing_tag_is_an_operator() {
        assert_eq!(texts("SELECT $x; SELECT 2"), ["SELECT $x", "SELECT 2"]);
    }

    #[test]
    fn line_comment_hides_semicolon() {
        assert_eq!(
            texts("SELECT 1 -- not here; \nFROM t; SELECT 2"),
            ["SELECT 1 -- not here; \nFROM t", "SELECT 2"]
        );
    }

    #[test]
    fn nested_block_comments_hide_semicolons() {
        assert_eq!(
            texts("SELECT /* a /* b */ ; still comment */ 1; SELECT 2"),
            ["SELECT /* a /* b */ ; still comment */ 1", "SELECT 2"]
        );
    }

    #[test]
    fn begin_atomic_body_is_one_statement() {
        let function = "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  INSERT INTO t VALUES (1);\n  SELECT 2;\nEND";
        assert_eq!(texts(&format!("{function};\nSELECT 3;")), [function, "SELECT 3"]);
    }

    #[test]
    fn begin_atomic_tracks_case_end() {
        let function = "create or replace procedure p() language sql begin atomic select case when true then 1 end; select (case 1 when 1 then 2 end); end";
        assert_eq!(texts(&format!("{function}; SELECT 3")), [function, "SELECT 3"]);
    }

    #[test]
    fn nested_begin_atomic_blocks_close_in_order() {
        let outer = "CREATE PROCEDURE p() BEGIN ATOMIC CREATE FUNCTION g() RETURNS int BEGIN ATOMIC SELECT 1; END; SELECT 2; END";
        assert_eq!(texts(&format!("{outer}; SELECT 3")), [outer, "SELECT 3"]);
    }

    #[test]
    fn atomic_keywords_are_whole_words_and_case_insensitive() {
        let function =
            r#"CREATE FUNCTION f() RETURNS int Begin Atomic SELECT backend, end_date, "END" FROM t; eNd"#;
        assert_eq!(texts(&format!("{function}; SELECT 2")), [function, "SELECT 2"]);
    }

    #[test]
    fn plain_begin_is_its_own_statement() {
        assert_eq!(
            texts("BEGIN; CREATE TABLE t (); BEGIN TRANSACTION; COMMIT; END;"),
            ["BEGIN", "CREATE TABLE t ()", "BEGIN TRANSACTION", "COMMIT", "END"]
        );
    }

    #[test]
    fn routine_named_begin_is_not_an_atomic_block() {
        assert_eq!(
            texts("CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 1; SELECT 2"),
            ["CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 1", "SELECT 2"]
        );
    }

    #[test]
    fn semicolon_inside_parentheses_does_not_split() {
        let rule =
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))";
        assert_eq!(texts(&format!("{rule}; SELECT 2")), [rule, "SELECT 2"]);
    }

    #[test]
    fn multibyte_text_is_sliced_at_char_boundaries() {
        assert_eq!(
            texts("SELECT 'héllo;日本'; SELECT ünïcode_col FROM \"tåble\";\u{3000}SELECT 'é'"),
            ["SELECT 'héllo;日本'", "SELECT ünïcode_col FROM \"tåble\"", "\u{3000}SELECT 'é'"]
        );
    }

    #[test]
    fn unterminated_string_is_one_statement() {
        assert_eq!(texts("SELECT 1; SELECT 'oops; SELECT 2;"), ["SELECT 1", "SELECT 'oops; SELECT 2;"]);
    }

    #[test]
    fn unterminated_quoted_identifier_and_escape_string_run_to_the_end() {
        assert_eq!(texts("SELECT \"a; b"), ["SELECT \"a; b"]);
        assert_eq!(texts(r"SELECT E'a\'; b"), [r"SELECT E'a\'; b"]);
    }

    #[test]
    fn unterminated_dollar_quote_is_one_statement() {
        assert_eq!(texts("SELECT 1; DO $x$ a; b; $y$"), ["SELECT 1", "DO $x$ a; b; $y$"]);
    }

    #[test]
    fn unterminated_block_comment_is_kept_as_a_statement() {
        assert_eq!(texts("SELECT 1; /* a /* b */ ; SELECT 2;"), ["SELECT 1", "/* a /* b */ ; SELECT 2;"]);
    }

    #[test]
    fn flags_create_index_concurrently() {
        assert_eq!(
            non_transactional("CREATE INDEX CONCURRENTLY i ON t (a)"),
            Some("CREATE INDEX CONCURRENTLY")
        );
        assert_eq!(
            non_transactional("create unique -- why\n index\n/* c */ concurrently ON t (a)"),
            Some("CREATE INDEX CONCURRENTLY")
        );
    }

    #[test]
    fn does_not_flag_plain_create_index() {
        assert_eq!(non_transactional("CREATE INDEX i ON t (a)"), None);
        assert_eq!(non_transactional("CREATE UNIQUE INDEX concurrently_idx ON t (a)"), None);
    }

    #[test]
    fn flags_drop_index_concurrently_only() {
        assert_eq!(non_transactional("DROP INDEX CONCURRENTLY IF EXISTS i"), Some("DROP INDEX CONCURRENTLY"));
        assert_eq!(non_transactional("DROP INDEX i"), None);
    }

    #[test]
    fn flags_reindex_concurrently_in_either_position() {
        assert_eq!(non_transactional("REINDEX INDEX CONCURRENTLY i"), Some("REINDEX CONCURRENTLY"));
        assert_eq!(
            non_transactional("REINDEX (VERBOSE, CONCURRENTLY) TABLE t"),
            Some("REINDEX CONCURRENTLY")
        );
        assert_eq!(non_transactional("REINDEX (CONCURRENTLY off) TABLE t"), None);
        assert_eq!(non_transactional("REINDEX TABLE t"), None);
    }

    #[test]
    fn flags_reindex_of_schema_database_and_system() {
        assert_eq!(non_transactional("REINDEX SCHEMA s"), Some("REINDEX SCHEMA"));
        assert_eq!(non_transactional("REINDEX (VERBOSE) DATABASE d"), Some("REINDEX DATABASE"));
        assert_eq!(non_transactional("reindex system"), Some("REINDEX SYSTEM"));
    }

    #[test]
    fn flags_vacuum_but_not_analyze() {
        assert_eq!(non_transactional("VACUUM"), Some("VACUUM"));
        assert_eq!(non_transactional("vacuum (analyze, verbose) t"), Some("VACUUM"));
        assert_eq!(non_transactional("ANALYZE t"), None);
    }

    #[test]
    fn flags_database_tablespace_system_and_subscription_commands() {
        let cases = [
            ("CREATE DATABASE d", "CREATE DATABASE"),
            ("DROP DATABASE IF EXISTS d", "DROP DATABASE"),
            ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
            ("CREATE TABLESPACE ts LOCATION '/x'", "CREATE TABLESPACE"),
            ("DROP TABLESPACE ts", "DROP TABLESPACE"),
            ("CREATE SUBSCRIPTION s CONNECTION 'c' PUBLICATION p", "CREATE SUBSCRIPTION"),
            ("DROP SUBSCRIPTION s", "DROP SUBSCRIPTION"),
            ("ALTER DATABASE d SET TABLESPACE ts", "ALTER DATABASE SET TABLESPACE"),
            ("DISCARD ALL", "DISCARD ALL"),
        ];
        for (sql, name) in cases {
            assert_eq!(non_transactional(sql), Some(name), "{sql}");
        }
        assert_eq!(non_transactional("ALTER DATABASE d SET search_path = s"), None);
        assert_eq!(non_transactional("DISCARD PLANS"), None);
    }

    #[test]
    fn flags_detach_partition_concurrently() {
        assert_eq!(
            non_transactional("ALTER TABLE m DETACH PARTITION m_2024 CONCURRENTLY"),
            Some("ALTER TABLE ... DETACH CONCURRENTLY")
        );
        assert_eq!(non_transactional("ALTER TABLE m DETACH PARTITION m_2024"), None);
    }

    #[test]
    fn flags_cluster_only_without_a_table() {
        assert_eq!(non_transactional("CLUSTER"), Some("CLUSTER"));
        assert_eq!(non_transactional("CLUSTER (VERBOSE)"), Some("CLUSTER"));
        assert_eq!(non_transactional("CLUSTER t USING t_idx"), None);
    }

    #[test]
    fn ignores_keywords_in_strings_comments_and_quoted_identifiers() {
        assert_eq!(non_transactional("SELECT 'VACUUM'"), None);
        assert_eq!(non_transactional("-- VACUUM\nSELECT 1"), None);
        assert_eq!(non_transactional("/* VACUUM */ SELECT 1"), None);
        assert_eq!(non_transactional("\"VACUUM\""), None);
        assert_eq!(non_transactional("-- note\nVACUUM t"), Some("VACUUM"));
        assert_eq!(non_transactional(""), None);
    }

    #[test]
    fn recognises_transaction_control() {
        let cases = [
            ("BEGIN", "BEGIN"),
            ("begin transaction isolation level serializable", "BEGIN"),
            ("START TRANSACTION", "START TRANSACTION"),
            ("COMMIT", "COMMIT"),
            ("commit and chain", "COMMIT"),
            ("END", "END"),
            ("ROLLBACK", "ROLLBACK"),
            ("ABORT", "ABORT"),
            ("COMMIT PREPARED 'x'", "COMMIT PREPARED"),
            ("ROLLBACK PREPARED 'x'", "ROLLBACK PREPARED"),
            ("PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"),
            ("/* c */ -- d\n Begin", "BEGIN"),
        ];
        for (sql, name) in cases {
            assert_eq!(transaction_control(sql), Some(name), "{sql}");
        }
    }

    #[test]
    fn allows_savepoints_inside_a_transaction() {
        for sql in [
            "SAVEPOINT s",
            "RELEASE SAVEPOINT s",
            "RELEASE s",
            "ROLLBACK TO SAVEPOINT s",
            "ROLLBACK TO s",
            "ROLLBACK WORK TO SAVEPOINT s",
        ] {
            assert_eq!(transaction_control(sql), None, "{sql}");
        }
    }

    #[test]
    fn blocks_and_routines_are_not_transaction_control() {
        for sql in [
            "DO $$ BEGIN PERFORM 1; END $$",
            "CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END",
            "BEGIN ATOMIC SELECT 1; END",
            "PREPARE q AS SELECT 1",
            "SELECT 'BEGIN'",
            "\"COMMIT\"",
            "",
        ] {
            assert_eq!(transaction_control(sql), None, "{sql}");
        }
    }

    /// Fragments chosen to collide with every lexical rule.
    const NOISE: &[&str] = &[
        "'", "\"", "$", "$$", "$a$", "$1", "-", "--", "/", "*", "/*", "*/", ";", "(", ")", "\\", "E'", "e",
        "a", "U&", "\n", "\r\n", " ", "é", "日本", "\u{3000}", "begin", "atomic", "end", "case", "create",
        "function", "or", "replace",
    ];

    fn noise() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(NOISE), 0..48).prop_map(|v| v.concat()),
            any::<String>(),
        ]
    }

    fn pieces(from: &'static [&'static str], len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(from), len).prop_map(|v| v.concat())
    }

    fn dollar_quoted() -> impl Strategy<Value = String> {
        let body = &[";", "'", "\"", "$", "$x$", "--", "/*", "a", "\n", "é", " "];
        (prop::sample::select(&["", "fn", "a_1", "é"][..]), pieces(body, 0..12))
            .prop_map(|(tag, body)| (format!("${tag}$"), body))
            .prop_filter("body must not close the quote early", |(delimiter, body)| {
                format!("{body}{delimiter}").find(delimiter.as_str()) == Some(body.len())
            })
            .prop_map(|(delimiter, body)| format!("{delimiter}{body}{delimiter}"))
    }

    /// A token that may contain semicolons but never ends a statement.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_é日][a-z0-9_é日$]{0,6}",
            "[0-9]{1,4}",
            "\\$[1-9]",
            prop::sample::select(&["+", "=", "<>", "::", ",", ".", "*", "(a; b)", "()"][..])
                .prop_map(String::from),
            pieces(&[";", "a", "''", "\"", "$$", "--", "/*", "*/", "é", " ", "\n", "\\"], 0..8)
                .prop_map(|s| format!("'{s}'")),
            pieces(&[";", "\\'", "\\\\", "''", "a", "é", "\""], 0..8).prop_map(|s| format!("E'{s}'")),
            pieces(&[";", "\"\"", "a", "'", "$$", "日"], 1..8).prop_map(|s| format!("\"{s}\"")),
            dollar_quoted(),
            pieces(&[";", "a", "/* ; */", "'", "\"", "$$", "--", "é", " "], 0..8)
                .prop_map(|s| format!("/* {s} */")),
            pieces(&[";", "a", "'", "\"", "$$", "/*", "é", " "], 0..8).prop_map(|s| format!("-- {s}\n")),
        ]
    }

    fn generated_statement() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => ("[a-z][a-z0-9_]{0,6}", prop::collection::vec(piece(), 0..8))
                .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect::<Vec<_>>().join(" ")),
            1 => prop::sample::select(&[
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END",
                "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (';'); END",
                "BEGIN",
                "DO $$ BEGIN PERFORM 1; END $$",
            ][..]).prop_map(String::from),
        ]
    }

    fn separator() -> impl Strategy<Value = &'static str> {
        prop::sample::select(
            &["", " ", "\n", "\r\n\r\n", " -- between; \n", "/* ; /* ; */ */", " ; ", "\t;\n"][..],
        )
    }

    proptest! {
        #[test]
        fn split_never_panics(sql in noise()) {
            let _ = split(&sql);
            for statement in split(&sql) {
                let _ = non_transactional(statement.text);
                let _ = transaction_control(statement.text);
            }
            let _ = non_transactional(&sql);
            let _ = transaction_control(&sql);
        }

        #[test]
        fn split_recovers_generated_statements(
            lead in separator(),
            statements in prop::collection::vec((generated_statement(), separator()), 1..6),
            final_semicolon in any::<bool>(),
        ) {
            let mut sql = String::from(lead);
            for (i, (statement, gap)) in statements.iter().enumerate() {
                sql.push_str(statement);
                if i + 1 < statements.len() || final_semicolon {
                    sql.push(';');
                    sql.push_str(gap);
                } else {
                    sql.push('\n');
                }
            }
            let expected: Vec<&str> = statements.iter().map(|(s, _)| s.trim_end()).collect();
            prop_assert_eq!(texts(&sql), expected);
        }

        #[test]
        fn statements_are_slices_of_the_input_in_order(sql in noise()) {
            let base = sql.as_ptr() as usize;
            let mut last_line = 1;
            let mut last_end = 0;
            for statement in split(&sql) {
                let start = statement.text.as_ptr() as usize - base;
                let end = start + statement.text.len();
                prop_assert!(start >= last_end && end <= sql.len());
                prop_assert_eq!(sql.get(start..end), Some(statement.text));
                prop_assert!(!statement.text.is_empty());
                prop_assert_eq!(statement.line, 1 + sql[..start].matches('\n').count());
                prop_assert!(statement.line >= last_line);
                last_line = statement.line;
                last_end = end;
            }
        }
    }

    #[test]
    fn statements_that_leave_session_state_are_named() {
        for (sql, need) in [
            ("SET search_path = app", Some("SET")),
            ("set session statement_timeout = 0", Some("SET")),
            ("SET ROLE admin", Some("SET")),
            ("RESET ALL", Some("RESET")),
            ("SET LOCAL lock_timeout = '1s'", None),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
            ("SET CONSTRAINTS ALL DEFERRED", None),
            ("PREPARE q AS SELECT 1", Some("PREPARE")),
            ("PREPARE TRANSACTION 'x'", None),
            ("CREATE TEMP TABLE t (x int)", Some("CREATE TEMP")),
            ("create or replace temporary view v as select 1", Some("CREATE TEMP")),
            ("CREATE GLOBAL TEMPORARY TABLE t (x int)", Some("CREATE TEMP")),
            ("CREATE TABLE temp (x int)", None),
            ("CREATE INDEX CONCURRENTLY i ON t (x)", None),
            ("LISTEN jobs", Some("LISTEN")),
            ("-- SET x\nSELECT 1", None),
        ] {
            assert_eq!(session_state(sql), need, "{sql}");
        }
    }
}
