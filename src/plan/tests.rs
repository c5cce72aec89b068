use super::*;
use crate::graph::SetDigest;
use crate::migration::Revision;
use crate::state::{BlockedState, Record as Row, RowState};

use crate::graph::tests::{on_branch, rev, revision};

const IRREVERSIBLE: &str = "-- pgskein: up\nSELECT 1;\n";

fn irreversible(id: &str, revises: &[&str]) -> Revision {
    revision(id, revises, &[], "", IRREVERSIBLE)
}

fn graph(revs: Vec<Revision>) -> Graph {
    Graph::build(revs, true).unwrap_or_else(|e| panic!("graph should build: {e}"))
}

/// a <- b <- c <- d
fn linear() -> Graph {
    graph(vec![rev("a", &[], &[]), rev("b", &["a"], &[]), rev("c", &["b"], &[]), rev("d", &["c"], &[])])
}

/// a, then main (b) and auth (x <- y) branches: two heads, b and y.
fn two_branches() -> Graph {
    graph(vec![
        rev("a", &[], &[]),
        rev("b", &["a"], &[]),
        on_branch("auth", "x", &["a"]),
        rev("y", &["x"], &[]),
    ])
}

fn applied(g: &Graph, ids: &[&str]) -> Vec<bool> {
    let mut set = vec![false; g.len()];
    for id in ids {
        set[g.get(id).unwrap_or_else(|| panic!("{id} is in the graph"))] = true;
    }
    set
}

fn target(text: &str) -> Target {
    text.parse().unwrap_or_else(|e| panic!("{text:?} should parse as a target: {e}"))
}

/// The plan as `up a` / `down b` lines.
fn planned(g: &Graph, applied_ids: &[&str], to: &str, mode: Mode) -> Result<Vec<String>, Error> {
    let steps = plan(g, &applied(g, applied_ids), &target(to), mode)?;
    Ok(steps.iter().map(|&(i, d)| format!("{d} {}", g.revs[i].id)).collect())
}

fn planned_ok(g: &Graph, applied_ids: &[&str], to: &str, mode: Mode) -> Vec<String> {
    planned(g, applied_ids, to, mode).unwrap_or_else(|e| panic!("{mode:?} to {to} should plan: {e}"))
}

fn planned_err(g: &Graph, applied_ids: &[&str], to: &str, mode: Mode) -> Error {
    match planned(g, applied_ids, to, mode) {
        Ok(steps) => panic!("{mode:?} to {to} should fail, planned {steps:?}"),
        Err(e) => e,
    }
}

fn ids(list: &[RevisionId]) -> Vec<&str> {
    list.iter().map(RevisionId::as_str).collect()
}

fn row(id: &str, revises: &[&str], checksum: &str) -> Row {
    Row {
        id: id.to_owned(),
        revises: revises.iter().map(|s| s.to_string()).collect(),
        depends_on: Vec::new(),
        checksum: checksum.to_owned(),
        state: RowState::Applied,
        statement: None,
        last_error: None,
        applied_at: "2024-01-01 00:00:00+00".to_owned(),
        invalid_before: Vec::new(),
    }
}

/// The applied row the code itself would have written for `id`.
fn row_of(g: &Graph, id: &str) -> Row {
    let r = &g.revs[g.get(id).unwrap()];
    let mut row = row(id, &[], &r.checksum.to_hex());
    row.revises = r.revises.iter().map(ToString::to_string).collect();
    row.depends_on = r.depends_on.iter().map(ToString::to_string).collect();
    row
}

fn rows_of(g: &Graph, ids: &[&str]) -> Vec<Row> {
    ids.iter().map(|id| row_of(g, id)).collect()
}

fn marked<'g>(g: &'g Graph, set: &[bool]) -> Vec<&'g str> {
    (0..g.len()).filter(|&i| set[i]).map(|i| g.revs[i].id.as_str()).collect()
}

// ----- targets -----

