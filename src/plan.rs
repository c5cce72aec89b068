//! Planning: (graph, applied set, target) -> ordered steps. Pure and linear in
//! the size of the graph. Every operation computes the set of revisions that
//! should be applied afterwards, then diffs it with what is applied: removals
//! in reverse canonical order, additions in canonical order. Because the
//! canonical order is fixed when the graph is built, every replica plans the same.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::graph::Graph;
use crate::id::RevisionId;
pub(crate) use crate::report::Direction;
use crate::state::Record;

/// Where to take the database.
///
/// Parsed from text with [`str::parse`]:
///
/// | text | meaning |
/// |---|---|
/// | `head` | the single head (an error when there are several) |
/// | `heads` | every head |
/// | `base` | nothing applied |
/// | `+N` / `-N` | N revisions forward / back, in plan order |
/// | `<branch>@head` | the head of a branch label |
/// | `@<version>` | every revision released at or before that version (`@2.0.0`) |
/// | anything else | a revision id, or a unique prefix of one |
///
/// ```
/// use pgskein::Target;
/// assert_eq!("head".parse::<Target>().unwrap(), Target::Head);
/// assert_eq!("-2".parse::<Target>().unwrap(), Target::Relative(-2));
/// assert_eq!("auth@head".parse::<Target>().unwrap(), Target::BranchHead("auth".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// The single head.
    Head,
    /// All heads.
    Heads,
    /// Nothing applied.
    Base,
    /// N steps forward (positive) or back (negative).
    Relative(i64),
    /// The head of a branch.
    BranchHead(String),
    /// A revision id or a unique prefix of one.
    Revision(String),
    /// `@<version>`: every revision whose `release` is at most this version,
    /// with everything they build on.
    Release(semver::Version),
}

impl FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        let unknown = || Error::UnknownTarget { target: s.to_owned() };
        Ok(match t {
            "" => return Err(unknown()),
            "head" => Target::Head,
            "heads" => Target::Heads,
            "base" => Target::Base,
            _ if t.starts_with(['+', '-']) => {
                let n: i64 = t.parse().map_err(|_| unknown())?;
                if n == 0 {
                    return Err(unknown());
                }
                Target::Relative(n)
            }
            _ if t.starts_with('@') => {
                Target::Release(semver::Version::parse(&t[1..]).map_err(|_| unknown())?)
            }
            _ => match t.split_once('@') {
                Some((branch, "head")) if !branch.is_empty() => Target::BranchHead(branch.to_owned()),
                Some(_) => return Err(unknown()),
                None => Target::Revision(t.to_owned()),
            },
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Head => f.write_str("head"),
            Target::Heads => f.write_str("heads"),
            Target::Base => f.write_str("base"),
            Target::Relative(n) => write!(f, "{n:+}"),
            Target::BranchHead(b) => write!(f, "{b}@head"),
            Target::Revision(r) => f.write_str(r),
            Target::Release(v) => write!(f, "@{v}"),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The revision.
    pub id: RevisionId,
    /// Up or down.
    pub direction: Direction,
}

/// The ordered steps that take the database to a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps, in the order they run.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            writeln!(f, "{} {}", s.direction, s.id)?;
        }
        Ok(())
    }
}

/// What an operation may do to the applied set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only add revisions.
    Upgrade,
    /// Only remove revisions; each must have a down body.
    Downgrade,
    /// Make the applied set exactly the target's, recording without running.
    Stamp,
}

/// Plans `mode` towards `target`. `applied[i]` says whether node `i` is applied.
pub(crate) fn plan(
    graph: &Graph,
    applied: &[bool],
    target: &Target,
    mode: Mode,
) -> Result<Vec<(usize, Direction)>, Error> {
    let mut target_set = target_set(graph, applied, target, mode)?;
    place_repeatables(graph, applied, &mut target_set, mode);
    let steps = steps_between(graph, applied, &target_set, mode);
    if mode == Mode::Downgrade {
        let irreversible = |i: usize| graph.revs[i].down.is_none() && !graph.revs[i].repeatable;
        if let Some(&(i, _)) = steps.iter().find(|(i, _)| irreversible(*i)) {
            return Err(Error::Irreversible {
                id: graph.revs[i].id.clone(),
                path: graph.revs[i].origin.clone(),
            });
        }
    }
    Ok(steps)
}

