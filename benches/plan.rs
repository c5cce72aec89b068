//! P4 (SPEC §13): planning over large generated revision graphs, without a
//! database. `cargo bench --bench plan`.
//!
//! Each graph has N revisions in 100 segments. In every segment a side branch
//! forks from the trunk, both sides grow (interleaved, so ids interleave), some
//! trunk revisions `depends-on` a revision of the side branch, and a merge
//! revision revises both tips. Sizes: 1,000, 10,000 and 100,000 revisions.
//!
//! Measured, per size (criterion reports time and revisions per second; the
//! time per revision is the inverse, and linear planning keeps it flat):
//! - `build`: graph validation and ordering (`SetBuilder::build`), files
//!   already parsed;
//! - `plan/from_empty`: `plan_from` with nothing applied, to `head`;
//! - `plan/from_half`: `plan_from` with the first half of the canonical
//!   order applied, to `head`;
//! - `load`: parsing the files from memory and building the set, as
//!   `MigrationSet::from_embedded` does at every start of a service.
//!
//! `PGSKEIN_BENCH_SIZES=1000,10000` picks other sizes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use pgskein::{MigrationSet, SetBuilder, Target};

const SEGMENTS: usize = 100;

/// One generated revision file: (path, contents).
type File = (String, String);

/// A graph of `n` revisions with `SEGMENTS` branches and merges, and
/// `depends-on` edges from the trunk into the side branches.
fn generate(n: usize) -> Vec<File> {
    assert!(n >= SEGMENTS * 4, "at least 4 revisions per segment");
    let mut files = Vec::with_capacity(n);
    let mut next = 0usize;
    let mut id = |kind: &str| {
        next += 1;
        format!("r{next:06}_{kind}")
    };
    let body = |name: &str| {
        format!(
            "-- pgskein: up\nCREATE TABLE {name} (id bigint PRIMARY KEY, label text NOT NULL DEFAULT 'new');\n\
             -- pgskein: down\nDROP TABLE {name};\n"
        )
    };
    let revision = |id: &str, revises: &[&str], depends_on: &[&str]| {
        let mut text = String::new();
        if !revises.is_empty() {
            text.push_str(&format!("-- pgskein: revises {}\n", revises.join(" ")));
        }
        if !depends_on.is_empty() {
            text.push_str(&format!("-- pgskein: depends-on {}\n", depends_on.join(" ")));
        }
        text.push_str(&body(&format!("t_{id}")));
        (format!("{id}.sql"), text)
    };
    let root = id("root");
    files.push(revision(&root, &[], &[]));
    let mut trunk = root;
    let per_segment = (n - 1) / SEGMENTS;
    for segment in 0..SEGMENTS {
        // The last segment takes the remainder.
        let size = if segment + 1 == SEGMENTS { n - files.len() } else { per_segment };
        // `size - 1` revisions on the two sides, then the merge.
        let sides = size - 1;
        let mut side: Option<String> = None;
        let mut side_history: Vec<String> = Vec::new();
        let fork = trunk.clone();
        for k in 0..sides {
            if k % 2 == 0 {
                let rid = id("side");
                let parent = side.clone().unwrap_or_else(|| fork.clone());
                files.push(revision(&rid, &[&parent], &[]));
                side_history.push(rid.clone());
                side = Some(rid);
            } else {
                let rid = id("trunk");
                // Every fifth trunk revision also depends on an earlier side revision.
                let deps: Vec<&str> = if k % 10 == 1 && side_history.len() >= 2 {
                    vec![side_history[side_history.len() - 2].as_str()]
                } else {
                    Vec::new()
                };
                files.push(revision(&rid, &[&trunk], &deps));
                trunk = rid;
            }
        }
        let merge = id("merge");
        let side = side.expect("each segment has a side branch");
        if trunk == fork {
            files.push(revision(&merge, &[&side], &[]));
        } else {
            files.push(revision(&merge, &[&trunk, &side], &[]));
        }
        trunk = merge;
    }
    assert_eq!(files.len(), n);
    files
}

fn builder(files: &[File]) -> SetBuilder {
    files.iter().fold(MigrationSet::builder(), |b, (path, text)| b.file(path, text.as_bytes()))
}

fn sizes() -> Vec<usize> {
    std::env::var("PGSKEIN_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().replace('_', "").parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000])
}

fn planning(c: &mut Criterion) {
    for n in sizes() {
        let files = generate(n);
        let set = builder(&files).build().expect("the generated graph is valid");
        assert_eq!(set.heads().len(), 1);
        let applied_half: Vec<String> =
            set.revisions().take(n / 2).map(|r| r.id().as_str().to_owned()).collect();
        let head = Target::Head;
        // Sanity: the plans are what they should be.
        assert_eq!(set.plan_from([], &head).unwrap().steps.len(), n);
        assert_eq!(
            set.plan_from(applied_half.iter().map(String::as_str), &head).unwrap().steps.len(),
            n - n / 2
        );

        let mut group = c.benchmark_group("plan");
        configure(&mut group, n);
        group.bench_with_input(BenchmarkId::new("from_empty", n), &set, |b, set| {
            b.iter(|| black_box(set.plan_from([], &head).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("from_half", n), &set, |b, set| {
            b.iter(|| black_box(set.plan_from(applied_half.iter().map(String::as_str), &head).unwrap()))
        });
        group.finish();

        let mut group = c.benchmark_group("build");
        configure(&mut group, n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || builder(&files),
                |builder| black_box(builder.build().unwrap()),
                BatchSize::PerIteration,
            )
        });
        group.finish();

        let mut group = c.benchmark_group("load");
        configure(&mut group, n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(builder(&files).build().unwrap()))
        });
        group.finish();
    }
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    group.throughput(Throughput::Elements(n as u64));
    if n >= 50_000 {
        group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(8));
    } else {
        group.sample_size(30).measurement_time(Duration::from_secs(4));
    }
    group.warm_up_time(Duration::from_secs(1));
}

criterion_group!(benches, planning);
criterion_main!(benches);