#[test]
fn targets_parse_from_their_documented_spellings() {
    assert_eq!(target("head"), Target::Head);
    assert_eq!(target("heads"), Target::Heads);
    assert_eq!(target("base"), Target::Base);
    assert_eq!(target("+2"), Target::Relative(2));
    assert_eq!(target("-3"), Target::Relative(-3));
    assert_eq!(target("auth@head"), Target::BranchHead("auth".into()));
    assert_eq!(target("0003_enh"), Target::Revision("0003_enh".into()));
    assert_eq!(target("  head \n"), Target::Head);
}

#[test]
fn malformed_targets_are_unknown() {
    for text in ["", "   ", "+0", "-0", "+x", "-", "+1.5", "@head", "auth@tail", "auth@head@head"] {
        match text.parse::<Target>() {
            Err(Error::UnknownTarget { target }) => assert_eq!(target, text),
            other => panic!("{text:?} should be an unknown target, got {other:?}"),
        }
    }
}

#[test]
fn targets_display_as_they_parse() {
    for text in ["head", "heads", "base", "+2", "-3", "auth@head", "0003_enh"] {
        assert_eq!(target(text).to_string(), text);
    }
}

#[test]
fn unknown_target_message_lists_the_accepted_forms() {
    let err = "@head".parse::<Target>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown target \"@head\": expected head, heads, base, +N, -N, <branch>@head, or a revision id or unique prefix"
    );
}

// ----- upgrade -----

#[test]
fn upgrade_to_head_applies_everything_pending_in_canonical_order() {
    let g = linear();
    assert_eq!(planned_ok(&g, &[], "head", Mode::Upgrade), ["up a", "up b", "up c", "up d"]);
    assert_eq!(planned_ok(&g, &["a", "b"], "head", Mode::Upgrade), ["up c", "up d"]);
}

#[test]
fn upgrade_to_applied_revision_is_empty() {
    let g = linear();
    assert!(planned_ok(&g, &["a", "b", "c"], "b", Mode::Upgrade).is_empty());
    assert!(planned_ok(&g, &["a", "b", "c", "d"], "head", Mode::Upgrade).is_empty());
}

#[test]
fn upgrade_to_base_or_backwards_removes_nothing() {
    let g = linear();
    assert!(planned_ok(&g, &["a", "b", "c"], "base", Mode::Upgrade).is_empty());
    assert!(planned_ok(&g, &["a", "b", "c"], "a", Mode::Upgrade).is_empty());
}

#[test]
fn upgrade_to_revision_applies_only_its_ancestors_across_depends_on() {
    let g = graph(vec![
        rev("a", &[], &[]),
        rev("b", &["a"], &[]),
        rev("x", &["a"], &[]),
        rev("y", &["x"], &[]),
        rev("c", &["b"], &["x"]),
    ]);
    assert_eq!(planned_ok(&g, &["a"], "c", Mode::Upgrade), ["up b", "up x", "up c"]);
}

#[test]
fn heads_target_applies_every_branch() {
    let g = two_branches();
    assert_eq!(planned_ok(&g, &["a"], "heads", Mode::Upgrade), ["up b", "up x", "up y"]);
}

#[test]
fn branch_head_target_applies_that_branch_only() {
    let g = two_branches();
    assert_eq!(planned_ok(&g, &[], "auth@head", Mode::Upgrade), ["up a", "up x", "up y"]);
}

#[test]
fn plus_n_applies_the_next_n_in_canonical_order() {
    let g = two_branches();
    assert_eq!(planned_ok(&g, &["a"], "+2", Mode::Upgrade), ["up b", "up x"]);
}

#[test]
fn plus_n_beyond_the_end_applies_what_remains() {
    let g = linear();
    assert_eq!(planned_ok(&g, &["a", "b"], "+10", Mode::Upgrade), ["up c", "up d"]);
}

// ----- downgrade -----

#[test]
fn minus_n_removes_the_last_n_applied_in_reverse_order() {
    let g = two_branches();
    assert_eq!(planned_ok(&g, &["a", "b", "x", "y"], "-3", Mode::Downgrade), ["down y", "down x", "down b"]);
    assert_eq!(planned_ok(&g, &["a", "b"], "-5", Mode::Downgrade), ["down b", "down a"]);
}

