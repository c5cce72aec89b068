use super::*;

pub(crate) const REVERSIBLE: &str = "-- pgskein: up\nSELECT 1;\n-- pgskein: down\nSELECT 1;\n";

/// A revision parsed from the file `<id>.sql` with the given parents, extra header and body.
pub(crate) fn revision(
    id: &str,
    revises: &[&str],
    depends_on: &[&str],
    header: &str,
    body: &str,
) -> Revision {
    let mut text = String::new();
    if !revises.is_empty() {
        text.push_str(&format!("-- pgskein: revises {}\n", revises.join(", ")));
    }
    if !depends_on.is_empty() {
        text.push_str(&format!("-- pgskein: depends-on {}\n", depends_on.join(", ")));
    }
    text.push_str(header);
    text.push_str(body);
    crate::source::parse::parse(&format!("{id}.sql"), text.as_bytes())
        .unwrap_or_else(|e| panic!("test revision {id} should parse: {e}"))
}

pub(crate) fn rev(id: &str, revises: &[&str], depends_on: &[&str]) -> Revision {
    revision(id, revises, depends_on, "", REVERSIBLE)
}

pub(crate) fn on_branch(branch: &str, id: &str, revises: &[&str]) -> Revision {
    revision(id, revises, &[], &format!("-- pgskein: branch {branch}\n"), REVERSIBLE)
}

fn build(revs: Vec<Revision>) -> Graph {
    Graph::build(revs, true).unwrap_or_else(|e| panic!("graph should build: {e}"))
}

fn build_err(revs: Vec<Revision>, allow_multiple_heads: bool) -> Error {
    match Graph::build(revs, allow_multiple_heads) {
        Ok(g) => panic!("graph should not build, got order {:?}", order(&g)),
        Err(e) => e,
    }
}

fn order(g: &Graph) -> Vec<&str> {
    g.revs.iter().map(|r| r.id.as_str()).collect()
}

fn names<'g>(g: &'g Graph, nodes: &[usize]) -> Vec<&'g str> {
    nodes.iter().map(|&i| g.revs[i].id.as_str()).collect()
}

fn marked<'g>(g: &'g Graph, set: &[bool]) -> Vec<&'g str> {
    (0..g.len()).filter(|&i| set[i]).map(|i| g.revs[i].id.as_str()).collect()
}

fn node(g: &Graph, id: &str) -> usize {
    g.get(id).unwrap_or_else(|| panic!("{id} is in the graph"))
}

fn heads(g: &Graph) -> Vec<&str> {
    names(g, &g.heads)
}

fn id_strs(ids: &[RevisionId]) -> Vec<&str> {
    ids.iter().map(RevisionId::as_str).collect()
}

// ----- canonical order -----

#[test]
fn linear_chain_is_ordered_parents_first() {
    let g = build(vec![rev("c", &["b"], &[]), rev("a", &[], &[]), rev("b", &["a"], &[])]);
    assert_eq!(order(&g), ["a", "b", "c"]);
    assert_eq!(heads(&g), ["c"]);
}

#[test]
fn parent_comes_first_even_when_its_id_sorts_last() {
    let g = build(vec![rev("a", &["z"], &[]), rev("z", &[], &[])]);
    assert_eq!(order(&g), ["z", "a"]);
}

#[test]
fn ties_in_topological_order_are_broken_by_id() {
    // Two roots and a fork: whenever several revisions are ready, the smallest id goes first.
    let g = build(vec![
        rev("m", &["c", "b"], &[]),
        rev("c", &["r2"], &[]),
        rev("b", &["r1"], &[]),
        rev("r2", &[], &[]),
        rev("r1", &[], &[]),
        rev("d", &["r1"], &[]),
    ]);
    assert_eq!(order(&g), ["r1", "b", "d", "r2", "c", "m"]);
}

#[test]
fn canonical_order_does_not_depend_on_input_order() {
    let make = || {
        vec![
            rev("a", &[], &[]),
            rev("b", &["a"], &[]),
            rev("c", &["a"], &[]),
            rev("d", &["b"], &["c"]),
            rev("e", &["c", "d"], &[]),
        ]
    };
    let expected = order(&build(make())).iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for rotation in 0..5 {
        let mut revs = make();
        revs.rotate_left(rotation);
        revs.reverse();
        assert_eq!(order(&build(revs)), expected, "rotation {rotation}");
    }
}

#[test]
fn depends_on_orders_revisions_across_branches() {
    // b depends on y, so y runs first although "b" < "y".
    let g = build(vec![rev("a", &[], &[]), rev("b", &["a"], &["y"]), rev("y", &["a"], &[])]);
    assert_eq!(order(&g), ["a", "y", "b"]);
}