/// The versioned revisions `target` asks to be applied, as a set over the graph's nodes.
fn target_set(graph: &Graph, applied: &[bool], target: &Target, mode: Mode) -> Result<Vec<bool>, Error> {
    let wrong_way = || Error::UnknownTarget { target: format!("{target} (not {} target)", mode_word(mode)) };
    // `n` more (or fewer) versioned revisions, in canonical order.
    let moved = |n: usize, up: bool| {
        let mut set = applied.to_vec();
        let candidates = (0..graph.len()).filter(|&i| applied[i] != up && !graph.revs[i].repeatable);
        let chosen: Vec<usize> =
            if up { candidates.take(n).collect() } else { candidates.rev().take(n).collect() };
        for i in chosen {
            set[i] = up;
        }
        set
    };
    Ok(match (target, mode) {
        (Target::Relative(n), Mode::Upgrade | Mode::Stamp) if *n > 0 => moved(*n as usize, true),
        (Target::Relative(n), Mode::Downgrade | Mode::Stamp) if *n < 0 => {
            moved(n.unsigned_abs() as usize, false)
        }
        (Target::Relative(0), Mode::Stamp) => applied.to_vec(),
        (Target::Relative(_), _) => return Err(wrong_way()),
        (Target::Base, _) => vec![false; graph.len()],
        (Target::Release(v), _) => {
            let released = release_nodes(graph, v);
            if released.is_empty() {
                return Err(Error::UnknownTarget { target: target.to_string() });
            }
            let keep = graph.closure(&released);
            match mode {
                // Down to a release: remove what is not part of it.
                Mode::Downgrade => applied.iter().zip(&keep).map(|(&a, &k)| a && k).collect(),
                _ => keep,
            }
        }
        // Every head stays: a downgrade to `heads` removes nothing.
        (Target::Heads, Mode::Downgrade) => applied.to_vec(),
        (Target::Heads, _) => graph.closure(&graph.heads),
        (Target::Head | Target::BranchHead(_) | Target::Revision(_), _) => {
            let node = target_node(graph, target)?;
            if mode != Mode::Downgrade {
                graph.closure(&[node])
            } else if !applied[node] {
                return Err(Error::TargetNotApplied { id: graph.revs[node].id.clone() });
            } else {
                // Only what builds on the target goes; other branches stay.
                let mut remove = graph.descendants(&[node]);
                remove[node] = false;
                applied.iter().zip(remove).map(|(&a, r)| a && !r).collect()
            }
        }
    })
}

/// The one node `head`, `<branch>@head` or a revision id names.
fn target_node(graph: &Graph, target: &Target) -> Result<usize, Error> {
    match target {
        Target::Head => single(graph, &graph.heads, target),
        Target::BranchHead(b) => {
            let heads =
                graph.branch_heads(b).ok_or_else(|| Error::UnknownTarget { target: target.to_string() })?;
            single(graph, &heads, target)
        }
        Target::Revision(r) => resolve(graph, r),
        _ => Err(Error::UnknownTarget { target: target.to_string() }),
    }
}

/// Repeatable revisions come with a complete upgrade, and make way for any downgrade.
fn place_repeatables(graph: &Graph, applied: &[bool], target_set: &mut [bool], mode: Mode) {
    let versioned = |i: &usize| !graph.revs[*i].repeatable;
    let all_versioned = (0..graph.len()).filter(versioned).all(|i| target_set[i]);
    let removes_versioned = (0..graph.len()).filter(versioned).any(|i| applied[i] && !target_set[i]);
    for i in (0..graph.len()).filter(|i| !versioned(i)) {
        target_set[i] = match mode {
            Mode::Downgrade => applied[i] && !removes_versioned,
            _ => all_versioned,
        };
    }
}

/// The steps from `applied` to `target_set`: removals children first, then
/// additions parents first, as the mode allows.
fn steps_between(
    graph: &Graph,
    applied: &[bool],
    target_set: &[bool],
    mode: Mode,
) -> Vec<(usize, Direction)> {
    let mut steps = Vec::new();
    if mode != Mode::Upgrade {
        steps.extend(
            (0..graph.len()).rev().filter(|&i| applied[i] && !target_set[i]).map(|i| (i, Direction::Down)),
        );
    }
    if mode != Mode::Downgrade {
        steps.extend((0..graph.len()).filter(|&i| !applied[i] && target_set[i]).map(|i| (i, Direction::Up)));
    }
    steps
}

fn mode_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Upgrade => "an upgrade",
        Mode::Downgrade => "a downgrade",
        Mode::Stamp => "a stamp",
    }
}

fn single(graph: &Graph, heads: &[usize], target: &Target) -> Result<usize, Error> {
    match heads {
        [h] => Ok(*h),
        [] => Err(Error::UnknownTarget { target: target.to_string() }),
        _ => Err(Error::AmbiguousTarget {
            target: target.to_string(),
            heads: heads.iter().map(|&h| graph.revs[h].id.clone()).collect(),
        }),
    }
}

