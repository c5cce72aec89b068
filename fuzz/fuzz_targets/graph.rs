//! The graph builder and the planner: a handful of small revision files whose
//! headers come from the input. Building must give a graph or an error, and
//! planning on a built graph must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgskein::{MigrationSet, Target};

/// Directive lines an input byte can pick, naming the revisions of the set.
const LINES: &[&str] = &[
    "-- pgskein: revises r0",
    "-- pgskein: revises r1",
    "-- pgskein: revises r2",
    "-- pgskein: revises r3",
    "-- pgskein: revises r1, r2",
    "-- pgskein: revises r0 r3",
    "-- pgskein: revises r4",
    "-- pgskein: depends-on r0",
    "-- pgskein: depends-on r2",
    "-- pgskein: depends-on r5",
    "-- pgskein: branch left",
    "-- pgskein: branch right",
    "-- pgskein: transaction none",
    "-- pgskein: release 1.0.0",
    "-- pgskein: release 2.0.0",
    "-- pgskein: message m",
];

fuzz_target!(|data: &[u8]| {
    // Byte 0: how many files (1 to 6) and whether several heads are allowed;
    // then for each file a count of header lines and their picks.
    let Some((&first, mut rest)) = data.split_first() else { return };
    let files = usize::from(first % 6) + 1;
    let mut builder = MigrationSet::builder().allow_multiple_heads(first & 0x80 != 0);
    for n in 0..files {
        let mut text = String::new();
        if let Some((&count, tail)) = rest.split_first() {
            rest = tail;
            for _ in 0..count % 4 {
                let Some((&pick, tail)) = rest.split_first() else { break };
                rest = tail;
                text.push_str(LINES[usize::from(pick) % LINES.len()]);
                text.push('\n');
            }
        }
        text.push_str("-- pgskein: up\nSELECT 1;\n");
        if n % 2 == 0 {
            text.push_str("-- pgskein: down\nSELECT 1;\n");
        }
        builder = builder.file(&format!("r{n}.sql"), text.as_bytes());
    }
    let Ok(set) = builder.build() else { return };
    let ids: Vec<String> = set.revisions().map(|r| r.id().as_str().to_owned()).collect();
    let applied = rest.first().map_or(0, |&b| usize::from(b)) % (ids.len() + 1);
    let applied: Vec<&str> = ids.iter().take(applied).map(String::as_str).collect();
    for target in ["head", "heads", "base", "+1", "-1", "+3", "-2", "r0", "r", "left@head", "right@head"] {
        let target: Target = target.parse().expect("a valid target");
        let _ = set.plan_from(applied.iter().copied(), &target);
    }
});