#[test]
fn parents_and_children_are_stored_as_canonical_indices() {
    let g = build(vec![
        rev("m", &["c", "b"], &[]),
        rev("c", &["a"], &[]),
        rev("b", &["a"], &[]),
        rev("a", &[], &[]),
    ]);
    assert_eq!(order(&g), ["a", "b", "c", "m"]);
    assert_eq!(g.parents[node(&g, "m")], [1, 2]);
    assert_eq!(g.children[node(&g, "a")], [1, 2]);
    for (i, r) in g.revs.iter().enumerate() {
        assert_eq!(g.get(r.id.as_str()), Some(i));
    }
    assert_eq!(g.get("nope"), None);
}

#[test]
fn listing_a_parent_in_both_revises_and_depends_on_makes_one_edge() {
    let g = build(vec![rev("a", &[], &[]), rev("b", &["a"], &["a"])]);
    assert_eq!(g.parents[node(&g, "b")], [node(&g, "a")]);
    assert_eq!(g.children[node(&g, "a")], [node(&g, "b")]);
}

#[test]
fn empty_set_builds_an_empty_graph_with_the_zero_digest() {
    let g = Graph::build(Vec::new(), false).expect("an empty set is valid");
    assert_eq!(g.len(), 0);
    assert!(g.heads.is_empty());
    assert_eq!(g.digest(), format!("0:{}", "0".repeat(64)));
}

// ----- validation errors -----

#[test]
fn duplicate_id_names_both_files() {
    let first = crate::source::parse::parse("embedded/0001_a.sql", REVERSIBLE.as_bytes()).unwrap();
    let second = crate::source::parse::parse("disk/0001_a.sql", REVERSIBLE.as_bytes()).unwrap();
    let err = build_err(vec![first, second], true);
    let Error::DuplicateRevision { id, first, second } = &err else {
        panic!("expected DuplicateRevision, got {err:?}")
    };
    assert_eq!(
        (id.as_str(), first.as_str(), second.as_str()),
        ("0001_a", "embedded/0001_a.sql", "disk/0001_a.sql")
    );
    assert_eq!(
        err.to_string(),
        "revision 0001_a is defined twice, in embedded/0001_a.sql and in disk/0001_a.sql; rename one of them"
    );
}

#[test]
fn unknown_revises_parent_is_reported_with_its_relation() {
    let err = build_err(vec![rev("a", &[], &[]), rev("b", &["ghost"], &[])], true);
    let Error::UnknownParent { id, path, relation, parent } = &err else {
        panic!("expected UnknownParent, got {err:?}")
    };
    assert_eq!((id.as_str(), path.as_str(), *relation, parent.as_str()), ("b", "b.sql", "revises", "ghost"));
    assert_eq!(
        err.to_string(),
        "revision b (b.sql) revises ghost, which is not in the migration set; fix the directive or add the missing file"
    );
}

#[test]
fn unknown_depends_on_parent_is_reported_with_its_relation() {
    let err = build_err(vec![rev("a", &[], &[]), rev("b", &["a"], &["ghost"])], true);
    let Error::UnknownParent { id, relation, parent, .. } = &err else {
        panic!("expected UnknownParent, got {err:?}")
    };
    assert_eq!((id.as_str(), *relation, parent.as_str()), ("b", "depends on", "ghost"));
    assert!(
        err.to_string().starts_with("revision b (b.sql) depends on ghost, which is not in the migration set")
    );
}

/// Asserts `err` is a cycle through exactly `members`, listed so each revision
/// revises or depends on the one before it, first repeated at the end.
fn assert_cycle(g_revs: &[Revision], err: &Error, members: &[&str]) {
    let Error::Cycle { ids, files } = err else { panic!("expected Cycle, got {err:?}") };
    let ids = id_strs(ids);
    assert_eq!(ids.len(), members.len() + 1, "{ids:?}");
    assert_eq!(ids.first(), ids.last(), "the first id is repeated at the end: {ids:?}");
    let mut around: Vec<&str> = ids[1..].to_vec();
    around.sort_unstable();
    let mut expected = members.to_vec();
    expected.sort_unstable();
    assert_eq!(around, expected);
    for pair in ids.windows(2) {
        let child = g_revs.iter().find(|r| r.id.as_str() == pair[1]).unwrap();
        assert!(
            child.revises.iter().chain(&child.depends_on).any(|p| p.as_str() == pair[0]),
            "{} should build on {} in {ids:?}",
            pair[1],
            pair[0]
        );
    }
    let expected_files: Vec<String> = ids.iter().map(|i| format!("{i}.sql")).collect();
    assert_eq!(files, &expected_files);
}

