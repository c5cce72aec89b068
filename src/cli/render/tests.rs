use super::*;

fn set(files: &[(&str, &str)]) -> MigrationSet {
    files
        .iter()
        .fold(MigrationSet::builder().allow_multiple_heads(true), |b, (id, header)| {
            let text = format!("{header}-- pgskein: up\nSELECT 1;\n-- pgskein: down\nSELECT 1;\n");
            b.file(&format!("{id}.sql"), text.as_bytes())
        })
        .build()
        .unwrap()
}

/// Two branches off one revision, a dependency from one to the other, and a merge.
fn branched() -> MigrationSet {
    set(&[
        ("0001_base", "-- pgskein: message Create the base tables\n"),
        ("0002_core", "-- pgskein: revises 0001_base\n"),
        ("0003_a1", "-- pgskein: revises 0002_core\n-- pgskein: branch a\n"),
        ("0004_a2", "-- pgskein: revises 0003_a1\n"),
        ("0005_b1", "-- pgskein: revises 0002_core\n-- pgskein: branch b\n"),
        ("0006_b2", "-- pgskein: revises 0005_b1\n-- pgskein: depends-on 0003_a1\n"),
        ("0007_merge", "-- pgskein: revises 0004_a2, 0006_b2\n-- pgskein: message Merge a and b\n"),
        ("0008_after", "-- pgskein: revises 0007_merge\n-- pgskein: release 2.0.0\n"),
    ])
}

#[test]
fn history_draws_two_branches_a_dependency_and_a_merge_like_git_log_graph() {
    let expected = "\
* 0008_after (head, release 2.0.0)
* 0007_merge (mergepoint): Merge a and b
|\\
| * 0006_b2 (depends on 0003_a1)
| * 0005_b1 (branch b)
* | 0004_a2
* | 0003_a1 (branch a)
|/
* 0002_core (branchpoint)
* 0001_base: Create the base tables";
    assert_eq!(history_text(&branched()).join("\n"), expected);
}

#[test]
fn history_folds_sibling_lanes_one_by_one() {
    let s = set(&[
        ("0001_root", ""),
        ("0002_x", "-- pgskein: revises 0001_root\n"),
        ("0003_y", "-- pgskein: revises 0001_root\n"),
        ("0004_z", "-- pgskein: revises 0001_root\n"),
    ]);
    let expected = "\
* 0004_z (head)
| * 0003_y (head)
| | * 0002_x (head)
| |/
|/
* 0001_root (branchpoint)";
    assert_eq!(history_text(&s).join("\n"), expected);
}

#[test]
fn history_crosses_a_lane_to_fold_a_branch_into_a_far_one() {
    // 0002_a and 0004_c meet at 0001_root while 0003_b's lane, bound for
    // 0000_other, still runs between them.
    let s = set(&[
        ("0000_other", ""),
        ("0001_root", ""),
        ("0002_a", "-- pgskein: revises 0001_root\n"),
        ("0003_b", "-- pgskein: revises 0000_other\n"),
        ("0004_c", "-- pgskein: revises 0001_root\n"),
        ("0005_m", "-- pgskein: revises 0002_a, 0003_b, 0004_c\n"),
    ]);
    let expected = "\
* 0005_m (head, mergepoint)
|\\
| |\\
| | * 0004_c
| * | 0003_b
* | | 0002_a
|_|/
* | 0001_root (branchpoint)
 /
* 0000_other";
    assert_eq!(history_text(&s).join("\n"), expected);
}

#[test]
fn history_of_a_linear_chain_is_one_lane() {
    let s = set(&[("0001_a", ""), ("0002_b", "-- pgskein: revises 0001_a\n")]);
    assert_eq!(history_text(&s), ["* 0002_b (head)", "* 0001_a"]);
}

#[test]
fn a_lane_ending_at_a_root_lets_the_lanes_right_of_it_move_left() {
    let s = set(&[
        ("0001_b", ""),
        ("0002_a", ""),
        ("0003_c", "-- pgskein: revises 0001_b\n"),
        ("0004_m", "-- pgskein: revises 0002_a, 0003_c\n"),
    ]);
    let expected = "\
* 0004_m (head, mergepoint)
|\\
| * 0003_c
* | 0002_a
 /
* 0001_b";
    assert_eq!(history_text(&s).join("\n"), expected);
}