/// An exact id, else a unique prefix.
pub(crate) fn resolve(graph: &Graph, text: &str) -> Result<usize, Error> {
    if let Some(i) = graph.get(text) {
        return Ok(i);
    }
    let matches: Vec<usize> =
        (0..graph.len()).filter(|&i| graph.revs[i].id.as_str().starts_with(text)).collect();
    match matches.as_slice() {
        [i] => Ok(*i),
        [] => Err(Error::UnknownTarget { target: text.to_owned() }),
        _ => Err(Error::AmbiguousPrefix {
            prefix: text.to_owned(),
            candidates: matches.iter().map(|&i| graph.revs[i].id.clone()).collect(),
        }),
    }
}

/// What to do when the database and the code disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Refuse to run.
    Error,
    /// Run, with a warning in the report and the log.
    Warn,
    /// Run silently.
    Ignore,
}

/// How drift between the ledger and the code is handled.
///
/// ```
/// use pgskein::config::{DriftPolicy, Policy};
/// let lenient = DriftPolicy { changed_checksum: Policy::Warn, ..DriftPolicy::default() };
/// assert_eq!(lenient.ahead, Policy::Warn);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriftPolicy {
    /// An applied revision whose file changed. Default: [`Policy::Error`].
    pub changed_checksum: Policy,
    /// Applied revisions unknown to the code that descend from its heads: a newer
    /// release migrated the database and this older replica is starting. Default: [`Policy::Warn`].
    pub ahead: Policy,
    /// Applied revisions unknown to the code that do not descend from its heads. Default: [`Policy::Error`].
    pub diverged: Policy,
}

impl Default for DriftPolicy {
    fn default() -> Self {
        Self { changed_checksum: Policy::Error, ahead: Policy::Warn, diverged: Policy::Error }
    }
}

/// The ledger read against the graph.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reconciled {
    /// `applied[i]`: node `i` is recorded as applied.
    pub(crate) applied: Vec<bool>,
    /// Applied rows unknown to the code, oldest first.
    pub(crate) unknown: Vec<String>,
    /// Whether the unknown rows descend from the code's heads (ahead) or not (diverged).
    pub(crate) ahead: bool,
    /// Code revisions that unknown applied revisions build on: never downgraded by this code.
    pub(crate) pinned: Vec<bool>,
    /// Applied revisions whose checksum differs from the code's.
    pub(crate) changed: Vec<usize>,
    /// The recorded checksum of each revision in `changed`.
    pub(crate) changed_from: Vec<String>,
    /// Rows in state `failed` or `running`, oldest first.
    pub(crate) blocked: Vec<Record>,
}

pub(crate) fn reconcile(graph: &Graph, rows: &[Record]) -> Reconciled {
    use std::collections::HashMap;
    let mut r = Reconciled {
        applied: vec![false; graph.len()],
        pinned: vec![false; graph.len()],
        ..Default::default()
    };
    let mut unknown_rows: HashMap<&str, &Record> = HashMap::new();
    for row in rows {
        if !row.is_applied() {
            r.blocked.push(row.clone());
            continue;
        }
        match graph.get(&row.id) {
            Some(i) if graph.revs[i].repeatable => {
                // A changed repeatable revision is pending again, not drift; its
                // row is replaced when it is re-applied.
                if graph.revs[i].checksum.to_hex() == row.checksum {
                    r.applied[i] = true;
                }
            }
            Some(i) => {
                r.applied[i] = true;
                if graph.revs[i].checksum.to_hex() != row.checksum {
                    r.changed.push(i);
                    r.changed_from.push(row.checksum.clone());
                }
            }
            None => {
                r.unknown.push(row.id.clone());
                unknown_rows.insert(&row.id, row);
            }
        }
    }
    if r.unknown.is_empty() {
        return r;
    }
    // The database is ahead when its unknown part is complete (every recorded
    // parent is known or recorded) and each of its tips builds on a code head.
    let has_unknown_child: std::collections::HashSet<&str> = unknown_rows
        .values()
        .flat_map(|row| row.revises.iter().chain(&row.depends_on))
        .map(String::as_str)
        .filter(|p| unknown_rows.contains_key(p))
        .collect();
    let mut built_on = Vec::new();
    let mut complete = true;
    let mut reaches_head = true;
    for u in r.unknown.iter().filter(|u| !has_unknown_child.contains(u.as_str())) {
        let mut stack = vec![u.as_str()];
        let mut seen = std::collections::HashSet::new();
        let mut found_head = false;
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(row) = unknown_rows.get(id) {
                stack.extend(row.revises.iter().chain(&row.depends_on).map(String::as_str));
            } else if let Some(i) = graph.get(id) {
                // A code node's ancestors are code nodes, so a head is only ever reached directly.
                found_head |= graph.heads.contains(&i);
                built_on.push(i);
            } else {
                complete = false;
            }
        }
        reaches_head &= found_head;
    }
    r.pinned = graph.closure(&built_on);
    r.ahead = complete && reaches_head && r.applied.iter().all(|&a| a);
    r
}

