//! R4: properties, through the public surface. The statement splitter (via
//! the `fuzzing` feature's `__fuzz::split`) never cuts inside a string, a
//! quoted identifier, a comment or a dollar quote; planning over random
//! revision graphs up and back down returns to where it started; and no
//! bytes given as revision files make the loader panic. No database.

use std::collections::BTreeSet;

use pgskein::report::Direction;
use pgskein::{Error, MigrationSet, Plan, Target};
use proptest::prelude::*;

// ----- the statement splitter -----

/// A piece of a script: a token that never ends a statement, or a comment.
#[derive(Debug, Clone)]
enum Piece {
    Word(String),
    /// A string, `E''` string, quoted identifier or dollar quote, which may
    /// hold semicolons, quotes and comment markers.
    Literal(String),
    Comment(String),
}

fn inside(from: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(from), 0..8).prop_map(|v| v.concat())
}

fn piece() -> impl Strategy<Value = Piece> {
    let tricky = &[";", "a", " ", "\n", "--", "/*", "*/", "$$", "é", "日"];
    prop_oneof![
        3 => "[a-z_][a-z0-9_]{0,5}".prop_map(Piece::Word),
        1 => prop::sample::select(&["1", "$1", "(a; b)", "::", "=", "a$b"][..]).prop_map(|s| Piece::Word(s.into())),
        1 => (inside(tricky), prop::sample::select(&["", "''", "\""][..]))
            .prop_map(|(s, q)| Piece::Literal(format!("'{s}{q}'"))),
        1 => (inside(tricky), prop::sample::select(&["", "\\'", "\\\\", "''"][..]))
            .prop_map(|(s, q)| Piece::Literal(format!("E'{q}{s}'"))),
        1 => (inside(tricky), prop::sample::select(&["", "\"\"", "'"][..]))
            .prop_map(|(s, q)| Piece::Literal(format!("\"x{q}{s}\""))),
        1 => (prop::sample::select(&["", "fn", "body_1"][..]), inside(&[";", "'", "\"", "$", "--", "/*", "a", "\n", " "]))
            .prop_filter_map("the body must not close the quote", |(tag, body)| {
                let delimiter = format!("${tag}$");
                (!format!("{body}$").contains(&delimiter)).then(|| Piece::Literal(format!("{delimiter}{body}{delimiter}")))
            }),
        1 => inside(&[";", "'", "\"", "$$", "--", "a", " ", "\n", "/* ; */"]).prop_map(|s| Piece::Comment(format!("/* {s} */"))),
        1 => inside(&[";", "'", "\"", "$$", "/*", "a", " "]).prop_map(|s| Piece::Comment(format!("-- {s}\n"))),
    ]
}

/// Statements of pieces (at least one token each), with the gaps between them.
fn script() -> impl Strategy<Value = Vec<(Vec<Piece>, &'static str)>> {
    let statement = prop::collection::vec(piece(), 1..6)
        .prop_filter("a statement needs a token", |ps| ps.iter().any(|p| !matches!(p, Piece::Comment(_))));
    let gap =
        prop::sample::select(&[";", ";\n", " ;\r\n", ";\n\n-- between; statements\n", "; /* ; */ "][..]);
    prop::collection::vec((statement, gap), 1..6)
}

/// The script's text, and for each statement its literals and the line of
/// its first token.
fn render(statements: &[(Vec<Piece>, &str)]) -> (String, Vec<(Vec<String>, usize)>) {
    let mut sql = String::new();
    let mut expected = Vec::new();
    for (pieces, gap) in statements {
        let mut literals = Vec::new();
        let mut first_line = None;
        for p in pieces {
            match p {
                Piece::Word(w) | Piece::Literal(w) => {
                    first_line.get_or_insert(sql.matches('\n').count() + 1);
                    if let Piece::Literal(l) = p {
                        literals.push(l.clone());
                    }
                    sql.push_str(w);
                }
                Piece::Comment(c) => sql.push_str(c),
            }
            sql.push(' ');
        }
        sql.push_str(gap);
        expected.push((literals, first_line.expect("a token")));
    }
    (sql, expected)
}

