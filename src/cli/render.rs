//! Pictures of the revision graph, from the graph alone: the `history` lines
//! with an ASCII graph of branches and merges drawn like `git log --graph`,
//! and Graphviz dot and Mermaid sources for `graph`. Pure functions of the
//! set, so they are tested as text.
//!
//! Only `revises` edges are drawn as lines: they make the branches and
//! merges. `depends_on` edges order revisions across branches without joining
//! them, so history names them in the revision's line and the diagrams draw
//! them dashed.

use std::collections::HashMap;

use crate::{MigrationSet, Revision};

/// One line of `history`: the graph part and, on a revision's line, that revision.
#[derive(Debug, Clone)]
pub(crate) struct HistoryLine<'a> {
    pub(crate) graph: String,
    pub(crate) revision: Option<&'a Revision>,
}

/// The labels of a revision in `history`: head, mergepoint, branchpoint, its
/// branch label, release and dependencies, and the backfills that run after it.
pub(crate) fn tags(set: &MigrationSet, rev: &Revision, children: usize) -> Vec<String> {
    let mut tags = Vec::new();
    if set.heads().iter().any(|h| *h == rev.id()) {
        tags.push("head".to_owned());
    }
    if rev.is_repeatable() {
        tags.push("repeatable".to_owned());
    }
    if rev.revises().len() > 1 {
        tags.push("mergepoint".to_owned());
    }
    if children > 1 {
        tags.push("branchpoint".to_owned());
    }
    if let Some(b) = rev.branch() {
        tags.push(format!("branch {b}"));
    }
    if let Some(r) = rev.release() {
        tags.push(format!("release {r}"));
    }
    // A dependency on a backfill is an edge to the backfill's revision: name
    // the backfill, which is what the file says and what the revision waits for.
    let waits_for = set.backfill_dependencies(rev.id().as_str());
    let through_backfill = |id: &str| {
        set.declared_backfills()
            .iter()
            .any(|b| b.after_revision() == id && waits_for.iter().any(|w| w == b.name()))
    };
    let deps: Vec<&str> =
        rev.depends_on().iter().map(|d| d.as_str()).filter(|d| !through_backfill(d)).collect();
    if !deps.is_empty() {
        tags.push(format!("depends on {}", deps.join(", ")));
    }
    if !waits_for.is_empty() {
        tags.push(format!("waits for backfill {}", waits_for.join(", ")));
    }
    for b in set.declared_backfills().iter().filter(|b| b.after_revision() == rev.id().as_str()) {
        tags.push(format!("backfill {}", b.name()));
    }
    tags
}

/// How many revisions revise each revision (by canonical index).
pub(crate) fn revises_children(set: &MigrationSet) -> Vec<usize> {
    let index: HashMap<&str, usize> =
        set.revisions().enumerate().map(|(i, r)| (r.id().as_str(), i)).collect();
    let mut children = vec![0; set.len()];
    for r in set.revisions() {
        for p in r.revises() {
            if let Some(&i) = index.get(p.as_str()) {
                children[i] += 1;
            }
        }
    }
    children
}

/// The history, newest first (the reverse of the canonical order, so every
/// revision comes before what it revises), with the lanes of the graph.
pub(crate) fn history(set: &MigrationSet) -> Vec<HistoryLine<'_>> {
    let revs: Vec<&Revision> = set.revisions().collect();
    let index: HashMap<&str, usize> = revs.iter().enumerate().map(|(i, r)| (r.id().as_str(), i)).collect();
    let parents: Vec<Vec<usize>> = revs
        .iter()
        .map(|r| r.revises().iter().filter_map(|p| index.get(p.as_str()).copied()).collect())
        .collect();
    let mut out = Vec::new();
    let edge =
        |out: &mut Vec<HistoryLine<'_>>, graph: String| out.push(HistoryLine { graph, revision: None });
    // lanes[k]: the revision that lane k leads down to.
    let mut lanes: Vec<usize> = Vec::new();
    for n in (0..revs.len()).rev() {
        let mut hits: Vec<usize> = (0..lanes.len()).filter(|&k| lanes[k] == n).collect();
        if hits.is_empty() {
            lanes.push(n);
            hits.push(lanes.len() - 1);
        }
        let c = hits[0];
        // Several children lead here: fold each lane into the next one left
        // that leads here too, rightmost first, ending in the leftmost.
        for w in (1..hits.len()).rev() {
            edge(&mut out, collapse(lanes.len(), hits[w - 1], hits[w]));
            lanes.remove(hits[w]);
        }
        let row: Vec<&str> = (0..lanes.len()).map(|k| if k == c { "*" } else { "|" }).collect();
        out.push(HistoryLine { graph: row.join(" "), revision: Some(revs[n]) });
        match parents[n].as_slice() {
            [] => {
                if c + 1 < lanes.len() {
                    edge(&mut out, shift_left(lanes.len(), c));
                }
                lanes.remove(c);
            }
            [first, rest @ ..] => {
                lanes[c] = *first;
                for (k, &p) in rest.iter().enumerate() {
                    edge(&mut out, expand(lanes.len(), c + k));
                    lanes.insert(c + k + 1, p);
                }
            }
        }
    }
    out
}

