//! `embed_migrations!` against the runtime loaders: the same revisions,
//! checksums and digest, the same errors (as compile errors), and a set that
//! runs.

use std::path::PathBuf;
use std::process::Command;

use include_dir::{Dir, include_dir};
use pgskein::{Embedded, MigrationSet, Migrator, Revision};

use crate::common::fresh_db;

static EXAMPLE: Embedded = pgskein::embed_migrations!("migrations");
static TRICKY: Embedded = pgskein::embed_migrations!("tests/fixtures/embed_tricky");
static TRICKY_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/tests/fixtures/embed_tricky");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Everything a SQL revision carries except where it came from.
fn contents(r: &Revision) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        r.id(),
        r.revises(),
        r.depends_on(),
        r.branch(),
        r.message(),
        r.release(),
        r.transaction(),
        r.up().sql(),
        r.down().map(|b| b.sql()),
        r.verify(),
        r.is_repeatable(),
        r.lock_timeout(),
        r.statement_timeout(),
        r.checksum(),
        r.kind(),
    )
}

/// Asserts that the embedded set and the set read from `dir` at run time
/// agree revision by revision, file by file and in their digest.
fn assert_agrees_with_disk(embedded: &Embedded, relative: &str) {
    let from_disk = MigrationSet::from_dir(root().join(relative)).expect("the directory loads at run time");
    let set = embedded.set().expect("the embedded set builds");
    assert_eq!(set.len(), from_disk.len());
    for (a, b) in set.revisions().zip(from_disk.revisions()) {
        assert_eq!(contents(a), contents(b), "revision {} differs", a.id());
        assert_eq!(a.origin(), format!("{relative}/{}.sql", a.id()), "errors name the file as written");
    }
    assert_eq!(embedded.len(), from_disk.len(), "one embedded file per revision");
    for file in embedded.files() {
        let revision = from_disk.get(file.id()).expect("every embedded file is a revision on disk");
        assert_eq!(file.checksum(), revision.checksum(), "checksum of {}", file.path());
        let on_disk = std::fs::read(root().join(file.path())).unwrap();
        assert_eq!(file.contents(), on_disk.as_slice(), "bytes of {}", file.path());
    }
    assert_eq!(embedded.digest(), from_disk.fingerprint(), "the digest computed at compile time");
    assert_eq!(embedded.digest(), set.fingerprint());
}

#[test]
fn embedded_example_set_agrees_with_the_runtime_loader() {
    assert_agrees_with_disk(&EXAMPLE, "migrations");
}

#[test]
fn embedded_tricky_files_agree_with_the_runtime_loader() {
    // A BOM and CRLF endings, `transaction none`, a verify section of
    // comments only, a repeatable revision, a dollar-quoted body; a hidden
    // file, a text file and a subdirectory that are not revisions.
    assert_agrees_with_disk(&TRICKY, "tests/fixtures/embed_tricky");
    let ids: Vec<&str> = TRICKY.files().iter().map(|f| f.id()).collect();
    assert_eq!(
        ids,
        ["0001_crlf_bom", "0002_no_transaction", "0003_verified", "0004_comment_only_verify", "views"]
    );
}

#[test]
fn embedded_set_agrees_with_the_include_dir_loader() {
    let bundled = MigrationSet::from_embedded(&TRICKY_DIR).unwrap();
    let set = TRICKY.set().unwrap();
    let a: Vec<String> = set.revisions().map(contents).collect();
    let b: Vec<String> = bundled.revisions().map(contents).collect();
    assert_eq!(a, b);
    assert_eq!(TRICKY.digest(), bundled.fingerprint());
}

#[test]
fn embedded_set_takes_rust_revisions_and_backfills_through_its_builder() {
    let set = EXAMPLE
        .builder()
        .backfill(
            pgskein::backfill::Backfill::sql("documents_sha256_fill", "0003_enhance_documents")
                .table("documents")
                .key("id")
                .statement(
                    "UPDATE documents SET sha256 = encode(sha256(convert_to(body, 'UTF8')), 'hex') \
                     WHERE id >= $1 AND id < $2",
                ),
        )
        .build()
        .unwrap();
    assert_eq!(set.len(), EXAMPLE.len());
    assert_eq!(set.declared_backfills().len(), 1);
    assert_eq!(set.fingerprint(), EXAMPLE.digest(), "a backfill adds no revision to the digest");
}