fn split(sql: &str) -> Vec<(String, usize)> {
    pgskein::__fuzz::split(sql)
}

proptest! {
    #[test]
    fn the_splitter_never_cuts_inside_a_literal_and_counts_lines_from_the_first_token(statements in script()) {
        let (sql, expected) = render(&statements);
        let got = split(&sql);
        prop_assert_eq!(got.len(), expected.len(), "{:?} -> {:?}", sql, got);
        for ((text, line), (literals, first_line)) in got.iter().zip(&expected) {
            prop_assert_eq!(*line, *first_line, "{:?}", text);
            for literal in literals {
                prop_assert!(text.contains(literal.as_str()), "{:?} lost {:?}", text, literal);
            }
        }
    }

    #[test]
    fn split_statements_rejoined_split_the_same(statements in script()) {
        let (sql, _) = render(&statements);
        let first = split(&sql);
        let rejoined: String = first.iter().map(|(t, _)| format!("{t}\n;\n")).collect();
        let again: Vec<String> = split(&rejoined).into_iter().map(|(t, _)| t).collect();
        let texts: Vec<String> = first.into_iter().map(|(t, _)| t).collect();
        prop_assert_eq!(again, texts);
    }

    #[test]
    fn every_statement_split_alone_is_itself(sql in prop_oneof![script().prop_map(|s| render(&s).0), any::<String>()]) {
        for (text, _) in split(&sql) {
            let alone = split(&text);
            prop_assert_eq!(alone, vec![(text.clone(), 1)]);
        }
    }
}

// ----- planning over random graphs -----

/// A random revision graph: for each revision, its id, the earlier revisions
/// it revises and depends on, and whether it has a down section.
#[derive(Debug, Clone)]
struct Dag {
    ids: Vec<String>,
    revises: Vec<Vec<usize>>,
    depends: Vec<Vec<usize>>,
    reversible: Vec<bool>,
}

impl Dag {
    fn parents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.revises[i].iter().chain(&self.depends[i]).copied()
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// `set` with every ancestor of its members added.
    fn close(&self, mut set: Vec<bool>) -> Vec<bool> {
        for i in (0..self.len()).rev() {
            if set[i] {
                for p in self.parents(i).collect::<Vec<_>>() {
                    set[p] = true;
                }
            }
        }
        set
    }

    fn heads(&self) -> BTreeSet<&str> {
        (0..self.len())
            .filter(|&i| !(0..self.len()).any(|j| self.revises[j].contains(&i)))
            .map(|i| self.ids[i].as_str())
            .collect()
    }

    fn set(&self) -> MigrationSet {
        self.build(true).expect("a random DAG is a valid set")
    }

    fn build(&self, several_heads: bool) -> Result<MigrationSet, Error> {
        let mut builder = MigrationSet::builder().allow_multiple_heads(several_heads);
        for i in 0..self.len() {
            let mut text = String::new();
            let names =
                |list: &[usize]| list.iter().map(|&p| self.ids[p].as_str()).collect::<Vec<_>>().join(", ");
            if !self.revises[i].is_empty() {
                text.push_str(&format!("-- pgskein: revises {}\n", names(&self.revises[i])));
            }
            if !self.depends[i].is_empty() {
                text.push_str(&format!("-- pgskein: depends-on {}\n", names(&self.depends[i])));
            }
            text.push_str(&format!("-- pgskein: up\nCREATE TABLE {} ();\n", self.ids[i]));
            if self.reversible[i] {
                text.push_str(&format!("-- pgskein: down\nDROP TABLE {};\n", self.ids[i]));
            }
            builder = builder.file(&format!("{}.sql", self.ids[i]), text.as_bytes());
        }
        builder.build()
    }

    fn index(&self, id: &str) -> usize {
        self.ids.iter().position(|i| i == id).expect("a known id")
    }

    fn ids_of(&self, set: &[bool]) -> Vec<&str> {
        (0..self.len()).filter(|&i| set[i]).map(|i| self.ids[i].as_str()).collect()
    }