/// The history as text lines: graph, id, tags in parentheses, message.
pub(crate) fn history_text(set: &MigrationSet) -> Vec<String> {
    let children = revises_children(set);
    let position: HashMap<&str, usize> =
        set.revisions().enumerate().map(|(i, r)| (r.id().as_str(), i)).collect();
    history(set)
        .into_iter()
        .map(|line| match line.revision {
            None => line.graph,
            Some(rev) => {
                let mut text = format!("{} {}", line.graph, rev.id());
                let tags = tags(set, rev, children[position[rev.id().as_str()]]);
                if !tags.is_empty() {
                    text.push_str(&format!(" ({})", tags.join(", ")));
                }
                if let Some(m) = rev.message() {
                    text.push_str(": ");
                    text.push_str(m);
                }
                text
            }
        })
        .collect()
}

/// Lanes as a row of cells, one lane every two characters.
fn cells(width: usize) -> Vec<char> {
    vec![' '; (2 * width).saturating_sub(1)]
}

fn finish(cells: Vec<char>) -> String {
    cells.into_iter().collect::<String>().trim_end().to_owned()
}

/// Lane `j` joins lane `c` (c < j), crossing the lanes between with `_`;
/// the lanes right of `j` move one place left.
fn collapse(width: usize, c: usize, j: usize) -> String {
    let mut row = cells(width);
    for k in 0..width {
        if k < j {
            row[2 * k] = '|';
        } else {
            row[2 * k - 1] = '/';
        }
    }
    for k in c..j.saturating_sub(1) {
        row[2 * k + 1] = '_';
    }
    finish(row)
}

/// Lane `c` ends (a root); the lanes right of it move one place left.
fn shift_left(width: usize, c: usize) -> String {
    let mut row = cells(width);
    for k in 0..width {
        if k < c {
            row[2 * k] = '|';
        } else if k > c {
            row[2 * k - 1] = '/';
        }
    }
    finish(row)
}

/// A new lane opens right of lane `c` (a merge's other parent); the lanes
/// right of `c` move one place right.
fn expand(width: usize, c: usize) -> String {
    let mut row = cells(width + 1);
    for k in 0..width {
        if k <= c {
            row[2 * k] = '|';
        } else {
            row[2 * k + 1] = '\\';
        }
    }
    row[2 * c + 1] = '\\';
    finish(row)
}

/// Graphviz dot: revises edges solid, depends_on edges dashed, from parent to
/// child; heads drawn bold, merges as ellipses.
pub(crate) fn dot(set: &MigrationSet) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = String::from("digraph pgskein {\n    node [shape=box, fontname=\"monospace\"];\n");
    let heads = set.heads();
    for r in set.revisions() {
        let mut attrs = Vec::new();
        let mut label = r.id().to_string();
        if let Some(b) = r.branch() {
            label.push_str(&format!("\\n[{b}]"));
        }
        attrs.push(format!("label={}", quote(&label).replace("\\\\n", "\\n")));
        if let Some(m) = r.message() {
            attrs.push(format!("tooltip={}", quote(m)));
        }
        if heads.contains(&r.id()) {
            attrs.push("style=bold".to_owned());
        }
        if r.revises().len() > 1 {
            attrs.push("shape=ellipse".to_owned());
        }
        out.push_str(&format!("    {} [{}];\n", quote(r.id().as_str()), attrs.join(", ")));
    }
    for r in set.revisions() {
        for p in r.revises() {
            out.push_str(&format!("    {} -> {};\n", quote(p.as_str()), quote(r.id().as_str())));
        }
        for d in r.depends_on() {
            out.push_str(&format!(
                "    {} -> {} [style=dashed, label=\"depends on\"];\n",
                quote(d.as_str()),
                quote(r.id().as_str())
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart: revises edges `-->`, depends_on edges `-.->`.
pub(crate) fn mermaid(set: &MigrationSet) -> String {
    let node: HashMap<&str, String> =
        set.revisions().enumerate().map(|(i, r)| (r.id().as_str(), format!("r{i}"))).collect();
    let heads = set.heads();
    let mut out = String::from("flowchart TD\n");
    for r in set.revisions() {
        let mut label = r.id().to_string();
        if let Some(b) = r.branch() {
            label.push_str(&format!("<br/>[{b}]"));
        }
        let label = label.replace('"', "#quot;");
        let shape = if r.revises().len() > 1 { format!("((\"{label}\"))") } else { format!("[\"{label}\"]") };
        out.push_str(&format!("    {}{shape}\n", node[r.id().as_str()]));
    }
    for r in set.revisions() {
        let to = &node[r.id().as_str()];
        for p in r.revises() {
            out.push_str(&format!("    {} --> {to}\n", node[p.as_str()]));
        }
        for d in r.depends_on() {
            out.push_str(&format!("    {} -. depends on .-> {to}\n", node[d.as_str()]));
        }
    }
    for h in heads {
        out.push_str(&format!("    style {} stroke-width:3px\n", node[h.as_str()]));
    }
    out
}

#[cfg(test)]
mod tests;