#[test]
fn dot_draws_revises_solid_and_depends_on_dashed() {
    let dot = dot(&branched());
    assert!(dot.starts_with("digraph pgskein {\n"));
    assert!(dot.contains("    \"0002_core\" -> \"0003_a1\";\n"), "{dot}");
    assert!(dot.contains("    \"0003_a1\" -> \"0006_b2\" [style=dashed, label=\"depends on\"];\n"), "{dot}");
    assert!(dot.contains("    \"0003_a1\" [label=\"0003_a1\\n[a]\"];\n"), "{dot}");
    assert!(dot.contains("\"0008_after\" [label=\"0008_after\", style=bold];"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn mermaid_draws_a_flowchart_with_dotted_dependencies() {
    let m = mermaid(&branched());
    assert!(m.starts_with("flowchart TD\n"));
    assert!(m.contains("    r1 --> r2\n"), "{m}");
    assert!(m.contains("    r2 -. depends on .-> r5\n"), "{m}");
    assert!(m.contains("    r6((\"0007_merge\"))\n"), "{m}");
    assert!(m.contains("    style r7 stroke-width:3px\n"), "{m}");
}

mod random_graphs {
    use super::*;
    use proptest::prelude::*;

    /// Up to 24 revisions, each revising up to three earlier ones, some roots.
    fn graphs() -> impl Strategy<Value = Vec<Vec<usize>>> {
        prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 0..4), 1..24).prop_map(
            |nodes| {
                nodes
                    .iter()
                    .enumerate()
                    .map(|(i, picks)| {
                        let mut ps: Vec<usize> =
                            if i == 0 { Vec::new() } else { picks.iter().map(|p| p.index(i)).collect() };
                        ps.sort_unstable();
                        ps.dedup();
                        ps
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn every_revision_has_one_line_and_every_line_is_well_formed(parents in graphs()) {
            let files: Vec<(String, String)> = parents
                .iter()
                .enumerate()
                .map(|(i, ps)| {
                    let header = if ps.is_empty() {
                        String::new()
                    } else {
                        let ids: Vec<String> = ps.iter().map(|p| format!("{p:04}_r")).collect();
                        format!("-- pgskein: revises {}\n", ids.join(", "))
                    };
                    (format!("{i:04}_r"), header)
                })
                .collect();
            let borrowed: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let s = set(&borrowed);
            let lines = history(&s);
            let revs: Vec<&str> = lines.iter().filter_map(|l| l.revision.map(|r| r.id().as_str())).collect();
            prop_assert_eq!(revs.len(), parents.len());
            let mut seen = revs.clone();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), parents.len());
            for l in &lines {
                prop_assert!(l.graph.chars().all(|c| " *|/\\_".contains(c)), "{:?}", l.graph);
                prop_assert_eq!(l.graph.matches('*').count(), usize::from(l.revision.is_some()));
            }
        }
    }
}

#[test]
fn history_names_the_backfills_that_run_after_a_revision() {
    let set = MigrationSet::builder()
        .file("0001_docs.sql", b"-- pgskein: up\nCREATE TABLE docs (id int, sha text);\n")
        .file(
            "0002_required.sql",
            b"-- pgskein: revises 0001_docs\n-- pgskein: depends-on docs_sha_fill\n-- pgskein: up\nSELECT 1;\n",
        )
        .backfill(
            crate::backfill::Backfill::sql("docs_sha_fill", "0001_docs")
                .table("docs")
                .key("id")
                .statement("UPDATE docs SET sha = md5(id::text) WHERE id >= $1 AND id < $2"),
        )
        .build()
        .unwrap();
    let text = history_text(&set).join("\n");
    assert!(text.contains("0001_docs (backfill docs_sha_fill)"), "{text}");
    assert!(text.contains("0002_required (head, waits for backfill docs_sha_fill)"), "{text}");
}