    /// Applies `plan` to `applied`, checking each step against the graph:
    /// an up only once its parents are in, a down only once its children are out.
    fn apply(&self, applied: &[bool], plan: &Plan) -> Result<Vec<bool>, String> {
        let mut now = applied.to_vec();
        for step in &plan.steps {
            let i = self.index(step.id.as_str());
            match step.direction {
                Direction::Up => {
                    if now[i] {
                        return Err(format!("{} applied twice", step.id));
                    }
                    if let Some(p) = self.parents(i).find(|&p| !now[p]) {
                        return Err(format!("{} before its parent {}", step.id, self.ids[p]));
                    }
                    now[i] = true;
                }
                Direction::Down => {
                    if !now[i] {
                        return Err(format!("{} reverted while not applied", step.id));
                    }
                    if let Some(c) = (0..self.len()).find(|&c| now[c] && self.parents(c).any(|p| p == i)) {
                        return Err(format!("{} reverted before its child {}", step.id, self.ids[c]));
                    }
                    now[i] = false;
                }
            }
        }
        Ok(now)
    }
}

fn dag() -> impl Strategy<Value = Dag> {
    (1usize..11).prop_flat_map(|n| {
        let edges = (0..n)
            .map(|i| {
                let earlier = prop::collection::btree_set(0..i.max(1), 0..=2.min(i));
                let dep = prop::collection::btree_set(0..i.max(1), 0..=1.min(i));
                (earlier, dep, prop::bool::weighted(0.85))
            })
            .collect::<Vec<_>>();
        // Ids in a random order, so ties in the canonical order are broken
        // by something other than the generation order.
        let names = Just((0..n).map(|k| format!("r{k:02}")).collect::<Vec<_>>()).prop_shuffle();
        (edges, names).prop_map(move |(edges, ids)| {
            let mut dag = Dag { ids, revises: Vec::new(), depends: Vec::new(), reversible: Vec::new() };
            for (revises, depends, reversible) in edges {
                let revises: Vec<usize> = revises.into_iter().collect();
                dag.depends.push(depends.into_iter().filter(|d| !revises.contains(d)).collect());
                dag.revises.push(revises);
                dag.reversible.push(reversible);
            }
            dag
        })
    })
}

/// A graph and an applied set closed under ancestry.
fn dag_and_applied() -> impl Strategy<Value = (Dag, Vec<bool>)> {
    dag()
        .prop_flat_map(|d| {
            let n = d.len();
            (Just(d), prop::collection::vec(prop::bool::weighted(0.4), n))
        })
        .prop_map(|(d, picks)| {
            let applied = d.close(picks);
            (d, applied)
        })
}

fn plan(set: &MigrationSet, applied: &[&str], target: Target) -> Result<Plan, Error> {
    set.plan_from(applied.iter().copied(), &target)
}

