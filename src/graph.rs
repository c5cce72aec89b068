//! The revision graph: validation, heads, branches and one deterministic
//! topological order. Pure: no I/O, so every rule is unit-tested without a
//! database. Invariant: a built `Graph` is acyclic, every edge points at a
//! known revision, and `revs` is in the canonical order (parents first, ties
//! broken by id), which every plan reuses.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

pub(crate) use crate::digest::SetDigest;
use crate::error::Error;
use crate::id::RevisionId;
use crate::migration::Revision;

#[derive(Debug, Clone)]
pub(crate) struct Graph {
    /// Revisions in canonical topological order; an index into this vector is a node.
    pub(crate) revs: Vec<Revision>,
    pub(crate) index: HashMap<RevisionId, usize>,
    /// Ordering parents (revises and depends_on), as node indices.
    pub(crate) parents: Vec<Vec<usize>>,
    /// Ordering children, as node indices.
    pub(crate) children: Vec<Vec<usize>>,
    /// Revisions nothing revises, in canonical order.
    pub(crate) heads: Vec<usize>,
    /// The backfills each node depends on (by name); they must be done before it is applied.
    pub(crate) backfill_deps: Vec<Vec<String>>,
}

impl Graph {
    /// Validates `revs` and orders them. Duplicate ids are reported by the caller,
    /// which knows both files; here they are an error too, naming one file twice.
    #[cfg(test)]
    pub(crate) fn build(revs: Vec<Revision>, allow_multiple_heads: bool) -> Result<Self, Error> {
        Self::build_with_backfills(revs, allow_multiple_heads, &HashMap::new())
    }

    /// [`build`](Graph::build), where a `depends_on` entry may also name a
    /// backfill (`backfills` maps its name to the revision it runs after). Such
    /// an entry becomes an ordering edge to that revision, and the name is kept
    /// in `backfill_deps`, so the migrator can refuse the revision until the
    /// backfill is done.
    pub(crate) fn build_with_backfills(
        mut revs: Vec<Revision>,
        allow_multiple_heads: bool,
        backfills: &HashMap<RevisionId, RevisionId>,
    ) -> Result<Self, Error> {
        let mut backfill_deps = split_backfill_deps(&mut revs, backfills);
        let mut by_id: HashMap<RevisionId, usize> = HashMap::with_capacity(revs.len());
        for (i, r) in revs.iter().enumerate() {
            if let Some(&j) = by_id.get(&r.id) {
                return Err(Error::DuplicateRevision {
                    id: r.id.clone(),
                    first: revs[j].origin.clone(),
                    second: r.origin.clone(),
                });
            }
            by_id.insert(r.id.clone(), i);
        }
        let (parents, revised) = edges(&revs, &by_id)?;
        let order = topo_order(&revs, &parents)?;
        // Renumber nodes into canonical order so plans are plain filters over `revs`.
        let n = revs.len();
        let mut pos = vec![0; n];
        for (new, &old) in order.iter().enumerate() {
            pos[old] = new;
        }
        let mut slots: Vec<Option<Revision>> = revs.into_iter().map(Some).collect();
        let revs: Vec<Revision> = order.iter().filter_map(|&old| slots[old].take()).collect();
        let mut new_parents = vec![Vec::new(); n];
        let mut children = vec![Vec::new(); n];
        for old in 0..n {
            let mut ps: Vec<usize> = parents[old].iter().map(|&p| pos[p]).collect();
            ps.sort_unstable();
            for &p in &ps {
                children[p].push(pos[old]);
            }
            new_parents[pos[old]] = ps;
        }
        for c in &mut children {
            c.sort_unstable();
        }
        let heads: Vec<usize> = (0..n).filter(|&i| !revised[order[i]] && !revs[i].repeatable).collect();
        if heads.len() > 1 && !allow_multiple_heads {
            return Err(Error::MultipleHeads { heads: heads.iter().map(|&h| revs[h].id.clone()).collect() });
        }
        let index = revs.iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect();
        let backfill_deps = order.iter().map(|&old| std::mem::take(&mut backfill_deps[old])).collect();
        Ok(Graph { revs, index, parents: new_parents, children, heads, backfill_deps })
    }

    pub(crate) fn len(&self) -> usize {
        self.revs.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// `node` and everything it (transitively) revises or depends on.
    pub(crate) fn closure(&self, nodes: &[usize]) -> Vec<bool> {
        self.walk(nodes, &self.parents)
    }

    /// `node` and everything that (transitively) revises or depends on it.
    pub(crate) fn descendants(&self, nodes: &[usize]) -> Vec<bool> {
        self.walk(nodes, &self.children)
    }

    fn walk(&self, start: &[usize], edges: &[Vec<usize>]) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<usize> = start.to_vec();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(edges[i].iter().copied().filter(|&j| !seen[j]));
            }
        }
        seen
    }

    /// Heads reachable by `revises` edges from the revisions labelled `branch`.
    pub(crate) fn branch_heads(&self, branch: &str) -> Option<Vec<usize>> {
        let labelled: Vec<usize> =
            (0..self.len()).filter(|&i| self.revs[i].branch.as_deref() == Some(branch)).collect();
        if labelled.is_empty() {
            return None;
        }
        // Only `revises` edges carry a branch forward: a revision on another branch
        // that merely depends on this one is not part of it.
        let mut seen = vec![false; self.len()];
        let mut stack = labelled;
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            for &c in &self.children[i] {
                if self.revs[c].revises.iter().any(|p| p == &self.revs[i].id) {
                    stack.push(c);
                }
            }
        }
        Some(self.heads.iter().copied().filter(|&h| seen[h]).collect())
    }

    /// The digest of the whole set, compared with the ledger's on the fast path.
    pub(crate) fn digest(&self) -> String {
        let mut d = SetDigest::default();
        for r in &self.revs {
            d.add(r.id.as_str(), &r.checksum.to_hex());
        }
        d.to_string()
    }
}