/// Refuses plans that would remove a revision that unknown applied revisions build on.
pub(crate) fn check_pinned(
    graph: &Graph,
    rec: &Reconciled,
    steps: &[(usize, Direction)],
) -> Result<(), Error> {
    match steps.iter().find(|(i, d)| *d == Direction::Down && rec.pinned[*i]) {
        Some(&(i, _)) => {
            Err(Error::DowngradeBelowUnknown { id: graph.revs[i].id.clone(), unknown: rec.unknown.clone() })
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

/// The steps towards `target` from `rec`: a downgrade for `base`, `-N` and
/// applied revisions, else an upgrade. Steps name graph nodes, so whoever
/// runs or renders them holds the revisions, never looks them up by id.
pub(crate) fn either_way(
    graph: &Graph,
    rec: &Reconciled,
    target: &Target,
) -> Result<Vec<(usize, Direction)>, Error> {
    let down = match target {
        Target::Base | Target::Relative(..0) => true,
        Target::Revision(r) => resolve(graph, r).map(|i| rec.applied[i]).unwrap_or(false),
        _ => false,
    };
    let mut steps = plan(graph, &rec.applied, target, if down { Mode::Downgrade } else { Mode::Upgrade })?;
    if down && steps.is_empty() {
        steps = plan(graph, &rec.applied, target, Mode::Upgrade)?;
    }
    check_pinned(graph, rec, &steps)?;
    Ok(steps)
}

impl Plan {
    /// The public plan of internal steps.
    pub(crate) fn of(graph: &Graph, steps: &[(usize, Direction)]) -> Plan {
        Plan {
            steps: steps
                .iter()
                .map(|&(i, direction)| Step { id: graph.revs[i].id.clone(), direction })
                .collect(),
        }
    }
}

/// Refuses `transaction none` revisions in one transaction for the whole
/// plan: they cannot run inside one.
pub(crate) fn check_single(graph: &Graph, steps: &[(usize, Direction)]) -> Result<(), Error> {
    match steps.iter().map(|&(i, _)| &graph.revs[i]).find(|r| r.tx == crate::migration::Transaction::None) {
        Some(r) => Err(Error::NoTransactionInSingleMode { id: r.id.clone(), path: r.origin.clone() }),
        None => Ok(()),
    }
}

/// Revisions that declare a release at or before `version`.
pub(crate) fn release_nodes(graph: &Graph, version: &semver::Version) -> Vec<usize> {
    (0..graph.len()).filter(|&i| graph.revs[i].release.as_ref().is_some_and(|r| r <= version)).collect()
}

/// The newest release whose revisions (and what they build on) are all applied.
pub(crate) fn newest_release(graph: &Graph, applied: &[bool]) -> Option<semver::Version> {
    let mut versions: Vec<&semver::Version> = graph.revs.iter().filter_map(|r| r.release.as_ref()).collect();
    versions.sort();
    versions.dedup();
    versions
        .into_iter()
        .rev()
        .find(|v| graph.closure(&release_nodes(graph, v)).iter().zip(applied).all(|(&need, &a)| !need || a))
        .cloned()
}

/// Refuses a target that can never be planned (unknown names, a step count in
/// the wrong direction, an ambiguous head) before any connection or lock.
pub(crate) fn check_target(graph: &Graph, target: &Target, mode: Mode) -> Result<(), Error> {
    let unknown = || Error::UnknownTarget { target: target.to_string() };
    match target {
        Target::Relative(n) if (mode == Mode::Upgrade && *n < 0) || (mode == Mode::Downgrade && *n > 0) => {
            Err(Error::UnknownTarget { target: format!("{target} (not {} target)", mode_word(mode)) })
        }
        Target::Revision(r) => resolve(graph, r).map(drop),
        Target::Head => single(graph, &graph.heads, target).map(drop),
        Target::BranchHead(b) => single(graph, &graph.branch_heads(b).ok_or_else(unknown)?, target).map(drop),
        Target::Release(v) if release_nodes(graph, v).is_empty() => Err(unknown()),
        _ => Ok(()),
    }
}
