//! Declaration checks, `depends-on` a backfill, and batch sizing: pure, no database.

use std::time::Duration;

use super::engine::{Sizer, quote_table};
use super::*;
use crate::MigrationSet;

const UPDATE: &str = "UPDATE items SET n = n + 1 WHERE id >= $1 AND id < $2";

fn file(id: &str, header: &str) -> (String, String) {
    (format!("{id}.sql"), format!("{header}-- pgskein: up\nSELECT 1;\n"))
}

fn set(files: &[(String, String)], backfills: Vec<Backfill>) -> Result<MigrationSet, Error> {
    let mut b = MigrationSet::builder();
    for (path, text) in files {
        b = b.file(path, text.as_bytes());
    }
    for bf in backfills {
        b = b.backfill(bf);
    }
    b.build()
}

fn fill(name: &str, after: &str) -> Backfill {
    Backfill::sql(name, after).table("items").key("id").statement(UPDATE)
}

fn two() -> Vec<(String, String)> {
    vec![file("0001_items", ""), file("0002_more", "-- pgskein: revises 0001_items\n")]
}

#[test]
fn backfill_is_listed_on_the_set_in_declaration_order() {
    let s = set(&two(), vec![fill("b_fill", "0002_more"), fill("a_fill", "0001_items")]).unwrap();
    let names: Vec<&str> = s.declared_backfills().iter().map(|b| b.name()).collect();
    assert_eq!(names, ["b_fill", "a_fill"]);
    assert_eq!(s.declared_backfills()[0].kind(), "sql");
}

#[test]
fn backfill_after_an_unknown_revision_is_refused() {
    let err = set(&two(), vec![fill("fill", "0009_nope")]).unwrap_err();
    assert!(
        matches!(&err, Error::BackfillUnknownRevision { name, revision } if name == "fill" && revision == "0009_nope"),
        "{err}"
    );
}

#[test]
fn backfill_declared_twice_is_refused() {
    let err = set(&two(), vec![fill("fill", "0001_items"), fill("fill", "0002_more")]).unwrap_err();
    assert!(matches!(&err, Error::DuplicateBackfill { name } if name == "fill"), "{err}");
}

#[test]
fn backfill_named_like_a_revision_is_refused() {
    let err = set(&two(), vec![fill("0002_more", "0001_items")]).unwrap_err();
    assert!(matches!(&err, Error::InvalidBackfill { name, .. } if name == "0002_more"), "{err}");
    assert!(err.to_string().contains("depends-on"), "{err}");
}

#[test]
fn backfill_with_a_name_that_is_not_an_id_is_refused() {
    let err = set(&two(), vec![fill("fill sha", "0001_items")]).unwrap_err();
    assert!(matches!(&err, Error::InvalidBackfill { .. }), "{err}");
}

#[test]
fn sql_backfill_without_the_key_range_parameters_is_refused() {
    let bf = Backfill::sql("fill", "0001_items").table("items").key("id").statement("UPDATE items SET n = 1");
    let err = set(&two(), vec![bf]).unwrap_err();
    assert!(err.to_string().contains("$1 and $2"), "{err}");
}

/// The reason of the `InvalidBackfill` error that building a set with `bf` gives.
fn invalid_reason(bf: Backfill) -> String {
    match set(&two(), vec![bf]).unwrap_err() {
        Error::InvalidBackfill { name, reason } => {
            assert_eq!(name, "fill");
            reason
        }
        other => panic!("expected InvalidBackfill, got {other}"),
    }
}

