//! The crate's modules depend one way, from pure vocabulary to the edges, as
//! `docs/architecture.md` draws them: every `crate::...` path a module names
//! must lead to a module listed before it in [`LAYERS`]. Read from the
//! source files, so no module can import from one above it unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The modules, bottom to top. A module is a file of `src/` (`a/b.rs` is
/// `a::b`, `a/mod.rs` and `a.rs` are `a`); a file not listed belongs to the
/// nearest listed module above it in the path (`cli::render` is `cli`).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "vocabulary",
        &[
            "id",
            "quote",
            "digest",
            "split",
            "source::parse_error",
            "source::fs",
            "report",
            "state",
            "status",
            "error",
        ],
    ),
    (
        "pure",
        &[
            "rust",
            "migration",
            "rust::revision",
            "source::parse",
            "graph",
            "plan",
            "hooks",
            "config",
            "backfill::decl",
            "source",
            "source::embedded",
            "lint",
        ],
    ),
    ("I/O", &["pooler", "ledger", "lock", "session", "executor", "backfill", "preflight", "offline"]),
    ("orchestration", &["migrator"]),
    ("edges", &["build", "guide", "connstr", "cli", "testing", "lib"]),
];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/a/b.rs` as `a::b`, `src/a/mod.rs` and `src/a.rs` as `a`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let parts: Vec<String> =
        rel.iter().map(|p| p.to_string_lossy().into_owned()).filter(|p| p != "mod").collect();
    parts.join("::")
}

/// The listed module a module path belongs to: itself, or its nearest listed parent.
fn owner(module: &str, listed: &BTreeMap<&str, usize>) -> Option<String> {
    let mut m = module.to_owned();
    loop {
        if listed.contains_key(m.as_str()) {
            return Some(m);
        }
        m = m.rsplit_once("::")?.0.to_owned();
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments, string literals and unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The module paths named after `prefix` (`crate::` or `super::`) in
/// `code`, expanded through `use crate::{a, b::c}` groups; names that are not
/// modules (re-exported items) are returned as they are and resolved against
/// the root's re-exports.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    paths.push(item.split(" as ").next().unwrap().to_owned());
                }
            }
            continue;
        }
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        paths.push(rest[..end].trim_end_matches(':').to_owned());
    }
    paths
}

/// The module a `crate::` path leads to: the longest listed module prefix, or,
/// for a name re-exported at the root (`crate::Error`), the module it comes from.
fn target(
    path: &str,
    listed: &BTreeMap<&str, usize>,
    reexports: &BTreeMap<String, String>,
) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    for n in (1..=segments.len()).rev() {
        let candidate = segments[..n].join("::");
        if listed.contains_key(candidate.as_str()) {
            return Some(candidate);
        }
    }
    reexports.get(segments[0]).cloned()
}

/// `pub use module::{A, B}` at the root: A and B come from `module`.
fn root_reexports(lib: &str, listed: &BTreeMap<&str, usize>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for statement in code(lib).split(';') {
        let Some(used) = statement.trim().strip_prefix("pub use ") else { continue };
        let used = used.trim();
        let (module, items) = match used.split_once("::{") {
            Some((m, items)) => {
                (m, items.trim_end_matches('}').split(',').map(str::trim).collect::<Vec<_>>())
            }
            None => match used.rsplit_once("::") {
                Some((m, item)) => (m, vec![item]),
                None => continue,
            },
        };
        if let Some(owner) = owner(module.trim_start_matches("crate::"), listed) {
            for item in items.into_iter().filter(|i| !i.is_empty()) {
                map.insert(item.split(" as ").last().unwrap().trim().to_owned(), owner.clone());
            }
        }
    }
    map
}

#[test]
fn no_module_imports_from_a_module_above_it() {
    let order: Vec<&str> = LAYERS.iter().flat_map(|(_, ms)| ms.iter().copied()).collect();
    let listed: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let reexports = root_reexports(&std::fs::read_to_string(src().join("lib.rs")).unwrap(), &listed);
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut upward = Vec::new();
    let mut edges = 0;
    for file in all {
        let module = module_of(&file);
        if module.ends_with("tests") || module.starts_with("bin") {
            continue;
        }
        let Some(from) = owner(&module, &listed) else {
            panic!("{} is in no layer: add it to LAYERS (and to docs/architecture.md)", file.display());
        };
        let code = code(&std::fs::read_to_string(&file).unwrap());
        // `super::x` in `a::b` is `a::x`; in a top module, `crate::x`.
        let parent = module.rsplit_once("::").map(|(p, _)| p.to_owned());
        let relative = paths_after(&code, "super::").into_iter().map(|p| match &parent {
            Some(parent) => format!("{parent}::{p}"),
            None => p,
        });
        for path in paths_after(&code, "crate::").into_iter().chain(relative) {
            let Some(to) = target(&path, &listed, &reexports) else { continue };
            edges += 1;
            if to != from && listed[to.as_str()] > listed[from.as_str()] {
                upward.push(format!("{module} uses {path} ({to} is above {from})"));
            }
        }
    }
    // A parser that found nothing would pass: the crate has hundreds of edges.
    assert!(edges > 300, "only {edges} imports were resolved: the scan is broken");
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "imports from above:\n{}", upward.join("\n"));
}