#[tokio::test]
async fn embedded_set_migrates_to_head_and_the_next_run_takes_the_fast_path() {
    let db = fresh_db("embed_run").await;
    let client = db.connect().await.unwrap();
    let report = EXAMPLE.run(&client).await.unwrap();
    assert_eq!(report.steps.len(), EXAMPLE.len());
    let again = EXAMPLE.run(&client).await.unwrap();
    assert!(again.steps.is_empty());
    assert!(again.fast_path, "a second start at head returns after the digest check");
    let status = EXAMPLE.set().unwrap().status(&client).await.unwrap();
    assert!(status.pending.is_empty());
}

/// The files the macro crate compiles in from pgskein are pgskein's own (links
/// in the repository, copies in the published package): one parser, one
/// error text, one digest, one rule for which files are revisions.
#[test]
fn the_macro_crate_compiles_pgskeins_own_parser_files() {
    for (shared, own) in [
        ("macros/src/parse.rs", "src/source/parse.rs"),
        ("macros/src/parse_error.rs", "src/source/parse_error.rs"),
        ("macros/src/fs.rs", "src/source/fs.rs"),
        ("macros/src/digest.rs", "src/digest.rs"),
        ("macros/src/split.rs", "src/split.rs"),
        ("macros/src/id.rs", "src/id.rs"),
        ("macros/src/migration.rs", "src/migration.rs"),
    ] {
        let read = |p: &str| std::fs::read(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(read(shared) == read(own), "{shared} is not {own}");
    }
}

/// Checks a tiny crate whose `migrations/` holds `files` and whose code
/// calls `embed_migrations!(dir)` from this checkout; returns whether it
/// compiled and cargo's messages.
fn cargo_check(name: &str, files: &[(&str, &str)], dir: &str) -> (bool, String) {
    let krate = std::env::temp_dir().join(format!("pgskein-embed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&krate);
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::create_dir_all(krate.join("migrations")).unwrap();
    for (file, content) in files {
        std::fs::write(krate.join("migrations").join(file), content).unwrap();
    }
    let manifest = format!(
        "[package]\nname = \"embed-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\npgskein-macros = {{ path = {:?} }}\n\n[workspace]\n",
        root().join("macros").display().to_string()
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    // Only the macro runs: a directory that does not load expands to compile
    // errors alone, so the crate needs nothing of pgskein's runtime.
    let code = format!("pub fn migrations() {{ pgskein_macros::embed_migrations!({dir:?}); }}\n");
    std::fs::write(krate.join("src/lib.rs"), code).unwrap();
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["check", "--quiet", "--offline", "--color", "never"])
        .current_dir(&krate)
        // A target directory of its own: the running `cargo test` holds the lock on its own.
        .env("CARGO_TARGET_DIR", root().join("target/embed-check"))
        .output()
        .expect("cargo runs");
    std::fs::remove_dir_all(&krate).unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn every_bad_file_is_a_compile_error_naming_its_file_and_line_as_at_run_time() {
    let files = [
        ("0001_ok.sql", "-- pgskein: up\nCREATE TABLE t (id int);\n"),
        (
            "0002_typo.sql",
            "-- pgskein: revises 0001_ok\n-- pgskein: dependson 0001_ok\n-- pgskein: up\nSELECT 1;\n",
        ),
        (
            "0003_concurrently.sql",
            "-- pgskein: revises 0002_typo\n-- pgskein: up\nSELECT 1;\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
        ),
        ("0004_empty.sql", "\n"),
    ];
    let (ok, stderr) = cargo_check("bad", &files, "migrations");
    assert!(!ok, "a bad migration must not compile:\n{stderr}");

    let mut builder = MigrationSet::builder();
    for (name, content) in files {
        builder = builder.file(&format!("migrations/{name}"), content.as_bytes());
    }
    let runtime: Vec<String> =
        builder.build_reporting_all().unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(runtime.len(), 3);
    assert!(
        runtime[0].starts_with("migrations/0002_typo.sql:2: unknown directive `dependson`"),
        "{runtime:?}"
    );
    assert!(
        runtime[1].starts_with("migrations/0003_concurrently.sql:4: CREATE INDEX CONCURRENTLY"),
        "{runtime:?}"
    );
    assert!(runtime[2].starts_with("migrations/0004_empty.sql: the file is empty"), "{runtime:?}");
    for message in &runtime {
        assert!(stderr.contains(&format!("error: {message}")), "compile errors lack {message:?}:\n{stderr}");
    }
}

#[test]
fn a_missing_directory_is_a_compile_error_naming_it() {
    let (ok, stderr) = cargo_check("missing", &[], "db/migrations");
    assert!(!ok);
    assert!(stderr.contains("error: cannot read the migration directory \"db/migrations\""), "{stderr}");
}