#[test]
fn sql_backfill_without_a_table_names_the_missing_call() {
    let reason = invalid_reason(Backfill::sql("fill", "0001_items").key("id").statement(UPDATE));
    assert_eq!(reason, r#"the SQL backfill has no table: call .table("...")"#);
    let reason = invalid_reason(Backfill::sql("fill", "0001_items").table(" ").key("id").statement(UPDATE));
    assert_eq!(reason, r#"the SQL backfill has no table: call .table("...")"#, "a blank table is none");
}

#[test]
fn sql_backfill_without_a_key_names_the_missing_call() {
    let reason = invalid_reason(Backfill::sql("fill", "0001_items").table("items").statement(UPDATE));
    assert_eq!(reason, r#"the SQL backfill has no key column: call .key("...")"#);
}

#[test]
fn sql_backfill_without_a_statement_names_the_missing_call() {
    let reason = invalid_reason(Backfill::sql("fill", "0001_items").table("items").key("id"));
    assert_eq!(reason, r#"the SQL backfill has no statement: call .statement("...")"#);
}

#[test]
fn sql_backfill_error_names_the_backfill() {
    let err = set(&two(), vec![Backfill::sql("fill", "0001_items")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"backfill "fill" is invalid: the SQL backfill has no table: call .table("...")"#
    );
}

#[test]
fn sql_builder_methods_fill_a_sql_backfill_in_any_order() {
    let bf = Backfill::sql("fill", "0001_items").statement(UPDATE).key("id").table("items");
    assert_eq!(bf.table_name(), Some("items"));
    assert!(matches!(&bf.kind, Kind::Sql { key, sql } if key == "id" && sql == UPDATE));
    set(&two(), vec![bf]).unwrap();
}

struct NoRows;

#[async_trait::async_trait]
impl BackfillStep for NoRows {
    async fn batch(&self, _: &crate::rust::Conn<'_>, _: Option<&str>, _: u64) -> Result<Batch, BoxError> {
        Ok(Batch::done(0))
    }
}

#[test]
fn key_and_statement_are_refused_on_a_rust_backfill() {
    let rust = || Backfill::rust("fill", "0001_items", NoRows);
    set(&two(), vec![rust().table("items")]).expect("a Rust backfill may name its table");
    let reason = invalid_reason(rust().key("id"));
    assert_eq!(reason, "a Rust backfill has no key: .key(..) applies to SQL backfills only (Backfill::sql)");
    let reason = invalid_reason(rust().statement(UPDATE));
    assert_eq!(
        reason,
        "a Rust backfill has no statement: .statement(..) applies to SQL backfills only (Backfill::sql)"
    );
}

#[test]
fn depends_on_a_backfill_orders_after_its_revision_and_is_remembered() {
    let files = [
        file("0001_items", ""),
        file("0002_other", ""),
        file("0003_not_null", "-- pgskein: revises 0002_other\n-- pgskein: depends-on fill_n\n"),
    ];
    let mut builder =
        MigrationSet::builder().allow_multiple_heads(true).backfill(fill("fill_n", "0001_items"));
    for (path, text) in &files {
        builder = builder.file(path, text.as_bytes());
    }
    let s = builder.build().unwrap();
    let g = &s.graph;
    let i = g.get("0003_not_null").unwrap();
    assert_eq!(g.backfill_deps[i], ["fill_n"]);
    assert!(g.parents[i].contains(&g.get("0001_items").unwrap()), "ordered after the backfill's revision");
    let deps: Vec<&str> = s.get("0003_not_null").unwrap().depends_on().iter().map(|d| d.as_str()).collect();
    assert_eq!(deps, ["0001_items"], "the ledger records revision parents only");
    assert!(g.backfill_deps[g.get("0001_items").unwrap()].is_empty());
}

#[test]
fn depends_on_an_undeclared_name_is_still_an_unknown_parent() {
    let files = vec![
        file("0001_items", ""),
        file("0002_x", "-- pgskein: revises 0001_items\n-- pgskein: depends-on fill_n\n"),
    ];
    let err = set(&files, vec![fill("other", "0001_items")]).unwrap_err();
    assert!(matches!(&err, Error::UnknownParent { .. }), "{err}");
}

#[test]
fn depends_on_a_backfill_of_a_later_revision_is_a_cycle() {
    let files = vec![
        file("0001_items", "-- pgskein: depends-on fill_n\n"),
        file("0002_x", "-- pgskein: revises 0001_items\n"),
    ];
    let err = set(&files, vec![fill("fill_n", "0002_x")]).unwrap_err();
    assert!(matches!(&err, Error::Cycle { .. }), "{err}");
}

fn sizer(target_ms: u64) -> Sizer {
    let bf = fill("f", "x").target_batch_duration(Duration::from_millis(target_ms)).initial_batch_size(1_000);
    Sizer::new(&bf.opts, None)
}

#[test]
fn batch_size_grows_at_most_by_the_growth_factor() {
    let mut s = sizer(100);
    s.observe(1_000, Duration::from_millis(1));
    assert_eq!(s.size, 2_000);
    s.observe(2_000, Duration::from_millis(2));
    assert_eq!(s.size, 4_000);
}

#[test]
fn batch_size_shrinks_at_once_after_a_slow_batch() {
    let mut s = sizer(100);
    s.observe(1_000, Duration::from_millis(1_000));
    assert_eq!(s.size, 100);
}

#[test]
fn batch_size_converges_on_the_target_for_a_steady_cost() {
    let mut s = sizer(20);
    // 10 µs per row: the target of 20 ms is 2,000 rows.
    for _ in 0..20 {
        let took = Duration::from_micros(10 * s.size);
        s.observe(s.size, took);
    }
    assert!((1_900..=2_100).contains(&s.size), "{}", s.size);
}

#[test]
fn statement_timeout_halves_the_batch() {
    let mut s = sizer(100);
    s.halve();
    assert_eq!(s.size, 500);
}

#[test]
fn rows_per_second_caps_the_batch_at_one_target_of_rows() {
    let bf = fill("f", "x").rows_per_second(5_000).initial_batch_size(100_000);
    let s = Sizer::new(&bf.opts, None);
    assert_eq!(s.size, 500);
}

#[test]
fn recorded_batch_size_is_where_a_resumed_backfill_starts() {
    let bf = fill("f", "x");
    assert_eq!(Sizer::new(&bf.opts, Some(42_000)).size, 42_000);
}

#[test]
fn table_names_are_quoted_part_by_part() {
    assert_eq!(quote_table("items"), "\"items\"");
    assert_eq!(quote_table("app.items"), "\"app\".\"items\"");
    assert_eq!(quote_table("Weird\"Name"), "\"Weird\"\"Name\"");
}

#[test]
fn a_lazy_set_checks_its_backfill_declarations_at_once() {
    // A lazy set parses its files when first needed, but its backfills are
    // checked when it is made: a run at head would otherwise never see them.
    let lazy = |bf: Backfill| {
        let mut b = MigrationSet::builder();
        for (path, text) in two() {
            b = b.file(&path, text.as_bytes());
        }
        b.backfill(bf).lazy()
    };
    let err = lazy(Backfill::sql("fill", "0001_items").key("id").statement(UPDATE)).unwrap_err();
    assert!(matches!(&err, Error::InvalidBackfill { name, .. } if name == "fill"), "{err}");
    let err = lazy(fill("fill", "0009_unknown")).unwrap_err();
    assert!(
        matches!(&err, Error::BackfillUnknownRevision { revision, .. } if revision == "0009_unknown"),
        "{err}"
    );
    assert!(lazy(fill("fill", "0002_more")).is_ok());
}