#[test]
fn relative_target_in_the_wrong_direction_is_refused() {
    let g = linear();
    for (to, mode) in [("+1", Mode::Downgrade), ("-1", Mode::Upgrade)] {
        let err = planned_err(&g, &["a", "b"], to, mode);
        let Error::UnknownTarget { target } = &err else { panic!("expected UnknownTarget, got {err:?}") };
        assert!(target.starts_with(to) && target.contains("not a"), "{target}");
    }
}

#[test]
fn downgrade_to_base_removes_everything_in_reverse_canonical_order() {
    let g = two_branches();
    assert_eq!(
        planned_ok(&g, &["a", "b", "x", "y"], "base", Mode::Downgrade),
        ["down y", "down x", "down b", "down a"]
    );
}

#[test]
fn downgrade_to_revision_removes_its_descendants_across_depends_on() {
    // c revises b and depends on x.
    let g = graph(vec![
        rev("a", &[], &[]),
        rev("b", &["a"], &[]),
        rev("x", &["a"], &[]),
        rev("c", &["b"], &["x"]),
    ]);
    let all = ["a", "b", "x", "c"];
    assert_eq!(planned_ok(&g, &all, "a", Mode::Downgrade), ["down c", "down x", "down b"]);
    assert_eq!(planned_ok(&g, &all, "b", Mode::Downgrade), ["down c"]);
    // x is not a descendant of b, but c depends on x: downgrading to x removes c only.
    assert_eq!(planned_ok(&g, &all, "x", Mode::Downgrade), ["down c"]);
}

#[test]
fn downgrade_to_revision_keeps_unrelated_branches() {
    let g = two_branches();
    assert_eq!(planned_ok(&g, &["a", "b", "x", "y"], "x", Mode::Downgrade), ["down y"]);
}

#[test]
fn downgrade_to_unapplied_revision_is_refused() {
    let g = linear();
    let err = planned_err(&g, &["a", "b"], "c", Mode::Downgrade);
    let Error::TargetNotApplied { id } = &err else { panic!("expected TargetNotApplied, got {err:?}") };
    assert_eq!(id.as_str(), "c");
    assert_eq!(err.to_string(), "cannot downgrade to c: it is not applied; use upgrade to reach it");
}

#[test]
fn plan_refuses_to_downgrade_through_irreversible_revision() {
    let g = graph(vec![rev("a", &[], &[]), irreversible("b", &["a"]), rev("c", &["b"], &[])]);
    let err = planned_err(&g, &["a", "b", "c"], "a", Mode::Downgrade);
    let Error::Irreversible { id, path } = &err else { panic!("expected Irreversible, got {err:?}") };
    assert_eq!((id.as_str(), path.as_str()), ("b", "b.sql"));
    assert_eq!(
        err.to_string(),
        "cannot downgrade through revision b (b.sql): it has no `-- pgskein: down` section; add one, or stamp past it"
    );
}

#[test]
fn downgrade_that_stops_above_an_irreversible_revision_is_allowed() {
    let g = graph(vec![rev("a", &[], &[]), irreversible("b", &["a"]), rev("c", &["b"], &[])]);
    assert_eq!(planned_ok(&g, &["a", "b", "c"], "b", Mode::Downgrade), ["down c"]);
    assert_eq!(planned_ok(&g, &["a", "b", "c"], "-1", Mode::Downgrade), ["down c"]);
}

#[test]
fn downgrade_to_branch_head_leaves_other_branches_alone() {
    let g = two_branches();
    let all = ["a", "b", "x", "y"];
    // auth@head is y, and downgrading to y by id removes nothing.
    assert!(planned_ok(&g, &all, "y", Mode::Downgrade).is_empty());
    assert_eq!(
        planned_ok(&g, &all, "auth@head", Mode::Downgrade),
        planned_ok(&g, &all, "y", Mode::Downgrade)
    );
}

// ----- stamp -----

#[test]
fn stamp_to_base_removes_everything_without_down_bodies() {
    let g = graph(vec![irreversible("a", &[]), irreversible("b", &["a"]), rev("c", &["b"], &[])]);
    assert_eq!(planned_ok(&g, &["a", "b", "c"], "base", Mode::Stamp), ["down c", "down b", "down a"]);
}