/// Takes the backfill names out of each revision's `depends_on` (`backfills`
/// maps a backfill's name to the revision it runs after): each becomes an
/// ordering edge to that revision, and the names are returned per revision.
fn split_backfill_deps(
    revs: &mut [Revision],
    backfills: &HashMap<RevisionId, RevisionId>,
) -> Vec<Vec<String>> {
    let mut backfill_deps: Vec<Vec<String>> = vec![Vec::new(); revs.len()];
    if backfills.is_empty() {
        return backfill_deps;
    }
    let known: std::collections::HashSet<RevisionId> = revs.iter().map(|r| r.id.clone()).collect();
    for (r, deps) in revs.iter_mut().zip(&mut backfill_deps) {
        let mut depends_on = Vec::with_capacity(r.depends_on.len());
        for d in std::mem::take(&mut r.depends_on) {
            match backfills.get(&d) {
                Some(after) if !known.contains(&d) => {
                    deps.push(d.as_str().to_owned());
                    if !depends_on.contains(after) {
                        depends_on.push(after.clone());
                    }
                }
                _ if !depends_on.contains(&d) => depends_on.push(d),
                _ => {}
            }
        }
        r.depends_on = depends_on;
    }
    backfill_deps
}

/// Each revision's parents (`revises` and `depends_on`), and which revisions
/// are revised by another (so are no heads); refuses unknown, repeatable and
/// self-referencing parents.
fn edges(
    revs: &[Revision],
    by_id: &HashMap<RevisionId, usize>,
) -> Result<(Vec<Vec<usize>>, Vec<bool>), Error> {
    let mut parents = vec![Vec::new(); revs.len()];
    let mut revised = vec![false; revs.len()];
    for (i, r) in revs.iter().enumerate() {
        for (relation, list) in [("revises", &r.revises), ("depends on", &r.depends_on)] {
            for p in list {
                let Some(&j) = by_id.get(p) else {
                    return Err(Error::UnknownParent {
                        id: r.id.clone(),
                        path: r.origin.clone(),
                        relation,
                        parent: p.clone(),
                    });
                };
                if revs[j].repeatable {
                    return Err(Error::RevisesRepeatable {
                        id: r.id.clone(),
                        path: r.origin.clone(),
                        parent: p.clone(),
                    });
                }
                if j == i {
                    return Err(Error::Cycle {
                        ids: vec![r.id.clone(), r.id.clone()],
                        files: vec![r.origin.clone(), r.origin.clone()],
                    });
                }
                if !parents[i].contains(&j) {
                    parents[i].push(j);
                }
                if relation == "revises" {
                    revised[j] = true;
                }
            }
        }
    }
    Ok((parents, revised))
}

/// Kahn's algorithm with a min-heap on id: the canonical order.
fn topo_order(revs: &[Revision], parents: &[Vec<usize>]) -> Result<Vec<usize>, Error> {
    let n = revs.len();
    let mut indegree: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut children = vec![Vec::new(); n];
    for (i, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(i);
        }
    }
    // Repeatable revisions have no edges; they go after every versioned one.
    let mut ready: BinaryHeap<Reverse<(&RevisionId, usize)>> = (0..n)
        .filter(|&i| indegree[i] == 0 && !revs[i].repeatable)
        .map(|i| Reverse((&revs[i].id, i)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &c in &children[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(Reverse((&revs[c].id, c)));
            }
        }
    }
    let mut repeatables: Vec<usize> = (0..n).filter(|&i| revs[i].repeatable).collect();
    repeatables.sort_by_key(|&i| &revs[i].id);
    order.extend(repeatables);
    if order.len() == n {
        return Ok(order);
    }
    Err(find_cycle(revs, parents, &indegree))
}

/// Walks parent edges among the unsorted nodes until one repeats: that loop is a cycle.
fn find_cycle(revs: &[Revision], parents: &[Vec<usize>], indegree: &[usize]) -> Error {
    let stuck = |i: usize| indegree[i] > 0;
    let start = (0..revs.len()).filter(|&i| stuck(i)).min_by_key(|&i| &revs[i].id).expect("a stuck node");
    let mut path = vec![start];
    let mut at = vec![usize::MAX; revs.len()];
    at[start] = 0;
    let mut i = start;
    loop {
        // Every stuck node has a stuck parent, so this walk never ends outside the cycle.
        let next = parents[i]
            .iter()
            .copied()
            .filter(|&p| stuck(p))
            .min_by_key(|&p| &revs[p].id)
            .expect("stuck parent");
        if at[next] != usize::MAX {
            let mut cycle: Vec<usize> = path[at[next]..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            return Error::Cycle {
                ids: cycle.iter().map(|&c| revs[c].id.clone()).collect(),
                files: cycle.iter().map(|&c| revs[c].origin.clone()).collect(),
            };
        }
        at[next] = path.len();
        path.push(next);
        i = next;
    }
}

#[cfg(test)]
pub(crate) mod tests;