#[test]
fn cycle_error_lists_the_revisions_around_the_cycle() {
    let make = || {
        vec![
            rev("root", &[], &[]),
            rev("a", &["c"], &[]),
            rev("b", &["a"], &[]),
            rev("c", &["b", "root"], &[]),
        ]
    };
    let err = build_err(make(), true);
    assert_cycle(&make(), &err, &["a", "b", "c"]);
    let Error::Cycle { ids, files } = &err else { unreachable!() };
    let text: Vec<String> = ids.iter().zip(files).map(|(i, f)| format!("{i} ({f})")).collect();
    assert_eq!(
        err.to_string(),
        format!(
            "the revisions form a cycle: {}; a revision cannot (indirectly) revise or depend on itself",
            text.join(" -> ")
        )
    );
}

#[test]
fn cycle_error_leaves_out_revisions_merely_downstream_of_the_cycle() {
    // "a" is stuck behind the cycle and has the smallest id, but is not part of it.
    let make = || vec![rev("a", &["x"], &[]), rev("x", &["y"], &[]), rev("y", &["x"], &[])];
    assert_cycle(&make(), &build_err(make(), true), &["x", "y"]);
}

#[test]
fn cycle_through_depends_on_is_detected() {
    let make = || vec![rev("a", &[], &["b"]), rev("b", &["a"], &[])];
    assert_cycle(&make(), &build_err(make(), true), &["a", "b"]);
}

#[test]
fn revision_revising_itself_is_a_cycle_of_one() {
    // The parser refuses this, so build it by hand.
    let mut r = rev("a", &[], &[]);
    r.revises.push(r.id.clone());
    let err = build_err(vec![r], true);
    let Error::Cycle { ids, files } = &err else { panic!("expected Cycle, got {err:?}") };
    assert_eq!(id_strs(ids), ["a", "a"]);
    assert_eq!(files, &["a.sql", "a.sql"]);
}

#[test]
fn two_heads_are_refused_unless_allowed() {
    let make = || vec![rev("a", &[], &[]), rev("c", &["a"], &[]), rev("b", &["a"], &[])];
    let err = build_err(make(), false);
    let Error::MultipleHeads { heads } = &err else { panic!("expected MultipleHeads, got {err:?}") };
    assert_eq!(id_strs(heads), ["b", "c"]);
    assert_eq!(
        err.to_string(),
        "the migration set has 2 heads: b, c; add a merge revision that revises them all \
         (`-- pgskein: revises b, c`), or allow multiple heads"
    );
    assert_eq!(self::heads(&build(make())), ["b", "c"]);
}

#[test]
fn cycle_is_reported_before_multiple_heads() {
    let err = build_err(vec![rev("h", &[], &[]), rev("x", &["y"], &[]), rev("y", &["x"], &[])], false);
    assert!(matches!(err, Error::Cycle { .. }), "{err:?}");
}

#[test]
fn merge_revision_leaves_a_single_head() {
    let g = Graph::build(
        vec![rev("a", &[], &[]), rev("b", &["a"], &[]), rev("c", &["a"], &[]), rev("m", &["b", "c"], &[])],
        false,
    )
    .expect("merged branches have one head");
    assert_eq!(heads(&g), ["m"]);
}

#[test]
fn depends_on_does_not_stop_a_revision_being_a_head() {
    // Only `revises` consumes a head: y is still one although b depends on it.
    let g = build(vec![rev("a", &[], &[]), rev("y", &["a"], &[]), rev("b", &["a"], &["y"])]);
    assert_eq!(heads(&g), ["y", "b"]);
    let err = build_err(vec![rev("a", &[], &[]), rev("y", &["a"], &[]), rev("b", &["a"], &["y"])], false);
    assert!(matches!(err, Error::MultipleHeads { .. }), "{err:?}");
}

// ----- closure, descendants, branches -----

#[test]
fn closure_includes_everything_revised_or_depended_on() {
    let g = build(vec![
        rev("a", &[], &[]),
        rev("b", &["a"], &[]),
        rev("x", &[], &[]),
        rev("y", &["x"], &[]),
        rev("c", &["b"], &["y"]),
        rev("d", &["c"], &[]),
    ]);
    assert_eq!(marked(&g, &g.closure(&[node(&g, "c")])), ["a", "b", "x", "y", "c"]);
    assert_eq!(marked(&g, &g.closure(&[node(&g, "a")])), ["a"]);
    assert_eq!(marked(&g, &g.closure(&[node(&g, "b"), node(&g, "y")])), ["a", "b", "x", "y"]);
}