#[test]
fn stamp_to_revision_makes_the_applied_set_exactly_its_ancestors() {
    let g = two_branches();
    assert_eq!(planned_ok(&g, &["a", "b"], "y", Mode::Stamp), ["down b", "up x", "up y"]);
}

#[test]
fn stamp_moves_by_n_in_either_direction() {
    let g = linear();
    assert_eq!(planned_ok(&g, &["a"], "+2", Mode::Stamp), ["up b", "up c"]);
    assert_eq!(planned_ok(&g, &["a", "b", "c"], "-2", Mode::Stamp), ["down c", "down b"]);
}

// ----- resolving names -----

#[test]
fn head_with_two_heads_is_ambiguous() {
    let g = two_branches();
    let err = planned_err(&g, &[], "head", Mode::Upgrade);
    let Error::AmbiguousTarget { target, heads } = &err else {
        panic!("expected AmbiguousTarget, got {err:?}")
    };
    assert_eq!((target.as_str(), ids(heads)), ("head", vec!["b", "y"]));
    assert_eq!(
        err.to_string(),
        "target \"head\" is ambiguous: there are several heads (b, y); name one, use `heads`, or merge them"
    );
}

#[test]
fn head_of_an_empty_set_is_an_unknown_target() {
    let g = graph(Vec::new());
    let err = planned_err(&g, &[], "head", Mode::Upgrade);
    assert!(matches!(&err, Error::UnknownTarget { target } if target == "head"), "{err:?}");
    assert!(planned_ok(&g, &[], "heads", Mode::Upgrade).is_empty());
}

#[test]
fn unknown_branch_label_is_an_unknown_target() {
    let err = planned_err(&two_branches(), &[], "billing@head", Mode::Upgrade);
    assert!(matches!(&err, Error::UnknownTarget { target } if target == "billing@head"), "{err:?}");
}

#[test]
fn prefix_matching_two_ids_is_ambiguous() {
    let g = graph(vec![
        rev("0001_init", &[], &[]),
        rev("0002_users", &["0001_init"], &[]),
        rev("0002_uploads", &["0001_init"], &[]),
    ]);
    let err = planned_err(&g, &[], "0002_u", Mode::Upgrade);
    let Error::AmbiguousPrefix { prefix, candidates } = &err else {
        panic!("expected AmbiguousPrefix, got {err:?}")
    };
    assert_eq!(prefix, "0002_u");
    assert_eq!(ids(candidates), ["0002_uploads", "0002_users"]);
    assert_eq!(
        err.to_string(),
        "target \"0002_u\" matches several revisions: 0002_uploads, 0002_users; give more characters"
    );
}

#[test]
fn unique_prefix_resolves_to_its_revision() {
    let g = graph(vec![rev("0001_init", &[], &[]), rev("0002_users", &["0001_init"], &[])]);
    assert_eq!(resolve(&g, "0002").ok(), g.get("0002_users"));
    assert_eq!(planned_ok(&g, &[], "0001", Mode::Upgrade), ["up 0001_init"]);
}

#[test]
fn exact_id_wins_over_a_longer_id_it_prefixes() {
    let g = graph(vec![rev("a1", &[], &[]), rev("a10", &["a1"], &[])]);
    assert_eq!(resolve(&g, "a1").ok(), g.get("a1"));
}

#[test]
fn unknown_revision_is_an_unknown_target() {
    let g = linear();
    let err = planned_err(&g, &[], "zz", Mode::Upgrade);
    assert!(matches!(&err, Error::UnknownTarget { target } if target == "zz"), "{err:?}");
}

// ----- reconcile -----

#[test]
fn reconcile_marks_the_rows_the_code_knows_as_applied() {
    let g = linear();
    let rec = reconcile(&g, &rows_of(&g, &["a", "b"]));
    assert_eq!(marked(&g, &rec.applied), ["a", "b"]);
    assert!(rec.unknown.is_empty() && rec.changed.is_empty() && rec.blocked.is_empty());
    assert!(!rec.ahead);
    assert!(rec.pinned.iter().all(|&p| !p));
}