proptest! {
    #[test]
    fn upgrading_to_heads_applies_exactly_what_is_missing_parents_first((d, applied) in dag_and_applied()) {
        let set = d.set();
        let p = plan(&set, &d.ids_of(&applied), Target::Heads).unwrap();
        prop_assert!(p.steps.iter().all(|s| s.direction == Direction::Up));
        let after = d.apply(&applied, &p).map_err(TestCaseError::fail)?;
        prop_assert!(after.iter().all(|&a| a), "heads means everything: {:?}", p);
        prop_assert_eq!(p.steps.len(), applied.iter().filter(|&&a| !a).count());
    }

    #[test]
    fn downgrading_to_base_reverts_everything_children_first_or_names_an_irreversible_revision(
        (d, applied) in dag_and_applied()
    ) {
        let set = d.set();
        match plan(&set, &d.ids_of(&applied), Target::Base) {
            Ok(p) => {
                prop_assert!(p.steps.iter().all(|s| s.direction == Direction::Down));
                let after = d.apply(&applied, &p).map_err(TestCaseError::fail)?;
                prop_assert!(after.iter().all(|&a| !a));
                prop_assert!((0..d.len()).all(|i| !applied[i] || d.reversible[i]));
            }
            Err(Error::Irreversible { id, path }) => {
                let i = d.index(id.as_str());
                prop_assert!(applied[i] && !d.reversible[i], "{} is applied and has no down", id);
                prop_assert_eq!(path, format!("{id}.sql"));
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn a_downgrade_to_a_revision_is_undone_by_upgrading_to_heads_in_reverse((d, r) in dag().prop_flat_map(|d| {
        let n = d.len();
        (Just(d), 0..n)
    })) {
        let set = d.set();
        let full = vec![true; d.len()];
        let target = Target::Revision(d.ids[r].clone());
        let down = match plan(&set, &d.ids_of(&full), target) {
            Ok(p) => p,
            Err(Error::Irreversible { id, .. }) => {
                prop_assert!(!d.reversible[d.index(id.as_str())]);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        let middle = d.apply(&full, &down).map_err(TestCaseError::fail)?;
        // Exactly what builds on r goes; r and everything else stays.
        let mut builds_on = vec![false; d.len()];
        builds_on[r] = true;
        for i in 0..d.len() {
            if d.parents(i).any(|p| builds_on[p]) {
                builds_on[i] = true;
            }
        }
        for (i, &applied) in middle.iter().enumerate() {
            prop_assert_eq!(applied, i == r || !builds_on[i], "{}", d.ids[i]);
        }
        let up = plan(&set, &d.ids_of(&middle), Target::Heads).unwrap();
        let back = d.apply(&middle, &up).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, full);
        let down_ids: Vec<&str> = down.steps.iter().rev().map(|s| s.id.as_str()).collect();
        let up_ids: Vec<&str> = up.steps.iter().map(|s| s.id.as_str()).collect();
        prop_assert_eq!(down_ids, up_ids);
    }

    #[test]
    fn base_then_up_to_the_current_revisions_restores_the_applied_set((d, applied) in dag_and_applied()) {
        let set = d.set();
        let down = match plan(&set, &d.ids_of(&applied), Target::Base) {
            Ok(p) => p,
            Err(Error::Irreversible { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        };
        let mut now = d.apply(&applied, &down).map_err(TestCaseError::fail)?;
        // Alembic's "current": applied revisions no applied revision builds on.
        let current: Vec<usize> =
            (0..d.len()).filter(|&i| applied[i] && !(0..d.len()).any(|c| applied[c] && d.parents(c).any(|p| p == i))).collect();
        for i in current {
            let up = plan(&set, &d.ids_of(&now), Target::Revision(d.ids[i].clone())).unwrap();
            now = d.apply(&now, &up).map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(now, applied);
    }

    #[test]
    fn relative_targets_move_that_many_revisions_and_keep_the_set_closed(
        (d, applied) in dag_and_applied(), k in 1i64..5
    ) {
        let set = d.set();
        let ids = d.ids_of(&applied);
        let missing = applied.iter().filter(|&&a| !a).count();
        if missing > 0 {
            let up = plan(&set, &ids, Target::Relative(k)).unwrap();
            prop_assert_eq!(up.steps.len(), missing.min(k as usize));
            d.apply(&applied, &up).map_err(TestCaseError::fail)?;
        }
        if !ids.is_empty() {
            match plan(&set, &ids, Target::Relative(-k)) {
                Ok(down) => {
                    prop_assert_eq!(down.steps.len(), ids.len().min(k as usize));
                    d.apply(&applied, &down).map_err(TestCaseError::fail)?;
                }
                Err(Error::Irreversible { id, .. }) => prop_assert!(!d.reversible[d.index(id.as_str())]),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }
    }

    #[test]
    fn plans_do_not_depend_on_the_order_of_the_applied_list((d, applied) in dag_and_applied()) {
        let set = d.set();
        let ids = d.ids_of(&applied);
        let reversed: Vec<&str> = ids.iter().rev().copied().collect();
        for target in [Target::Heads, Target::Base, Target::Relative(1), Target::Relative(-2)] {
            let a = plan(&set, &ids, target.clone()).map_err(|e| e.to_string());
            let b = plan(&set, &reversed, target).map_err(|e| e.to_string());
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn head_is_ambiguous_exactly_when_there_are_several_heads(d in dag()) {
        let set = d.set();
        let heads: BTreeSet<&str> = set.heads().into_iter().map(|h| h.as_str()).collect();
        prop_assert_eq!(&heads, &d.heads());
        match plan(&set, &[], Target::Head) {
            Ok(_) => prop_assert_eq!(heads.len(), 1),
            Err(Error::AmbiguousTarget { heads: named, .. }) => {
                prop_assert!(heads.len() > 1);
                prop_assert_eq!(&named.iter().map(|h| h.as_str()).collect::<BTreeSet<_>>(), &heads);
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
        // Building without allowing several heads agrees.
        match d.build(false) {
            Ok(_) => prop_assert_eq!(heads.len(), 1),
            Err(Error::MultipleHeads { heads: named }) => {
                prop_assert_eq!(&named.iter().map(|h| h.as_str()).collect::<BTreeSet<_>>(), &heads);
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }
}

// ----- loading arbitrary bytes -----

/// Lines that look like a revision file's, and some that almost do.
const LINES: &[&str] = &[
    "-- pgskein: up",
    "-- pgskein: down",
    "-- pgskein: verify",
    "-- pgskein: revises r0",
    "-- pgskein: revises r1, r2",
    "-- pgskein: depends-on r1",
    "-- pgskein: transaction none",
    "-- pgskein: transaction",
    "-- pgskein: branch b",
    "-- pgskein: release 1.2.3",
    "-- pgskein: release x",
    "-- pgskein: message hello",
    "-- pgskein revises r0",
    "--pgskein:up",
    "-- pgskein:",
    "-- PGSKEIN: up",
    "SELECT 1;",
    "BEGIN;",
    "COMMIT;",
    "CREATE INDEX CONCURRENTLY i ON t (x);",
    "DO $$ BEGIN; END $$;",
    "SELECT ';' AS \"x;y\"; -- ;",
    "/* unterminated",
    "'unterminated",
    "\u{feff}",
    "",
];

fn file_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(prop::sample::select(LINES), 0..12)
            .prop_flat_map(|lines| (Just(lines), prop::sample::select(&["\n", "\r\n", "\r"][..])))
            .prop_map(|(lines, eol)| lines.join(eol).into_bytes()),
        any::<String>().prop_map(String::into_bytes),
    ]
}

proptest! {
    #[test]
    fn any_bytes_as_a_file_give_a_revision_or_an_error(
        name in prop_oneof![Just("r0.sql".to_owned()), "[a-z0-9_./\\\\ -]{0,12}(\\.sql)?"],
        bytes in file_like(),
    ) {
        match MigrationSet::builder().file(&name, &bytes).build() {
            Ok(set) => {
                prop_assert_eq!(set.len(), 1);
                let rev = set.revisions().next().unwrap();
                prop_assert_eq!(rev.origin(), name.as_str());
                prop_assert!(rev.revises().is_empty() && rev.depends_on().is_empty(), "a lone root");
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn any_handful_of_files_build_an_ordered_graph_or_an_error(
        files in prop::collection::vec(file_like(), 1..6),
        several_heads in any::<bool>(),
    ) {
        let mut builder = MigrationSet::builder().allow_multiple_heads(several_heads);
        for (i, bytes) in files.iter().enumerate() {
            builder = builder.file(&format!("r{i}.sql"), bytes);
        }
        if let Ok(set) = builder.build() {
            let order: Vec<&str> = set.revisions().map(|r| r.id().as_str()).collect();
            for (at, r) in set.revisions().enumerate() {
                for p in r.revises().iter().chain(r.depends_on()) {
                    let parent = order.iter().position(|o| *o == p.as_str());
                    prop_assert!(parent.is_some_and(|q| q < at), "{} before its parent {}", r.id(), p);
                }
            }
            prop_assert!(several_heads || set.heads().len() == 1);
            for target in [Target::Heads, Target::Base, Target::Relative(2), Target::Relative(-2)] {
                let _ = set.plan_from(order.iter().copied().take(order.len() / 2), &target);
            }
        }
    }
}
