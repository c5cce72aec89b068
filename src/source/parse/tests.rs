use super::*;

/// A minimal reversible body, for tests about the header.
const BODY: &str = "-- pgskein: up\nSELECT 1;\n-- pgskein: down\nSELECT 1;\n";

fn parse_ok(path: &str, text: &str) -> Revision {
    parse(path, text.as_bytes()).unwrap_or_else(|e| panic!("{path} should parse, got: {e}"))
}

fn parse_err(path: &str, text: &str) -> Error {
    match parse(path, text.as_bytes()) {
        Ok(r) => panic!("{path} should not parse, got {r:?}"),
        Err(e) => e,
    }
}

/// The line and kind of a `Error::Parse`, panicking on any other error.
fn parse_error(path: &str, text: &str) -> (Option<usize>, ParseErrorKind) {
    match parse_err(path, text) {
        Error::Parse { path: p, line, kind } => {
            assert_eq!(p, path, "the error names the file it came from");
            (line, kind)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// The line, operation and control flag of a `Error::NeedsNoTransaction`.
fn needs_no_transaction(path: &str, text: &str) -> (usize, &'static str, bool, String) {
    let err = parse_err(path, text);
    let message = err.to_string();
    match err {
        Error::NeedsNoTransaction { path: p, line, operation, control } => {
            assert_eq!(p, path, "the error names the file it came from");
            (line, operation, control, message)
        }
        other => panic!("expected NeedsNoTransaction, got {other:?}"),
    }
}

fn ids(list: &[RevisionId]) -> Vec<&str> {
    list.iter().map(RevisionId::as_str).collect()
}

/// Everything a revision carries, as text, so two parses can be compared whole.
fn everything(r: &Revision) -> String {
    let header = (&r.id, &r.revises, &r.depends_on, &r.branch, &r.message, &r.release, r.tx);
    let sections = (
        r.up.sql().unwrap(),
        r.up_line,
        r.down.as_ref().map(|b| b.sql().unwrap()),
        r.down_line,
        &r.verify,
        r.checksum,
    );
    format!("{header:?} {sections:?}")
}

// ----- what a well-formed file becomes -----

#[test]
fn minimal_file_is_a_transactional_root_named_after_its_file() {
    let r = parse_ok("migrations/0001_init.sql", "-- pgskein: up\nCREATE TABLE t (id int);\n");
    assert_eq!(r.id.as_str(), "0001_init");
    assert_eq!(r.origin, "migrations/0001_init.sql");
    assert!(r.revises.is_empty());
    assert!(r.depends_on.is_empty());
    assert_eq!(r.branch, None);
    assert_eq!(r.message, None);
    assert_eq!(r.release, None);
    assert_eq!(r.tx, Transaction::Transactional);
    assert_eq!(r.up.sql().unwrap().trim(), "CREATE TABLE t (id int);");
    assert_eq!(r.up_line, 2);
    assert!(r.down.is_none());
    assert_eq!(r.verify, None);
    assert_eq!(r.kind(), "sql");
}

#[test]
fn id_is_the_stem_of_the_last_path_component_with_either_separator() {
    assert_eq!(parse_ok("a/b/0007_x.sql", BODY).id.as_str(), "0007_x");
    assert_eq!(parse_ok("C:\\repo\\migrations\\0007_x.sql", BODY).id.as_str(), "0007_x");
    assert_eq!(parse_ok("0007_x.v2.sql", BODY).id.as_str(), "0007_x.v2");
}

#[test]
fn header_directives_fill_every_field() {
    let text = "\
-- pgskein: revises 0001_a
-- pgskein: depends-on 0002_b
-- pgskein: branch auth
-- pgskein: transaction none
-- pgskein: message   Create the users table  
-- pgskein: release 1.2.0
-- pgskein: up
CREATE INDEX CONCURRENTLY i ON t (c);
";
    let r = parse_ok("0003_c.sql", text);
    assert_eq!(ids(&r.revises), ["0001_a"]);
    assert_eq!(ids(&r.depends_on), ["0002_b"]);
    assert_eq!(r.branch.as_deref(), Some("auth"));
    assert_eq!(r.tx, Transaction::None);
    assert_eq!(r.message.as_deref(), Some("Create the users table"));
    assert_eq!(r.release, Some(semver::Version::new(1, 2, 0)));
    assert_eq!(r.up_line, 8);
}

#[test]
fn merge_revises_both_parents_in_the_order_written() {
    let r = parse_ok("0009_merge.sql", &format!("-- pgskein: revises 0006_auth, 0004_billing\n{BODY}"));
    assert_eq!(ids(&r.revises), ["0006_auth", "0004_billing"]);
    assert!(r.depends_on.is_empty());
}

#[test]
fn depends_on_list_accepts_commas_and_spaces() {
    let r = parse_ok("0009_x.sql", &format!("-- pgskein: depends-on 0001_a,0002_b  0003_c ,0004_d\n{BODY}"));
    assert_eq!(ids(&r.depends_on), ["0001_a", "0002_b", "0003_c", "0004_d"]);
    assert!(r.revises.is_empty());
}

#[test]
fn comments_and_blank_lines_may_precede_up() {
    let text = "\n-- Adds the users table.\n\n   -- indented comment\n-- pgskein: revises 0001_a\n\n-- pgskein: up\nSELECT 1;\n";
    let r = parse_ok("0002_b.sql", text);
    assert_eq!(ids(&r.revises), ["0001_a"]);
    assert_eq!(r.up_line, 8);
}

#[test]
fn directive_markers_tolerate_spacing_around_the_prefix() {
    let r = parse_ok("0002_b.sql", "--pgskein:revises 0001_a\n   --   pgskein:   up   \nSELECT 1;\n");
    assert_eq!(ids(&r.revises), ["0001_a"]);
    assert_eq!(r.up.sql().unwrap().trim(), "SELECT 1;");
}

#[test]
fn section_bodies_start_on_the_line_after_their_marker() {
    let text = "-- pgskein: message m\n-- pgskein: up\nSELECT 1;\nSELECT 2;\n-- pgskein: down\nSELECT 3;\n-- pgskein: verify\nSELECT true;\n";
    let r = parse_ok("0002_b.sql", text);
    assert_eq!(r.up_line, 3);
    assert_eq!(r.down_line, 6);
    assert_eq!(r.up.sql().unwrap().trim(), "SELECT 1;\nSELECT 2;");
    assert_eq!(r.down.as_ref().map(|d| d.sql().unwrap().trim()), Some("SELECT 3;"));
    assert_eq!(r.verify.as_deref().map(str::trim), Some("SELECT true;"));
}

#[test]
fn missing_down_section_makes_the_revision_irreversible() {
    let r = parse_ok("0002_b.sql", "-- pgskein: up\nDROP TABLE t;\n");
    assert!(r.down.is_none());
    assert!(r.down().is_none());
}

#[test]
fn empty_down_section_is_reversible_with_an_empty_body() {
    let r = parse_ok("0002_b.sql", "-- pgskein: up\nCREATE EXTENSION x;\n-- pgskein: down\n");
    let down = r.down.as_ref().expect("an empty down section still makes the revision reversible");
    assert_eq!(down.sql().unwrap().trim(), "");
    assert_eq!(r.down_line, 4);
}

#[test]
fn verify_section_with_only_comments_is_treated_as_absent() {
    let text =
        "-- pgskein: up\nSELECT 1;\n-- pgskein: verify\n-- nothing to check yet\n\n/* really nothing */\n";
    assert_eq!(parse_ok("0002_b.sql", text).verify, None);
}

#[test]
fn verify_section_with_a_query_is_kept() {
    let text = "-- pgskein: up\nSELECT 1;\n-- pgskein: verify\n-- the table exists\nSELECT to_regclass('t') IS NOT NULL;\n";
    let verify = parse_ok("0002_b.sql", text).verify.expect("verify kept");
    assert!(verify.contains("SELECT to_regclass('t') IS NOT NULL;"), "{verify:?}");
}

#[test]
fn verify_may_come_before_down() {
    let text = "-- pgskein: up\nSELECT 1;\n-- pgskein: verify\nSELECT true;\n-- pgskein: down\nSELECT 2;\n";
    let r = parse_ok("0002_b.sql", text);
    assert_eq!(r.verify.as_deref().map(str::trim), Some("SELECT true;"));
    assert_eq!(r.down.as_ref().map(|d| d.sql().unwrap().trim()), Some("SELECT 2;"));
    assert_eq!(r.down_line, 6);
}

#[test]
fn crlf_file_parses_to_the_same_revision_and_checksum_as_lf() {
    let lf = "-- pgskein: revises 0001_a\n-- pgskein: message m\n-- pgskein: up\nSELECT 1;\n-- pgskein: down\nSELECT 2;\n-- pgskein: verify\nSELECT true;\n";
    let crlf = lf.replace('\n', "\r\n");
    let a = parse_ok("0002_b.sql", lf);
    let b = parse_ok("0002_b.sql", &crlf);
    assert!(!b.up.sql().unwrap().contains('\r'), "bodies carry no carriage returns");
    assert_eq!(everything(&a), everything(&b));
    assert_eq!(a.checksum, b.checksum);
}

#[test]
fn byte_order_mark_is_ignored() {
    let text = "-- pgskein: revises 0001_a\n-- pgskein: up\nSELECT 1;\n";
    let plain = parse_ok("0002_b.sql", text);
    let bom = parse_ok("0002_b.sql", &format!("\u{feff}{text}"));
    assert_eq!(everything(&plain), everything(&bom));
    assert_eq!(plain.checksum, bom.checksum);
}

#[test]
fn checksum_covers_the_whole_file_including_the_header() {
    let a = parse_ok("0002_b.sql", &format!("-- pgskein: message one\n{BODY}"));
    let b = parse_ok("0002_b.sql", &format!("-- pgskein: message two\n{BODY}"));
    assert_ne!(a.checksum, b.checksum);
    assert_eq!(a.checksum, Checksum::of_sql(&format!("-- pgskein: message one\n{BODY}")));
}

// ----- transaction checks -----

#[test]
fn transaction_none_allows_create_index_concurrently() {
    let text = "-- pgskein: transaction none\n-- pgskein: up\nCREATE INDEX CONCURRENTLY i ON t (c);\n-- pgskein: down\nDROP INDEX CONCURRENTLY i;\n";
    let r = parse_ok("0004_idx.sql", text);
    assert_eq!(r.tx, Transaction::None);
    assert!(r.down.is_some());
}

#[test]
fn transaction_none_revision_may_contain_transaction_control() {
    let text = "-- pgskein: transaction none\n-- pgskein: up\nINSERT INTO t VALUES (1);\nCOMMIT;\n";
    assert_eq!(parse_ok("0004_x.sql", text).tx, Transaction::None);
}

#[test]
fn transactional_body_with_concurrently_is_refused_naming_the_line() {
    let text = "-- pgskein: up\nCREATE TABLE t (c int);\n\nCREATE INDEX CONCURRENTLY i\n    ON t (c);\n";
    let (line, operation, control, message) = needs_no_transaction("m/0003_x.sql", text);
    assert_eq!((line, operation, control), (4, "CREATE INDEX CONCURRENTLY", false));
    assert_eq!(
        message,
        "m/0003_x.sql:4: CREATE INDEX CONCURRENTLY cannot run inside the revision's transaction; \
         declare the revision `-- pgskein: transaction none`"
    );
}

#[test]
fn transactional_body_with_commit_is_refused_naming_the_line() {
    let text = "-- pgskein: message m\n-- pgskein: up\nINSERT INTO t VALUES (1);\n-- flush\nCOMMIT;\nINSERT INTO t VALUES (2);\n";
    let (line, operation, control, message) = needs_no_transaction("0003_x.sql", text);
    assert_eq!((line, operation, control), (5, "COMMIT", true));
    assert!(
        message.starts_with("0003_x.sql:5: COMMIT cannot run inside the revision's transaction"),
        "{message}"
    );
    assert!(message.contains("declare the revision `-- pgskein: transaction none`"), "{message}");
    assert!(message.contains("runs statement by statement"), "{message}");
}

#[test]
fn transaction_control_in_the_down_section_is_refused_at_its_file_line() {
    let text = "-- pgskein: up\nSELECT 1;\n-- pgskein: down\nSELECT 2;\n\n  BEGIN;\nSELECT 3;\n";
    let (line, operation, control, _) = needs_no_transaction("0003_x.sql", text);
    assert_eq!((line, operation, control), (6, "BEGIN", true));
}

#[test]
fn crlf_file_reports_the_same_statement_line_as_lf() {
    let lf = "-- pgskein: up\nSELECT 1;\n\nVACUUM t;\n";
    let (line, operation, ..) = needs_no_transaction("0003_x.sql", &lf.replace('\n', "\r\n"));
    assert_eq!((line, operation), (4, "VACUUM"));
}

#[test]
fn verify_section_is_checked_even_in_a_transaction_none_revision() {
    let text = "-- pgskein: transaction none\n-- pgskein: up\nVACUUM t;\n-- pgskein: verify\nSELECT true;\nVACUUM t;\n";
    let (line, operation, control, _) = needs_no_transaction("0003_x.sql", text);
    assert_eq!((line, operation, control), (6, "VACUUM", false));
}

#[test]
fn begin_atomic_function_body_is_accepted_in_a_transactional_revision() {
    let text = "\
-- pgskein: up
CREATE FUNCTION add_one(i int) RETURNS int
    LANGUAGE sql
BEGIN ATOMIC
    SELECT i + 1;
END;
SELECT add_one(1);
-- pgskein: down
DROP FUNCTION add_one(int);
";
    let r = parse_ok("0005_fn.sql", text);
    assert_eq!(r.tx, Transaction::Transactional);
}

#[test]
fn do_block_with_begin_and_end_is_accepted() {
    let text = "\
-- pgskein: up
DO $$
BEGIN
    RAISE NOTICE 'hello';
END
$$;
DO $body$ BEGIN PERFORM 1; END $body$;
";
    assert_eq!(parse_ok("0005_do.sql", text).tx, Transaction::Transactional);
}

#[test]
fn savepoints_are_allowed_in_a_transactional_revision() {
    let text = "-- pgskein: up\nSAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nRELEASE SAVEPOINT s;\n";
    assert_eq!(parse_ok("0005_sp.sql", text).tx, Transaction::Transactional);
}

// ----- every ParseErrorKind, with its line -----

#[test]
fn non_utf8_bytes_give_not_utf8_with_the_offset() {
    let mut bytes = b"-- pgskein: up\nSELECT '".to_vec();
    let offset = bytes.len();
    bytes.extend_from_slice(b"\xff';\n");
    let err = parse("0001_x.sql", &bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "0001_x.sql: the file is not valid UTF-8 (first bad byte at offset {offset}); save it as UTF-8"
        )
    );
    let Error::Parse { line, kind, .. } = err else { panic!("expected a parse error, got {err:?}") };
    assert_eq!((line, kind), (None, ParseErrorKind::NotUtf8 { offset }));
}

#[test]
fn empty_file_is_rejected_without_a_line() {
    assert_eq!(parse_error("0001_x.sql", ""), (None, ParseErrorKind::Empty));
    assert_eq!(parse_error("0001_x.sql", "\u{feff}  \r\n\n\t"), (None, ParseErrorKind::Empty));
    assert_eq!(
        parse_err("0001_x.sql", "").to_string(),
        "0001_x.sql: the file is empty; a revision needs at least a `-- pgskein: up` line"
    );
}

#[test]
fn file_name_without_sql_extension_is_a_bad_file_name() {
    let (line, kind) = parse_error("m/0001_x.txt", BODY);
    assert_eq!(line, None);
    let ParseErrorKind::BadFileName(reason) = kind else { panic!("expected BadFileName, got {kind:?}") };
    assert!(reason.contains("\"0001_x.txt\"") && reason.contains(".sql"), "{reason}");
}

#[test]
fn reserved_or_malformed_file_stems_are_bad_file_names() {
    for path in ["head.sql", "m/base.sql", "_x.sql", "a b.sql", ".sql"] {
        let (line, kind) = parse_error(path, BODY);
        assert_eq!(line, None, "{path}");
        assert!(matches!(kind, ParseErrorKind::BadFileName(_)), "{path}: {kind:?}");
    }
}

#[test]
fn file_without_up_section_is_missing_up() {
    let text = "-- pgskein: revises 0001_a\n-- only a header here\n";
    assert_eq!(parse_error("0002_b.sql", text), (None, ParseErrorKind::MissingUp));
}

#[test]
fn depends_on_with_underscore_is_an_unknown_directive() {
    let text = "-- pgskein: revises 0001_a\n-- pgskein: depends_on 0001_a\n-- pgskein: up\nSELECT 1;\n";
    assert_eq!(
        parse_error("0002_b.sql", text),
        (Some(2), ParseErrorKind::UnknownDirective("depends_on".into()))
    );
}

#[test]
fn unknown_directive_error_lists_the_known_ones() {
    let err = parse_err("m/0002_b.sql", "-- pgskein: revise 0001_a\n-- pgskein: up\nSELECT 1;\n");
    assert_eq!(
        err.to_string(),
        "m/0002_b.sql:1: unknown directive `revise`; known: revises, depends-on, branch, transaction, \
         message, release, repeatable, lock-timeout, statement-timeout, up, down, verify"
    );
}

#[test]
fn every_directive_the_unknown_directive_error_lists_is_accepted() {
    let listed = ParseErrorKind::UnknownDirective("x".into()).to_string();
    let known = listed.split("known: ").nth(1).expect("a list of known directives");
    let values = |name: &str| match name {
        "revises" => "0001_a",
        "depends-on" => "0001_b",
        "branch" => "auth",
        "transaction" => "none",
        "message" => "hello",
        "release" => "1.0.0",
        "lock-timeout" => "2s",
        "statement-timeout" => "1min",
        _ => "",
    };
    let mut text = String::new();
    // `repeatable` excludes the graph directives; it has its own tests.
    for name in known.split(", ").filter(|n| *n != "repeatable") {
        text.push_str(&format!("-- pgskein: {name} {}\n", values(name)));
        if matches!(name, "up" | "down" | "verify") {
            text.push_str("SELECT true;\n");
        }
    }
    let r = parse_ok("0002_c.sql", &text);
    assert!(r.down.is_some() && r.verify.is_some() && r.branch.is_some() && r.release.is_some());
}

#[test]
fn unknown_directive_inside_a_section_is_still_an_error() {
    let text = "-- pgskein: up\nSELECT 1;\n-- pgskein: donw\nSELECT 2;\n";
    assert_eq!(parse_error("0002_b.sql", text), (Some(3), ParseErrorKind::UnknownDirective("donw".into())));
}

#[test]
fn repeated_header_directive_is_a_duplicate_at_its_second_line() {
    let text =
        "-- pgskein: revises 0001_a\n-- pgskein: message m\n-- pgskein: revises 0001_b\n-- pgskein: up\n";
    assert_eq!(
        parse_error("0002_b.sql", text),
        (Some(3), ParseErrorKind::DuplicateDirective("revises".into()))
    );
    let text = "-- pgskein: transaction none\n-- pgskein: transaction none\n-- pgskein: up\n";
    assert_eq!(
        parse_error("0002_b.sql", text),
        (Some(2), ParseErrorKind::DuplicateDirective("transaction".into()))
    );
}

#[test]
fn repeated_section_marker_is_a_duplicate() {
    let text = "-- pgskein: up\nSELECT 1;\n-- pgskein: down\nSELECT 2;\n-- pgskein: up\nSELECT 3;\n";
    assert_eq!(parse_error("0002_b.sql", text), (Some(5), ParseErrorKind::DuplicateDirective("up".into())));
    let err = parse_err("0002_b.sql", text);
    assert_eq!(err.to_string(), "0002_b.sql:5: directive `up` appears more than once");
}

#[test]
fn header_directive_after_up_is_rejected() {
    let text = "-- pgskein: up\nSELECT 1;\n-- pgskein: message late\n";
    assert_eq!(
        parse_error("0002_b.sql", text),
        (Some(3), ParseErrorKind::DirectiveAfterUp("message".into()))
    );
    let text = "-- pgskein: up\nSELECT 1;\n-- pgskein: down\n-- pgskein: revises 0001_a\n";
    assert_eq!(
        parse_error("0002_b.sql", text),
        (Some(4), ParseErrorKind::DirectiveAfterUp("revises".into()))
    );
}

#[test]
fn sql_before_up_is_rejected_at_its_line() {
    let text = "-- pgskein: message m\n\nCREATE TABLE t (c int);\n-- pgskein: up\nSELECT 1;\n";
    assert_eq!(parse_error("0002_b.sql", text), (Some(3), ParseErrorKind::SqlBeforeUp));
}

#[test]
fn down_or_verify_before_up_is_a_section_before_up() {
    for section in ["down", "verify"] {
        let text =
            format!("-- pgskein: message m\n-- pgskein: {section}\nSELECT 1;\n-- pgskein: up\nSELECT 2;\n");
        assert_eq!(
            parse_error("0002_b.sql", &text),
            (Some(2), ParseErrorKind::SectionBeforeUp(section.into()))
        );
    }
}

#[test]
fn section_marker_with_a_value_is_a_bad_value() {
    let (line, kind) = parse_error("0002_b.sql", "-- pgskein: up now\nSELECT 1;\n");
    assert_eq!(line, Some(1));
    let ParseErrorKind::BadValue { directive, reason } = kind else {
        panic!("expected BadValue, got {kind:?}")
    };
    assert_eq!(directive, "up");
    assert!(reason.contains("\"now\""), "{reason}");
}

#[test]
fn transaction_value_other_than_none_is_a_bad_value() {
    let (line, kind) = parse_error(
        "0002_b.sql",
        "-- pgskein: message m\n-- pgskein: transaction serializable\n-- pgskein: up\n",
    );
    assert_eq!(line, Some(2));
    let ParseErrorKind::BadValue { directive, reason } = kind else {
        panic!("expected BadValue, got {kind:?}")
    };
    assert_eq!(directive, "transaction");
    assert!(reason.contains("expected `none`") && reason.contains("\"serializable\""), "{reason}");
}

#[test]
fn release_must_be_a_semantic_version() {
    let (line, kind) = parse_error("0002_b.sql", "-- pgskein: release 1.2\n-- pgskein: up\n");
    assert_eq!(line, Some(1));
    let ParseErrorKind::BadValue { directive, reason } = kind else {
        panic!("expected BadValue, got {kind:?}")
    };
    assert_eq!(directive, "release");
    assert!(reason.contains("\"1.2\" is not a semantic version"), "{reason}");
}

#[test]
fn invalid_id_in_revises_is_a_bad_value() {
    let (line, kind) = parse_error("0002_b.sql", "-- pgskein: revises 0001_a, ../0000_x\n-- pgskein: up\n");
    assert_eq!(line, Some(1));
    let ParseErrorKind::BadValue { directive, reason } = kind else {
        panic!("expected BadValue, got {kind:?}")
    };
    assert_eq!(directive, "revises");
    assert!(reason.contains("../0000_x"), "{reason}");
}

#[test]
fn revises_without_ids_is_a_bad_value() {
    let (line, kind) = parse_error("0002_b.sql", "-- pgskein: revises  , \n-- pgskein: up\n");
    assert_eq!(line, Some(1));
    assert_eq!(
        kind,
        ParseErrorKind::BadValue { directive: "revises", reason: "expected one or more revision ids".into() }
    );
}

#[test]
fn id_listed_twice_is_a_bad_value() {
    let (line, kind) = parse_error("0002_b.sql", "-- pgskein: depends-on 0001_a 0001_a\n-- pgskein: up\n");
    assert_eq!(line, Some(1));
    assert_eq!(
        kind,
        ParseErrorKind::BadValue { directive: "depends-on", reason: "0001_a is listed twice".into() }
    );
}

#[test]
fn revision_listing_itself_is_a_self_reference() {
    let text = "-- pgskein: revises 0001_a, 0002_b\n-- pgskein: up\n";
    assert_eq!(parse_error("0002_b.sql", text), (Some(1), ParseErrorKind::SelfReference("revises")));
    let text = "-- pgskein: revises 0001_a\n-- pgskein: depends-on 0002_b\n-- pgskein: up\n";
    assert_eq!(parse_error("0002_b.sql", text), (Some(2), ParseErrorKind::SelfReference("depends-on")));
}

#[test]
fn invalid_branch_label_is_a_bad_value_about_the_label() {
    let (line, kind) = parse_error("0002_b.sql", "-- pgskein: branch team@auth\n-- pgskein: up\n");
    assert_eq!(line, Some(1));
    let ParseErrorKind::BadValue { directive, reason } = kind else {
        panic!("expected BadValue, got {kind:?}")
    };
    assert_eq!(directive, "branch");
    assert!(reason.starts_with("branch label \"team@auth\""), "{reason}");
}

#[test]
fn reserved_branch_label_error_says_to_rename_the_label() {
    let (_, kind) = parse_error("0002_b.sql", "-- pgskein: branch head\n-- pgskein: up\n");
    let ParseErrorKind::BadValue { directive, reason } = kind else {
        panic!("expected BadValue, got {kind:?}")
    };
    assert_eq!(directive, "branch");
    assert!(!reason.contains("rename the file"), "the file name is fine; the label is the problem: {reason}");
}

#[test]
fn parse_error_message_names_the_file_and_line() {
    let err = parse_err("migrations/0002_b.sql", "-- pgskein: up\nSELECT 1;\n-- pgskein: branch late\n");
    assert_eq!(
        err.to_string(),
        "migrations/0002_b.sql:3: directive `branch` must come before `-- pgskein: up`"
    );
}

#[test]
fn directive_without_colon_is_an_error_not_a_comment() {
    let (line, kind) = parse_error("0002_b.sql", "-- pgskein revises 0001_a\n-- pgskein: up\nSELECT 1;\n");
    assert_eq!(line, Some(1));
    assert_eq!(kind, ParseErrorKind::MalformedDirective);
}

#[test]
fn a_repeatable_revision_has_no_parents() {
    let r = parse_ok(
        "R_views.sql",
        "-- pgskein: repeatable\n-- pgskein: up\nCREATE OR REPLACE VIEW v AS SELECT 1;\n",
    );
    assert!(r.repeatable);
    assert_eq!(r.kind(), "repeatable");
    let (_, kind) =
        parse_error("R_views.sql", "-- pgskein: repeatable\n-- pgskein: revises a\n-- pgskein: up\n");
    assert_eq!(
        kind,
        ParseErrorKind::BadValue {
            directive: "repeatable",
            reason: "a repeatable revision cannot also declare `revises`".into()
        }
    );
}