#[test]
fn reconcile_flags_changed_checksum() {
    let g = linear();
    let mut rows = rows_of(&g, &["a", "b", "c"]);
    rows[1].checksum = "0".repeat(64);
    let rec = reconcile(&g, &rows);
    assert_eq!(rec.changed, [g.get("b").unwrap()]);
    assert_eq!(marked(&g, &rec.applied), ["a", "b", "c"], "a changed revision is still applied");
}

#[test]
fn unknown_rows_descending_from_head_are_ahead() {
    let g = linear();
    let mut rows = rows_of(&g, &["a", "b", "c", "d"]);
    rows.push(row("e", &["d"], "e1"));
    rows.push(row("f", &["e"], "f1"));
    let rec = reconcile(&g, &rows);
    assert_eq!(rec.unknown, ["e", "f"]);
    assert!(rec.ahead);
    assert_eq!(marked(&g, &rec.pinned), ["a", "b", "c", "d"]);
}

#[test]
fn unknown_row_on_a_side_branch_is_diverged() {
    let g = linear();
    let mut rows = rows_of(&g, &["a", "b", "c", "d"]);
    rows.push(row("x", &["b"], "x1"));
    let rec = reconcile(&g, &rows);
    assert_eq!(rec.unknown, ["x"]);
    assert!(!rec.ahead);
    assert_eq!(marked(&g, &rec.pinned), ["a", "b"]);
}

#[test]
fn unknown_parent_missing_from_ledger_is_diverged() {
    let g = linear();
    let mut rows = rows_of(&g, &["a", "b", "c", "d"]);
    rows.push(row("e", &["d", "ghost"], "e1"));
    let rec = reconcile(&g, &rows);
    assert_eq!(rec.unknown, ["e"]);
    assert!(!rec.ahead);
}

#[test]
fn unknown_rows_are_not_ahead_while_code_revisions_are_pending() {
    let g = two_branches();
    let mut rows = rows_of(&g, &["a", "b"]);
    rows.push(row("c", &["b"], "c1"));
    let rec = reconcile(&g, &rows);
    assert_eq!(rec.unknown, ["c"]);
    assert!(!rec.ahead, "x and y are not applied, so the database is not simply ahead");
}

#[test]
fn unknown_side_branch_merged_after_head_is_ahead() {
    // A newer release added x off a and merged it with the old head b in y.
    let g = graph(vec![rev("a", &[], &[]), rev("b", &["a"], &[])]);
    let mut rows = rows_of(&g, &["a", "b"]);
    rows.push(row("x", &["a"], "x1"));
    rows.push(row("y", &["b", "x"], "y1"));
    let rec = reconcile(&g, &rows);
    assert_eq!(rec.unknown, ["x", "y"]);
    assert!(rec.ahead, "every unknown revision is below y, which descends from the head b");
}

#[test]
fn failed_rows_are_blocked() {
    let g = linear();
    let mut rows = rows_of(&g, &["a", "b", "c"]);
    rows[2].state = RowState::Blocked(BlockedState::Failed, Direction::Up);
    rows[2].statement = Some(3);
    rows[2].last_error = Some("deadlock detected".into());
    rows.push(row("z", &["c"], "z1"));
    rows[3].state = RowState::Blocked(BlockedState::Running, Direction::Down);
    let rec = reconcile(&g, &rows);
    assert_eq!(rec.blocked, [rows[2].clone(), rows[3].clone()]);
    assert_eq!(marked(&g, &rec.applied), ["a", "b"], "a failed revision is not applied");
    assert!(rec.unknown.is_empty(), "blocked rows are not unknown applied revisions");
}

#[test]
fn digest_of_set_equals_digest_of_matching_rows_in_any_order() {
    let g = two_branches();
    let mut rows = rows_of(&g, &["y", "a", "b", "x"]);
    let digest = |rows: &[Row]| {
        let mut d = SetDigest::default();
        for r in rows {
            d.add(&r.id, &r.checksum);
        }
        d.to_string()
    };
    assert_eq!(digest(&rows), g.digest());
    rows.reverse();
    assert_eq!(digest(&rows), g.digest());
}