#[test]
fn descendants_include_revisions_depending_on_the_node() {
    let g = build(vec![
        rev("a", &[], &[]),
        rev("b", &["a"], &[]),
        rev("x", &[], &[]),
        rev("y", &["x"], &[]),
        rev("c", &["b"], &["y"]),
        rev("d", &["c"], &[]),
    ]);
    assert_eq!(marked(&g, &g.descendants(&[node(&g, "y")])), ["y", "c", "d"]);
    assert_eq!(marked(&g, &g.descendants(&[node(&g, "x")])), ["x", "y", "c", "d"]);
    assert_eq!(marked(&g, &g.descendants(&[node(&g, "d")])), ["d"]);
}

#[test]
fn branch_head_is_the_head_reached_from_the_labelled_revisions() {
    let g = build(vec![
        rev("a", &[], &[]),
        rev("b", &["a"], &[]),
        on_branch("auth", "x", &["a"]),
        rev("y", &["x"], &[]),
    ]);
    assert_eq!(heads(&g), ["b", "y"]);
    assert_eq!(g.branch_heads("auth").map(|h| names(&g, &h)), Some(vec!["y"]));
}

#[test]
fn branch_head_follows_revises_not_depends_on() {
    // b (main) depends on the auth head y; that must not make b part of auth.
    let g = build(vec![
        rev("a", &[], &[]),
        on_branch("auth", "x", &["a"]),
        rev("y", &["x"], &[]),
        rev("b", &["a"], &["y"]),
    ]);
    assert_eq!(heads(&g), ["y", "b"]);
    assert_eq!(g.branch_heads("auth").map(|h| names(&g, &h)), Some(vec!["y"]));
}

#[test]
fn branch_head_after_a_merge_is_the_merged_head() {
    let g = build(vec![
        rev("a", &[], &[]),
        on_branch("auth", "x", &["a"]),
        on_branch("billing", "p", &["a"]),
        rev("m", &["x", "p"], &[]),
    ]);
    assert_eq!(g.branch_heads("auth").map(|h| names(&g, &h)), Some(vec!["m"]));
    assert_eq!(g.branch_heads("billing").map(|h| names(&g, &h)), Some(vec!["m"]));
}

#[test]
fn branch_that_forks_has_several_heads() {
    let g = build(vec![on_branch("auth", "a", &[]), rev("b", &["a"], &[]), rev("c", &["a"], &[])]);
    assert_eq!(g.branch_heads("auth").map(|h| names(&g, &h)), Some(vec!["b", "c"]));
}

#[test]
fn branch_heads_of_an_unknown_label_is_none() {
    let g = build(vec![on_branch("auth", "a", &[])]);
    assert_eq!(g.branch_heads("billing"), None);
}

// ----- digest -----

#[test]
fn digest_ignores_input_order() {
    let make = || vec![rev("a", &[], &[]), rev("b", &["a"], &[]), rev("c", &["a"], &[])];
    let mut reversed = make();
    reversed.reverse();
    assert_eq!(build(make()).digest(), build(reversed).digest());
    assert!(build(make()).digest().starts_with("3:"));
}

#[test]
fn digest_changes_when_a_checksum_changes() {
    let before = build(vec![rev("a", &[], &[]), rev("b", &["a"], &[])]);
    let edited = revision("b", &["a"], &[], "", "-- pgskein: up\nSELECT 2;\n-- pgskein: down\nSELECT 1;\n");
    let after = build(vec![rev("a", &[], &[]), edited]);
    assert_ne!(before.digest(), after.digest());
}

#[test]
fn digest_is_the_set_digest_of_ids_and_checksums() {
    let g = build(vec![rev("a", &[], &[]), rev("b", &["a"], &[])]);
    let mut d = SetDigest::default();
    for r in g.revs.iter().rev() {
        d.add(r.id.as_str(), &r.checksum.to_hex());
    }
    assert_eq!(d.to_string(), g.digest());
}

#[test]
fn set_digest_text_is_what_the_database_trigger_writes() {
    // `ledger/functions.sql` writes the count, a colon, and 64 hex digits.
    assert_eq!(SetDigest::default().to_string(), format!("0:{}", "0".repeat(64)));
    let mut d = SetDigest::default();
    d.add("a", "01");
    let text = d.to_string();
    let (count, hex) = text.split_once(':').unwrap();
    assert_eq!(count, "1");
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[test]
fn set_digest_distinguishes_which_id_has_which_checksum() {
    let mut swapped = SetDigest::default();
    swapped.add("a", "02");
    swapped.add("b", "01");
    let mut d = SetDigest::default();
    d.add("a", "01");
    d.add("b", "02");
    assert_ne!(d, swapped);
}
