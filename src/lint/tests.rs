use super::*;

const FIXTURE: [(&str, &str); 4] = [
    ("tests/fixtures/lint/0001_tables.sql", include_str!("../../tests/fixtures/lint/0001_tables.sql")),
    ("tests/fixtures/lint/0002_unsafe.sql", include_str!("../../tests/fixtures/lint/0002_unsafe.sql")),
    ("tests/fixtures/lint/0003_safe.sql", include_str!("../../tests/fixtures/lint/0003_safe.sql")),
    (
        "tests/fixtures/lint/0004_safe_index.sql",
        include_str!("../../tests/fixtures/lint/0004_safe_index.sql"),
    ),
];

fn fixture() -> MigrationSet {
    FIXTURE
        .iter()
        .fold(MigrationSet::builder(), |b, (path, text)| b.file(path, text.as_bytes()))
        .build()
        .unwrap()
}

fn lint_one(up: &str) -> Vec<(usize, &'static str)> {
    let text = format!("-- pgskein: up\n{up}");
    let set = MigrationSet::builder().file("0001_x.sql", text.as_bytes()).build().unwrap();
    set.lint().iter().map(|w| (w.line, w.rule.name())).collect()
}

/// (line, rule) for every `-- expect: <rule>` marker of a fixture file.
fn expected(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((_, rule)) = line.split_once("-- expect: ") {
            out.push((i + 1, rule.trim().to_owned()));
        }
    }
    out
}

#[test]
fn flags_each_unsafe_pattern_of_the_fixture_on_its_line() {
    let warnings = fixture().lint();
    let unsafe_file = FIXTURE[1];
    let got: Vec<(usize, String)> = warnings
        .iter()
        .filter(|w| w.path == unsafe_file.0)
        .map(|w| (w.line, w.rule.name().to_owned()))
        .collect();
    assert_eq!(got, expected(unsafe_file.1));
}

#[test]
fn every_rule_is_exercised_by_the_fixture() {
    let warnings = fixture().lint();
    for rule in LintRule::ALL {
        assert!(warnings.iter().any(|w| w.rule == rule), "no fixture statement flags {rule}");
    }
}

#[test]
fn stays_quiet_on_the_safe_rewrites_and_on_tables_created_in_the_same_revision() {
    let warnings = fixture().lint();
    let elsewhere: Vec<String> =
        warnings.iter().filter(|w| w.path != FIXTURE[1].0).map(ToString::to_string).collect();
    assert!(elsewhere.is_empty(), "{elsewhere:#?}");
}

#[test]
fn warnings_name_the_revision_table_and_safe_alternative() {
    let warnings = fixture().lint();
    let w = warnings.iter().find(|w| w.rule == LintRule::SetNotNull).unwrap();
    assert_eq!(w.revision.as_str(), "0002_unsafe");
    assert_eq!(w.table, "orders");
    assert!(w.message.contains("orders.customer_id"), "{}", w.message);
    assert!(w.suggestion.contains("NOT VALID"));
    let shown = w.to_string();
    assert!(shown.starts_with("tests/fixtures/lint/0002_unsafe.sql:10: SET NOT NULL"), "{shown}");
}

#[test]
fn stable_defaults_such_as_now_do_not_rewrite_and_are_not_flagged() {
    assert!(lint_one("ALTER TABLE t ADD COLUMN at timestamptz NOT NULL DEFAULT now();").is_empty());
    assert!(lint_one("ALTER TABLE t ADD COLUMN at timestamptz DEFAULT CURRENT_TIMESTAMP;").is_empty());
    assert_eq!(
        lint_one("ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp();"),
        [(2, "volatile-default")]
    );
}

#[test]
fn identity_and_stored_generated_columns_rewrite_the_table() {
    assert_eq!(
        lint_one("ALTER TABLE t ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;"),
        [(2, "volatile-default")]
    );
    assert_eq!(
        lint_one("ALTER TABLE t ADD COLUMN n int GENERATED ALWAYS AS (a + 1) STORED;"),
        [(2, "volatile-default")]
    );
}

#[test]
fn reports_the_line_of_the_clause_inside_a_multi_line_statement() {
    let got = lint_one("ALTER TABLE t\n  ADD COLUMN a int,\n  DROP COLUMN b,\n  ALTER COLUMN c TYPE text;");
    assert_eq!(got, [(4, "drop-column"), (5, "alter-column-type")]);
}

#[test]
fn allow_comments_silence_only_the_named_rules() {
    let sql = "-- pgskein-lint: allow drop-column\nALTER TABLE t DROP COLUMN a, ALTER COLUMN b TYPE text;";
    assert_eq!(lint_one(sql), [(3, "alter-column-type")]);
    assert!(lint_one("-- why: tiny table\n-- pgskein-lint: allow all\nDROP TABLE t;").is_empty());
    assert!(lint_one("DROP TABLE t; -- pgskein-lint: allow drop-table").is_empty());
    assert_eq!(lint_one("DROP TABLE t; -- pgskein-lint: allow drop-column"), [(2, "drop-table")]);
}

#[test]
fn strings_comments_and_quoted_names_do_not_confuse_it() {
    assert!(lint_one("SELECT 'ALTER TABLE t DROP COLUMN a';").is_empty());
    assert!(lint_one("/* DROP TABLE t; */ SELECT 1;").is_empty());
    assert_eq!(lint_one("CREATE INDEX i ON \"Weird \"\"Name\"\" \" (a);").len(), 1);
    assert!(lint_one("CREATE TABLE \"T\" (a int); CREATE INDEX i ON \"T\" (a);").is_empty());
    assert_eq!(lint_one("CREATE TABLE \"T\" (a int); CREATE INDEX i ON t (a);").len(), 1);
}

#[test]
fn drop_table_lists_flag_each_existing_table_but_not_one_created_here() {
    let got = lint_one("CREATE TABLE fresh (a int);\nDROP TABLE IF EXISTS old_a, fresh, old_b CASCADE;");
    assert_eq!(got, [(3, "drop-table"), (3, "drop-table")]);
    let warnings = MigrationSet::builder()
        .file("0001_x.sql", b"-- pgskein: up\nDROP TABLE a, b;\n")
        .build()
        .unwrap()
        .lint();
    let tables: Vec<&str> = warnings.iter().map(|w| w.table.as_str()).collect();
    assert_eq!(tables, ["a", "b"]);
}

#[test]
fn rust_revisions_and_down_bodies_are_not_linted() {
    let sql = b"-- pgskein: up\nSELECT 1;\n-- pgskein: down\nDROP TABLE t;\n";
    let rust = crate::rust::RustRevision::from_fn("0002_rust", "1", |_| Box::pin(async { Ok(()) }))
        .revises(["0001_x"]);
    let set = MigrationSet::builder().file("0001_x.sql", sql).rust(rust).build().unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.lint().is_empty());
}

#[test]
fn rule_names_round_trip_and_unknown_names_are_refused() {
    for rule in LintRule::ALL {
        assert_eq!(rule.name().parse::<LintRule>(), Ok(rule));
    }
    assert!("drop-everything".parse::<LintRule>().unwrap_err().contains("create-index"));
}