#[test]
fn check_pinned_refuses_to_remove_what_unknown_revisions_build_on() {
    let g = linear();
    let mut rows = rows_of(&g, &["a", "b", "c", "d"]);
    rows.push(row("e", &["d"], "e1"));
    let rec = reconcile(&g, &rows);
    let steps = plan(&g, &rec.applied, &target("-1"), Mode::Downgrade).unwrap();
    let err = check_pinned(&g, &rec, &steps).unwrap_err();
    let Error::DowngradeBelowUnknown { id, unknown } = &err else {
        panic!("expected DowngradeBelowUnknown, got {err:?}")
    };
    assert_eq!((id.as_str(), unknown.as_slice()), ("d", &["e".to_owned()][..]));
    assert_eq!(
        err.to_string(),
        "cannot downgrade d: applied revisions unknown to this code (e) build on it; downgrade with the newer code first"
    );
}

#[test]
fn check_pinned_allows_removing_revisions_nothing_unknown_builds_on() {
    let g = two_branches();
    let mut rows = rows_of(&g, &["a", "b", "x", "y"]);
    rows.push(row("c", &["b"], "c1"));
    let rec = reconcile(&g, &rows);
    let steps = plan(&g, &rec.applied, &target("x"), Mode::Downgrade).unwrap();
    assert_eq!(steps, [(g.get("y").unwrap(), Direction::Down)]);
    assert!(check_pinned(&g, &rec, &steps).is_ok());
    let up = plan(&g, &rec.applied, &target("heads"), Mode::Upgrade).unwrap();
    assert!(check_pinned(&g, &rec, &up).is_ok());
}

// ----- scale -----

/// Blocks of four: a and b fork from the previous merge, c revises a and
/// depends on the previous block's c, m merges b and c. One head.
fn large_graph(blocks: usize) -> Graph {
    let mut revs = Vec::with_capacity(blocks * 4);
    let mut tip: Option<String> = None;
    for k in 0..blocks {
        let [a, b, c, m] = ["a", "b", "c", "m"].map(|s| format!("{k:05}{s}"));
        let parent: Vec<&str> = tip.iter().map(String::as_str).collect();
        let previous_c = (k > 0).then(|| format!("{:05}c", k - 1));
        let depends: Vec<&str> = previous_c.iter().map(String::as_str).collect();
        revs.push(rev(&a, &parent, &[]));
        revs.push(rev(&b, &parent, &[]));
        revs.push(rev(&c, &[&a], &depends));
        revs.push(rev(&m, &[&b, &c], &[]));
        tip = Some(m);
    }
    Graph::build(revs, false).unwrap_or_else(|e| panic!("large graph should build: {e}"))
}

#[test]
fn twenty_thousand_revisions_with_branches_and_merges_plan_completely() {
    const N: usize = 20_000;
    let g = large_graph(N / 4);
    assert_eq!(g.len(), N);
    assert_eq!(g.heads, [N - 1]);
    for (i, ps) in g.parents.iter().enumerate() {
        assert!(ps.iter().all(|&p| p < i), "parents come first");
    }

    let none = vec![false; N];
    let up = plan(&g, &none, &Target::Head, Mode::Upgrade).unwrap();
    assert_eq!(up.len(), N);
    assert!(up.iter().enumerate().all(|(k, &(i, d))| i == k && d == Direction::Up));

    let all = vec![true; N];
    let down = plan(&g, &all, &Target::Base, Mode::Downgrade).unwrap();
    assert_eq!(down.len(), N);
    assert!(down.iter().enumerate().all(|(k, &(i, d))| i == N - 1 - k && d == Direction::Down));

    let to_middle = plan(&g, &all, &target("02499m"), Mode::Downgrade).unwrap();
    assert_eq!(to_middle.len(), N / 2);

    let half = plan(&g, &none, &Target::Relative(N as i64 / 2), Mode::Upgrade).unwrap();
    assert_eq!(half.len(), N / 2);

    let ids: Vec<&str> = g.revs.iter().map(|r| r.id.as_str()).collect();
    let rec = reconcile(&g, &rows_of(&g, &ids));
    assert!(rec.applied.iter().all(|&a| a));
}
