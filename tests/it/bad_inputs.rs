//! R3: the catalogue of bad inputs. Each gives one exact error variant whose
//! message names the file or revision and says what to do, and leaves the
//! database as it was: catalog, schemas, and every ledger, event and meta row.
//!
//! Cases already covered elsewhere in tests/it are not repeated here: a
//! changed checksum, ahead and diverged histories (drift.rs), a revision
//! failing half-way, a failed `transaction none` revision blocking the next
//! run, an irreversible downgrade to base, a verify section returning false, a
//! schema name with quotes and spaces, an over-long schema name (failures.rs),
//! a lock held past the timeout by another run (locking.rs), `transaction
//! none` in single-transaction mode (example.rs) and dropped connections
//! mid-run (restart.rs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgskein::error::ParseErrorKind;
use pgskein::status::Resolution;
use pgskein::{Config, Error, MigrationSet, Migrator, Target};
use tokio_postgres::Client;

use crate::common::{catalog, chain, fresh_db, ledger};

/// Everything a refused operation must leave alone: the user schema, the
/// list of schemas, and every row of the bookkeeping tables.
async fn snapshot(client: &Client) -> Vec<String> {
    let mut out = catalog(client).await;
    for row in client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
             AND nspname <> 'information_schema' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
    {
        let schema: String = row.get(0);
        out.push(format!("schema {schema}"));
        if schema == "pgskein" {
            for table in ["applied", "events", "meta"] {
                let sql = format!("SELECT t::text FROM pgskein.{table} t ORDER BY 1");
                for r in client.query(&sql, &[]).await.unwrap() {
                    out.push(format!("{table} {}", r.get::<_, String>(0)));
                }
            }
        }
    }
    out
}

fn file(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

const A: &str = "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n";
const B: &str =
    "-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\n-- pgskein: down\nDROP TABLE b;\n";
const C: &str =
    "-- pgskein: revises 0002_b\n-- pgskein: up\nCREATE TABLE c (id int);\n-- pgskein: down\nDROP TABLE c;\n";

/// Three reversible revisions in a line: tables a, b, c.
fn abc() -> MigrationSet {
    MigrationSet::builder()
        .file("0001_a.sql", A.as_bytes())
        .file("0002_b.sql", B.as_bytes())
        .file("0003_c.sql", C.as_bytes())
        .build()
        .unwrap()
}

/// A database with 0001 and 0002 of [`abc`] applied, and its snapshot.
async fn two_of_three(prefix: &str) -> (pgskein::testing::TestDatabase, Client, Vec<String>) {
    let db = fresh_db(prefix).await;
    let client = db.connect().await.unwrap();
    abc().upgrade(&client, &"0002_b".parse().unwrap()).await.unwrap();
    let before = snapshot(&client).await;
    (db, client, before)
}

/// Removes the one `fail` event of revision `id` from a snapshot: a refused
/// revision leaves its failure in the audit log, and nothing else.
fn without_the_failure(mut snapshot: Vec<String>, id: &str) -> Vec<String> {
    let is_failure = |l: &String| l.starts_with("events ") && l.contains(&format!(",fail,{id},"));
    assert_eq!(snapshot.iter().filter(|l| is_failure(l)).count(), 1, "one failure of {id} is logged");
    snapshot.retain(|l| !is_failure(l));
    snapshot
}

fn assert_mentions(err: &Error, parts: &[&str]) {
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "the message should mention {part:?}: {message}");
    }
}

// ----- files refused when the set is loaded -----

type Check = fn(&Error) -> bool;

/// A bad set of files, the variant it must give, and what its message must say.
struct LoadCase {
    what: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    check: Check,
    says: &'static [&'static str],
}

fn parse_kind(e: &Error, path: &str, line: Option<usize>) -> Option<ParseErrorKind> {
    match e {
        Error::Parse { path: p, line: l, kind } if p == path && *l == line => Some(kind.clone()),
        _ => None,
    }
}

fn load_cases() -> Vec<LoadCase> {
    let a = ("0001_a.sql", file(A));
    let b = ("0002_b.sql", file(B));
    vec![
        LoadCase {
            what: "a cycle of three revisions",
            files: vec![
                ("0001_a.sql", file("-- pgskein: revises 0003_c\n-- pgskein: up\nSELECT 1;\n")),
                b.clone(),
                ("0003_c.sql", file(C)),
            ],
            check: |e| matches!(e, Error::Cycle { ids, files } if ids.len() == 4 && ids[0] == ids[3] && files.len() == 4),
            says: &[
                "cycle",
                "0001_a (0001_a.sql)",
                "0002_b (0002_b.sql)",
                "0003_c (0003_c.sql)",
                "cannot (indirectly) revise",
            ],
        },
        LoadCase {
            what: "a cycle closed by depends-on below a root",
            files: vec![
                a.clone(),
                (
                    "0002_b.sql",
                    file(
                        "-- pgskein: revises 0001_a\n-- pgskein: depends-on 0003_c\n-- pgskein: up\nSELECT 1;\n",
                    ),
                ),
                ("0003_c.sql", file(C)),
            ],
            check: |e| matches!(e, Error::Cycle { ids, .. } if ids.len() == 3),
            says: &["cycle", "0002_b (0002_b.sql)", "0003_c (0003_c.sql)"],
        },
        LoadCase {
            what: "a revision that revises itself",
            files: vec![
                a.clone(),
                ("0002_b.sql", file("-- pgskein: revises 0002_b\n-- pgskein: up\nSELECT 1;\n")),
            ],
            check: |e| parse_kind(e, "0002_b.sql", Some(1)) == Some(ParseErrorKind::SelfReference("revises")),
            says: &["0002_b.sql:1", "lists itself in `revises`"],
        },
        LoadCase {
            what: "a revision that depends on itself",
            files: vec![
                a.clone(),
                (
                    "0002_b.sql",
                    file(
                        "-- pgskein: revises 0001_a\n-- pgskein: depends-on 0002_b\n-- pgskein: up\nSELECT 1;\n",
                    ),
                ),
            ],
            check: |e| {
                parse_kind(e, "0002_b.sql", Some(2)) == Some(ParseErrorKind::SelfReference("depends-on"))
            },
            says: &["0002_b.sql:2", "lists itself in `depends-on`"],
        },
        LoadCase {
            what: "an unknown parent",
            files: vec![
                a.clone(),
                ("0002_b.sql", file("-- pgskein: revises 0000_gone\n-- pgskein: up\nSELECT 1;\n")),
            ],
            check: |e| matches!(e, Error::UnknownParent { id, relation: "revises", parent, path } if id.as_str() == "0002_b" && parent.as_str() == "0000_gone" && path == "0002_b.sql"),
            says: &["revision 0002_b (0002_b.sql) revises 0000_gone", "add the missing file"],
        },
        LoadCase {
            what: "an unknown depends-on",
            files: vec![
                a.clone(),
                (
                    "0002_b.sql",
                    file(
                        "-- pgskein: revises 0001_a\n-- pgskein: depends-on 0000_gone\n-- pgskein: up\nSELECT 1;\n",
                    ),
                ),
            ],
            check: |e| matches!(e, Error::UnknownParent { relation: "depends on", parent, .. } if parent.as_str() == "0000_gone"),
            says: &["0002_b (0002_b.sql) depends on 0000_gone", "fix the directive"],
        },
        LoadCase {
            what: "one id in two files",
            files: vec![("app/0001_a.sql", file(A)), ("lib/0001_a.sql", file(A))],
            check: |e| matches!(e, Error::DuplicateRevision { id, first, second } if id.as_str() == "0001_a" && first == "app/0001_a.sql" && second == "lib/0001_a.sql"),
            says: &["0001_a is defined twice", "app/0001_a.sql", "lib/0001_a.sql", "rename one"],
        },
        LoadCase {
            what: "two heads",
            files: vec![
                a.clone(),
                b.clone(),
                ("0003_c.sql", file("-- pgskein: revises 0001_a\n-- pgskein: up\nSELECT 1;\n")),
            ],
            check: |e| matches!(e, Error::MultipleHeads { heads } if heads.len() == 2),
            says: &[
                "2 heads: 0002_b, 0003_c",
                "add a merge revision",
                "`-- pgskein: revises 0002_b, 0003_c`",
            ],
        },
        LoadCase {
            what: "an unknown directive",
            files: vec![("0001_a.sql", file("-- pgskein: requires 0000_x\n-- pgskein: up\nSELECT 1;\n"))],
            check: |e| {
                parse_kind(e, "0001_a.sql", Some(1))
                    == Some(ParseErrorKind::UnknownDirective("requires".into()))
            },
            says: &["0001_a.sql:1", "unknown directive `requires`", "known: revises"],
        },
        LoadCase {
            what: "a directive without its colon",
            files: vec![
                a.clone(),
                ("0002_b.sql", file("-- pgskein revises 0001_a\n-- pgskein: up\nSELECT 1;\n")),
            ],
            check: |e| parse_kind(e, "0002_b.sql", Some(1)) == Some(ParseErrorKind::MalformedDirective),
            says: &["0002_b.sql:1", "(with the colon)"],
        },
        LoadCase {
            what: "no up section",
            files: vec![("0001_a.sql", file("-- pgskein: message only a header\n-- nothing else\n"))],
            check: |e| parse_kind(e, "0001_a.sql", None) == Some(ParseErrorKind::MissingUp),
            says: &["0001_a.sql", "no `-- pgskein: up` section", "put the migration's SQL after"],
        },
        LoadCase {
            what: "an empty file",
            files: vec![("0001_a.sql", Vec::new())],
            check: |e| parse_kind(e, "0001_a.sql", None) == Some(ParseErrorKind::Empty),
            says: &["0001_a.sql", "the file is empty", "needs at least a `-- pgskein: up` line"],
        },
        LoadCase {
            what: "a file of a byte-order mark and blank lines",
            files: vec![("0001_a.sql", file("\u{feff}\r\n  \n"))],
            check: |e| parse_kind(e, "0001_a.sql", None) == Some(ParseErrorKind::Empty),
            says: &["0001_a.sql", "empty"],
        },
        LoadCase {
            what: "bytes that are not UTF-8",
            files: vec![("0001_a.sql", b"-- pgskein: up\nSELECT '\xff\xfe';\n".to_vec())],
            check: |e| parse_kind(e, "0001_a.sql", None) == Some(ParseErrorKind::NotUtf8 { offset: 23 }),
            says: &["0001_a.sql", "not valid UTF-8", "offset 23", "save it as UTF-8"],
        },
        LoadCase {
            what: "CREATE INDEX CONCURRENTLY in a transactional revision",
            files: vec![
                a.clone(),
                (
                    "0002_b.sql",
                    file(
                        "-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\nCREATE INDEX CONCURRENTLY b_id ON b (id);\n",
                    ),
                ),
            ],
            check: |e| matches!(e, Error::NeedsNoTransaction { path, line: 4, operation: "CREATE INDEX CONCURRENTLY", control: false } if path == "0002_b.sql"),
            says: &[
                "0002_b.sql:4",
                "CREATE INDEX CONCURRENTLY cannot run inside",
                "declare the revision `-- pgskein: transaction none`",
            ],
        },
        LoadCase {
            what: "COMMIT in a transactional revision",
            files: vec![("0001_a.sql", file("-- pgskein: up\nCREATE TABLE a (id int);\nCOMMIT;\n"))],
            check: |e| {
                matches!(e, Error::NeedsNoTransaction { line: 3, operation: "COMMIT", control: true, .. })
            },
            says: &["0001_a.sql:3", "COMMIT cannot run inside", "transaction none", "statement by statement"],
        },
        LoadCase {
            what: "a psql-style file with its own BEGIN",
            files: vec![(
                "0001_a.sql",
                file("-- pgskein: up\n\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n"),
            )],
            check: |e| {
                matches!(e, Error::NeedsNoTransaction { line: 3, operation: "BEGIN", control: true, .. })
            },
            says: &["0001_a.sql:3", "BEGIN", "transaction none"],
        },
        LoadCase {
            what: "VACUUM in the down section of a transactional revision",
            files: vec![(
                "0001_a.sql",
                file("-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\nVACUUM;\n"),
            )],
            check: |e| matches!(e, Error::NeedsNoTransaction { line: 5, operation: "VACUUM", .. }),
            says: &["0001_a.sql:5", "VACUUM"],
        },
        LoadCase {
            what: "CREATE INDEX CONCURRENTLY in the verify section of a transaction none revision",
            files: vec![(
                "0001_a.sql",
                file(
                    "-- pgskein: transaction none\n-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: verify\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
                ),
            )],
            check: |e| {
                matches!(e, Error::NeedsNoTransaction { line: 5, operation: "CREATE INDEX CONCURRENTLY", .. })
            },
            says: &["0001_a.sql:5"],
        },
        LoadCase {
            what: "SQL before the up section",
            files: vec![(
                "0001_a.sql",
                file("-- pgskein: message x\nCREATE TABLE a (id int);\n-- pgskein: up\nSELECT 1;\n"),
            )],
            check: |e| parse_kind(e, "0001_a.sql", Some(2)) == Some(ParseErrorKind::SqlBeforeUp),
            says: &["0001_a.sql:2", "SQL before `-- pgskein: up`"],
        },
        LoadCase {
            what: "a header directive after the up section",
            files: vec![
                a.clone(),
                ("0002_b.sql", file("-- pgskein: up\nSELECT 1;\n-- pgskein: revises 0001_a\n")),
            ],
            check: |e| {
                parse_kind(e, "0002_b.sql", Some(3))
                    == Some(ParseErrorKind::DirectiveAfterUp("revises".into()))
            },
            says: &["0002_b.sql:3", "must come before `-- pgskein: up`"],
        },
        LoadCase {
            what: "a down section before the up section",
            files: vec![(
                "0001_a.sql",
                file("-- pgskein: down\nDROP TABLE a;\n-- pgskein: up\nCREATE TABLE a (id int);\n"),
            )],
            check: |e| {
                parse_kind(e, "0001_a.sql", Some(1)) == Some(ParseErrorKind::SectionBeforeUp("down".into()))
            },
            says: &["0001_a.sql:1", "section `down` must come after"],
        },
        LoadCase {
            what: "two up sections",
            files: vec![("0001_a.sql", file("-- pgskein: up\nSELECT 1;\n-- pgskein: up\nSELECT 2;\n"))],
            check: |e| {
                parse_kind(e, "0001_a.sql", Some(3)) == Some(ParseErrorKind::DuplicateDirective("up".into()))
            },
            says: &["0001_a.sql:3", "`up` appears more than once"],
        },
        LoadCase {
            what: "two revises directives",
            files: vec![
                a.clone(),
                (
                    "0002_b.sql",
                    file(
                        "-- pgskein: revises 0001_a\n-- pgskein: revises 0001_a\n-- pgskein: up\nSELECT 1;\n",
                    ),
                ),
            ],
            check: |e| {
                parse_kind(e, "0002_b.sql", Some(2))
                    == Some(ParseErrorKind::DuplicateDirective("revises".into()))
            },
            says: &["0002_b.sql:2", "more than once"],
        },
        LoadCase {
            what: "a transaction mode other than none",
            files: vec![("0001_a.sql", file("-- pgskein: transaction off\n-- pgskein: up\nSELECT 1;\n"))],
            check: |e| {
                matches!(
                    parse_kind(e, "0001_a.sql", Some(1)),
                    Some(ParseErrorKind::BadValue { directive: "transaction", .. })
                )
            },
            says: &["0001_a.sql:1", "expected `none`", "\"off\""],
        },
        LoadCase {
            what: "a release that is not a semantic version",
            files: vec![("0001_a.sql", file("-- pgskein: release 2.0\n-- pgskein: up\nSELECT 1;\n"))],
            check: |e| {
                matches!(
                    parse_kind(e, "0001_a.sql", Some(1)),
                    Some(ParseErrorKind::BadValue { directive: "release", .. })
                )
            },
            says: &["0001_a.sql:1", "\"2.0\" is not a semantic version"],
        },
        LoadCase {
            what: "a branch label with a space",
            files: vec![("0001_a.sql", file("-- pgskein: branch my branch\n-- pgskein: up\nSELECT 1;\n"))],
            check: |e| {
                matches!(
                    parse_kind(e, "0001_a.sql", Some(1)),
                    Some(ParseErrorKind::BadValue { directive: "branch", .. })
                )
            },
            says: &["0001_a.sql:1", "rename the label"],
        },
        LoadCase {
            what: "one parent listed twice",
            files: vec![
                a.clone(),
                ("0002_b.sql", file("-- pgskein: revises 0001_a, 0001_a\n-- pgskein: up\nSELECT 1;\n")),
            ],
            check: |e| {
                matches!(
                    parse_kind(e, "0002_b.sql", Some(1)),
                    Some(ParseErrorKind::BadValue { directive: "revises", .. })
                )
            },
            says: &["0002_b.sql:1", "0001_a is listed twice"],
        },
        LoadCase {
            what: "a section marker with a value",
            files: vec![("0001_a.sql", file("-- pgskein: up now\nSELECT 1;\n"))],
            check: |e| {
                matches!(
                    parse_kind(e, "0001_a.sql", Some(1)),
                    Some(ParseErrorKind::BadValue { directive: "up", .. })
                )
            },
            says: &["0001_a.sql:1", "section markers take no value"],
        },
        LoadCase {
            what: "a file name with a space",
            files: vec![("0001 init.sql", file(A))],
            check: |e| matches!(parse_kind(e, "0001 init.sql", None), Some(ParseErrorKind::BadFileName(_))),
            says: &["0001 init.sql", "use only ASCII letters, digits"],
        },
        LoadCase {
            what: "a file named after a target word",
            files: vec![("migrations/head.sql", file(A))],
            check: |e| {
                matches!(parse_kind(e, "migrations/head.sql", None), Some(ParseErrorKind::BadFileName(_)))
            },
            says: &["migrations/head.sql", "reserved target word", "rename the file"],
        },
        LoadCase {
            what: "a file that does not end in .sql",
            files: vec![("0001_a.psql", file(A))],
            check: |e| matches!(parse_kind(e, "0001_a.psql", None), Some(ParseErrorKind::BadFileName(_))),
            says: &["0001_a.psql", "does not end in .sql"],
        },
    ]
}

#[tokio::test]
async fn every_bad_file_is_refused_at_load_with_its_variant_and_the_database_is_unchanged() {
    let db = fresh_db("bad_files").await;
    let client = db.connect().await.unwrap();
    let before = snapshot(&client).await;
    let cases = load_cases();
    assert!(cases.len() >= 30, "the catalogue has {} load cases", cases.len());
    let mut wrong = Vec::new();
    for case in cases {
        let mut builder = MigrationSet::builder();
        for (path, bytes) in &case.files {
            builder = builder.file(path, bytes);
        }
        match builder.build() {
            Ok(set) => {
                // Let an accepted bad set do its worst: the snapshot below must catch it.
                let outcome = set.run(&client).await;
                wrong.push(format!("{}: loaded, and the run gave {outcome:?}", case.what));
            }
            Err(err) => {
                if !(case.check)(&err) {
                    wrong.push(format!("{}: wrong error {err:?}", case.what));
                }
                let message = err.to_string();
                for part in case.says {
                    if !message.contains(part) {
                        wrong.push(format!("{}: the message lacks {part:?}: {message}", case.what));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(snapshot(&client).await, before);
}

// ----- inputs that must work -----

#[tokio::test]
async fn a_byte_order_mark_is_ignored_and_keeps_the_checksum() {
    let db = fresh_db("bom").await;
    let client = db.connect().await.unwrap();
    let with_bom = format!("\u{feff}{A}");
    let set = MigrationSet::builder().file("0001_a.sql", with_bom.as_bytes()).build().unwrap();
    let plain = MigrationSet::builder().file("0001_a.sql", A.as_bytes()).build().unwrap();
    assert_eq!(set.get("0001_a").unwrap().checksum(), plain.get("0001_a").unwrap().checksum());
    assert_eq!(set.get("0001_a").unwrap().up().sql(), Some("CREATE TABLE a (id int);\n"));
    set.run(&client).await.unwrap();
    assert_eq!(ledger(&client).await, [("0001_a".to_owned(), "applied".to_owned())]);
    assert!(plain.run(&client).await.unwrap().fast_path, "the same file without the mark is at head");
}

#[tokio::test]
async fn crlf_line_endings_work_with_the_checksum_and_line_numbers_of_lf() {
    let db = fresh_db("crlf").await;
    let client = db.connect().await.unwrap();
    let lf = "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n";
    let crlf = lf.replace('\n', "\r\n");
    let set = MigrationSet::builder().file("0001_a.sql", crlf.as_bytes()).build().unwrap();
    let unix = MigrationSet::builder().file("0001_a.sql", lf.as_bytes()).build().unwrap();
    assert_eq!(set.get("0001_a").unwrap().checksum(), unix.get("0001_a").unwrap().checksum());
    assert_eq!(set.fingerprint(), unix.fingerprint());
    set.run(&client).await.unwrap();
    assert!(unix.run(&client).await.unwrap().fast_path, "a Windows checkout and a Unix one agree");
    unix.downgrade(&client, &Target::Base).await.unwrap();
    assert!(ledger(&client).await.is_empty());

    let failing = "-- pgskein: up\r\nCREATE TABLE a (id int);\r\n\r\nINSERT INTO a VALUES ('x');\r\n";
    let set = MigrationSet::builder().file("0001_a.sql", failing.as_bytes()).build().unwrap();
    let before = snapshot(&client).await;
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(err, Error::RevisionFailed { line: Some(4), statement: Some(2), .. }), "{err:?}");
    assert_eq!(without_the_failure(snapshot(&client).await, "0001_a"), before);
}

#[tokio::test]
async fn a_schema_name_that_looks_like_sql_injection_is_just_a_name() {
    let db = fresh_db("injection").await;
    let client = db.connect().await.unwrap();
    let schema = "x\"; DROP TABLE a; --";
    let set = abc().with_config(Config::default().schema(schema));
    set.run(&client).await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM \"x\"\"; DROP TABLE a; --\".applied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    assert!(catalog(&client).await.iter().any(|l| l == "relation public.a r"));
    assert!(set.run(&client).await.unwrap().fast_path);
}

// ----- refused at run time, before anything changes -----

#[tokio::test]
async fn invalid_sql_names_the_file_statement_and_line_and_changes_nothing() {
    let (_db, client, before) = two_of_three("invalid_sql").await;
    let set = MigrationSet::builder()
        .file("0001_a.sql", A.as_bytes())
        .file("0002_b.sql", B.as_bytes())
        .file(
            "0003_bad.sql",
            b"-- pgskein: revises 0002_b\n-- pgskein: up\nCREATE TABLE c (id int);\n\nCREAT TABLE e (id int);\n",
        )
        .build()
        .unwrap();
    let err = set.run(&client).await.unwrap_err();
    let Error::RevisionFailed { id, path, statement, line, report, .. } = &err else { panic!("{err:?}") };
    assert_eq!((id.as_str(), path.as_str()), ("0003_bad", "0003_bad.sql"));
    assert_eq!(*line, Some(5), "the line of the typo");
    assert_eq!(*statement, Some(2), "the typo is in the second statement");
    assert!(report.steps.is_empty());
    assert_eq!(err.db_code(), Some("42601"));
    assert_mentions(&err, &["revision 0003_bad (0003_bad.sql) failed at statement 2, line 5"]);
    assert!(chain(&err).contains("syntax error at or near \"CREAT\""), "{}", chain(&err));
    assert_eq!(without_the_failure(snapshot(&client).await, "0003_bad"), before);
}

#[tokio::test]
async fn a_statement_failing_in_a_down_section_names_its_line_and_changes_nothing() {
    let db = fresh_db("bad_down").await;
    let client = db.connect().await.unwrap();
    let set = MigrationSet::builder()
        .file(
            "0001_a.sql",
            b"-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\nDROP TABLE no_such_table;\n",
        )
        .build()
        .unwrap();
    set.run(&client).await.unwrap();
    let before = snapshot(&client).await;
    let err = set.downgrade(&client, &Target::Base).await.unwrap_err();
    assert!(
        matches!(&err, Error::RevisionFailed { id, statement: Some(2), line: Some(5), .. } if id.as_str() == "0001_a"),
        "{err:?}"
    );
    assert_eq!(err.db_code(), Some("42P01"));
    assert_eq!(without_the_failure(snapshot(&client).await, "0001_a"), before);
}

#[tokio::test]
async fn a_verify_query_that_errors_fails_the_revision_and_leaves_nothing() {
    let (_db, client, before) = two_of_three("verify_error").await;
    let set = MigrationSet::builder()
        .file("0001_a.sql", A.as_bytes())
        .file("0002_b.sql", B.as_bytes())
        .file(
            "0003_c.sql",
            b"-- pgskein: revises 0002_b\n-- pgskein: up\nCREATE TABLE c (id int);\n-- pgskein: verify\nSELECT count(*) = 0 FROM no_such_table;\n",
        )
        .build()
        .unwrap();
    let err = set.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::RevisionFailed { id, .. } if id.as_str() == "0003_c"), "{err:?}");
    assert_eq!(err.db_code(), Some("42P01"));
    assert_mentions(&err, &["0003_c (0003_c.sql) failed"]);
    assert_eq!(without_the_failure(snapshot(&client).await, "0003_c"), before);
}

#[tokio::test]
async fn an_unknown_target_is_refused_whether_parsed_or_planned() {
    let (_db, client, before) = two_of_three("unknown_target").await;
    for text in ["", "+0", "-x", "auth@tail", "@head"] {
        let err = text.parse::<Target>().unwrap_err();
        assert!(matches!(&err, Error::UnknownTarget { target } if target == text), "{text:?}: {err:?}");
        assert_mentions(&err, &["expected head, heads, base"]);
    }
    let set = abc();
    for target in ["0009_nope", "nobranch@head"] {
        let err = set.upgrade(&client, &target.parse().unwrap()).await.unwrap_err();
        assert!(matches!(&err, Error::UnknownTarget { .. }), "{target}: {err:?}");
        assert_mentions(&err, &[target]);
    }
    let err = set.upgrade(&client, &Target::Relative(-1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTarget { target } if target.contains("not an upgrade target")),
        "{err:?}"
    );
    let err = set.downgrade(&client, &Target::Relative(1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTarget { target } if target.contains("not a downgrade target")),
        "{err:?}"
    );
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn an_ambiguous_prefix_lists_the_candidates_and_changes_nothing() {
    let (_db, client, before) = two_of_three("ambiguous_prefix").await;
    let err = abc().upgrade(&client, &"000".parse().unwrap()).await.unwrap_err();
    assert!(
        matches!(&err, Error::AmbiguousPrefix { prefix, candidates } if prefix == "000" && candidates.len() == 3),
        "{err:?}"
    );
    assert_mentions(
        &err,
        &["\"000\" matches several revisions: 0001_a, 0002_b, 0003_c", "give more characters"],
    );
    assert_eq!(snapshot(&client).await, before);
    // A unique prefix works.
    assert_eq!(abc().upgrade(&client, &"0003".parse().unwrap()).await.unwrap().steps.len(), 1);
}

#[tokio::test]
async fn head_with_two_heads_is_ambiguous_but_heads_applies_both() {
    let db = fresh_db("two_heads").await;
    let client = db.connect().await.unwrap();
    let set = MigrationSet::builder()
        .file("0001_a.sql", A.as_bytes())
        .file("0002_b.sql", B.as_bytes())
        .file(
            "0003_c.sql",
            b"-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE c (id int);\n-- pgskein: down\nDROP TABLE c;\n",
        )
        .allow_multiple_heads(true)
        .build()
        .unwrap();
    set.upgrade(&client, &"0001".parse().unwrap()).await.unwrap();
    let before = snapshot(&client).await;
    let err = set.upgrade(&client, &Target::Head).await.unwrap_err();
    assert!(
        matches!(&err, Error::AmbiguousTarget { target, heads } if target == "head" && heads.len() == 2),
        "{err:?}"
    );
    assert_mentions(&err, &["several heads (0002_b, 0003_c)", "use `heads`, or merge them"]);
    assert_eq!(snapshot(&client).await, before);
    assert_eq!(set.upgrade(&client, &Target::Heads).await.unwrap().steps.len(), 2);
}

#[tokio::test]
async fn downgrading_to_a_revision_that_is_not_applied_is_refused() {
    let (_db, client, before) = two_of_three("not_applied").await;
    let err = abc().downgrade(&client, &"0003_c".parse().unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::TargetNotApplied { id } if id.as_str() == "0003_c"), "{err:?}");
    assert_mentions(&err, &["cannot downgrade to 0003_c: it is not applied", "use upgrade"]);
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn downgrading_to_a_revision_above_an_irreversible_one_is_refused_before_anything_runs() {
    let db = fresh_db("irreversible_mid").await;
    let client = db.connect().await.unwrap();
    let set = MigrationSet::builder()
        .file("0001_a.sql", A.as_bytes())
        .file("0002_b.sql", b"-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\n")
        .file("0003_c.sql", C.as_bytes())
        .build()
        .unwrap();
    set.run(&client).await.unwrap();
    let before = snapshot(&client).await;
    // 0003 alone could go back, but the target asks for 0002 to go as well.
    let err = set.downgrade(&client, &"0001_a".parse().unwrap()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Irreversible { id, path } if id.as_str() == "0002_b" && path == "0002_b.sql")
    );
    assert_mentions(&err, &["0002_b (0002_b.sql)", "add one, or stamp past it"]);
    assert_eq!(snapshot(&client).await, before, "0003 was not reverted either");
}

#[tokio::test]
async fn a_changed_checksum_also_refuses_a_downgrade() {
    let (_db, client, before) = two_of_three("changed_down").await;
    let edited = MigrationSet::builder()
        .file("0001_a.sql", A.as_bytes())
        .file("0002_b.sql", B.replace("b (id int)", "b (id bigint)").as_bytes())
        .file("0003_c.sql", C.as_bytes())
        .build()
        .unwrap();
    let err = edited.downgrade(&client, &Target::Base).await.unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { changed } if changed[0].0.as_str() == "0002_b"),
        "{err:?}"
    );
    assert_mentions(&err, &["0002_b (0002_b.sql)", "restore the files"]);
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn bookkeeping_tables_from_a_newer_pgskein_are_refused() {
    let (_db, client, _) = two_of_three("format_too_new").await;
    client
        .batch_execute("UPDATE pgskein.meta SET value = '5' WHERE key IN ('format', 'readable_by')")
        .await
        .unwrap();
    let before = snapshot(&client).await;
    let err = abc().run(&client).await.unwrap_err();
    assert!(
        matches!(&err, Error::FormatTooNew { found: 5, supported: 4, schema } if schema == "pgskein"),
        "{err:?}"
    );
    assert_mentions(&err, &["schema \"pgskein\"", "format 5", "upgrade pgskein"]);
    let err = abc().status(&client).await.unwrap_err();
    assert!(matches!(err, Error::FormatTooNew { .. }), "{err:?}");
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn a_meta_table_without_its_format_row_is_reported_as_corrupt() {
    let (_db, client, _) = two_of_three("corrupt_meta").await;
    client.batch_execute("DELETE FROM pgskein.meta WHERE key = 'format'").await.unwrap();
    let before = snapshot(&client).await;
    let err = abc().run(&client).await.unwrap_err();
    assert!(
        matches!(&err, Error::CorruptLedger { schema, id, .. } if schema == "pgskein" && id == "format"),
        "{err:?}"
    );
    assert_mentions(&err, &["schema \"pgskein\"", "no readable format row"]);
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn empty_and_nul_schema_names_are_refused_before_touching_the_database() {
    let (_db, client, before) = two_of_three("bad_schema").await;
    for (schema, reason) in [("", "it is empty"), ("a\0b", "NUL character")] {
        let set = abc().with_config(Config::default().schema(schema));
        let err = set.run(&client).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidSchema { schema: s, .. } if s == schema), "{err:?}");
        assert_mentions(&err, &["invalid bookkeeping schema name", reason]);
        let err = set.status(&client).await.unwrap_err();
        assert!(matches!(err, Error::InvalidSchema { .. }));
    }
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn resolving_a_revision_that_is_not_blocked_is_refused() {
    let (_db, client, before) = two_of_three("nothing_to_resolve").await;
    let err = abc().resolve(&client, "0002_b", Resolution::MarkApplied).await.unwrap_err();
    assert!(matches!(&err, Error::NothingToResolve { id } if id.as_str() == "0002_b"), "{err:?}");
    assert_mentions(&err, &["0002_b is not recorded as failed or running"]);
    let err = abc().resolve(&client, "no such id", Resolution::MarkReverted).await.unwrap_err();
    assert!(matches!(&err, Error::UnknownTarget { target } if target == "no such id"), "{err:?}");
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn a_lock_held_past_the_timeout_refuses_downgrade_stamp_and_resolve_naming_the_holder() {
    let (db, client, before) = two_of_three("lock_others").await;
    let holder = db.connect().await.unwrap();
    holder.batch_execute("SET application_name = 'stuck-deploy'").await.unwrap();
    holder.execute("SELECT pg_advisory_lock($1)", &[&Config::default().lock_key()]).await.unwrap();
    let set = abc().with_config(Config::default().lock_wait_timeout(Some(Duration::from_millis(100))));
    let errors = [
        set.downgrade(&client, &Target::Base).await.unwrap_err(),
        set.stamp(&client, &Target::Head).await.unwrap_err(),
        set.upgrade(&client, &Target::Head).await.unwrap_err(),
        set.resolve(&client, "0002_b", Resolution::MarkReverted).await.unwrap_err(),
    ];
    for err in &errors {
        assert!(
            matches!(err, Error::LockTimeout { holder: Some(h), .. } if h.application_name == "stuck-deploy"),
            "{err:?}"
        );
        assert_mentions(err, &["waiting for the migration lock", "held by pid", "stuck-deploy", "pg_locks"]);
    }
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn the_holder_named_on_lock_timeout_is_the_one_in_this_database() {
    let (db, client, before) = two_of_three("lock_here").await;
    let key = Config::default().lock_key();
    // Services in other databases of the same server take the same key:
    // their sessions do not block this one, and must not be named.
    let mut elsewhere = Vec::new();
    for n in 0..5 {
        let other = fresh_db(&format!("lock_elsewhere_{n}")).await;
        let session = other.connect().await.unwrap();
        session.batch_execute("SET application_name = 'another-database'").await.unwrap();
        session.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
        elsewhere.push((other, session));
    }
    let holder = db.connect().await.unwrap();
    holder.batch_execute("SET application_name = 'this-database'").await.unwrap();
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let set = abc().with_config(Config::default().lock_wait_timeout(Some(Duration::from_millis(100))));
    let err = set.run(&client).await.unwrap_err();
    let Error::LockTimeout { holder: Some(h), .. } = &err else { panic!("{err:?}") };
    assert_eq!((h.pid, h.application_name.as_str()), (pid, "this-database"), "{err}");
    assert_eq!(snapshot(&client).await, before);
}

#[tokio::test]
async fn a_closed_connection_or_an_unreachable_pool_gives_a_database_error() {
    let (db, client, before) = two_of_three("closed").await;
    let doomed = db.connect().await.unwrap();
    let pid: i32 = doomed.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    client.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    let err = abc().run(&doomed).await.unwrap_err();
    let Error::Db { context, source } = &err else { panic!("{err:?}") };
    assert_eq!(*context, "reading the bookkeeping tables");
    assert!(source.is_closed() || source.code().map(|c| c.code()) == Some("57P01"), "{source:?}");
    assert_mentions(&err, &["database error while reading the bookkeeping tables"]);

    let mut config = db.config();
    config.dbname("no_such_database_here");
    let pool =
        deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(config, tokio_postgres::NoTls))
            .max_size(1)
            .build()
            .unwrap();
    let err = abc().run(&pool).await.unwrap_err();
    assert!(matches!(err, Error::Pool { .. }), "{err:?}");
    assert!(chain(&err).contains("no_such_database_here"), "{}", chain(&err));
    assert_eq!(snapshot(&client).await, before);
}

// ----- secrets -----

const SECRET: &str = "S3cret-pw";

/// A `tracing` writer into a buffer shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asks for a password from `role` when it connects over the Unix socket, by
/// putting a line before the throwaway server's `trust` lines. Returns the
/// file's previous text, or `None` when the server's `pg_hba.conf` is not
/// ours to edit.
async fn require_password(admin: &Client, role: &str) -> Option<(String, String)> {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
        return None;
    }
    let path: String = admin.query_one("SHOW hba_file", &[]).await.ok()?.get(0);
    let old = std::fs::read_to_string(&path).ok()?;
    // md5 also accepts SCRAM-stored passwords, on every version from 13 on.
    std::fs::write(&path, format!("local all \"{role}\" md5\n{old}")).ok()?;
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    Some((path, old))
}

fn assert_secret_free(what: &str, err: &dyn std::error::Error) {
    let shown = format!("{err}\n{err:?}\n{}", chain(err));
    assert!(!shown.contains(SECRET), "{what} shows the password: {shown}");
}

#[tokio::test]
async fn a_password_in_the_url_appears_in_no_error_and_no_log() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    // A current-thread test: every task of this test runs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = fresh_db("password").await;
    let admin = db.connect().await.unwrap();
    let role = db.name().to_owned();
    admin.batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{SECRET}'")).await.unwrap();
    admin.batch_execute(&format!("ALTER DATABASE \"{role}\" OWNER TO \"{role}\"")).await.unwrap();
    let hba = require_password(&admin, &role).await;

    let url = db.url().replacen("postgres@", &format!("{role}:{SECRET}@"), 1);
    assert!(url.contains(SECRET) && url.starts_with("postgresql://"), "the URL carries the password");
    let pool_of = |url: &str| {
        let config: tokio_postgres::Config = url.parse().unwrap();
        deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(config, tokio_postgres::NoTls))
            .max_size(2)
            .build()
            .unwrap()
    };
    let pool = pool_of(&url);

    // Bad SQL.
    let bad = MigrationSet::builder()
        .file("0001_a.sql", A.as_bytes())
        .file("0002_bad.sql", b"-- pgskein: revises 0001_a\n-- pgskein: up\nSELEC 1;\n")
        .build()
        .unwrap();
    let err = bad.run(&pool).await.unwrap_err();
    assert!(matches!(&err, Error::RevisionFailed { id, .. } if id.as_str() == "0002_bad"), "{err:?}");
    assert_secret_free("a failed revision", &err);

    // A lock held by a session of the same role, past the timeout.
    let holder = pool.get().await.unwrap();
    holder.execute("SELECT pg_advisory_lock($1)", &[&Config::default().lock_key()]).await.unwrap();
    let waiting = abc().with_config(Config::default().lock_wait_timeout(Some(Duration::from_millis(50))));
    let client = pool.get().await.unwrap();
    let err = waiting.run(&client).await.unwrap_err();
    assert!(matches!(&err, Error::LockTimeout { holder: Some(_), .. }), "{err:?}");
    assert_secret_free("a lock timeout", &err);
    drop((holder, client));

    // The wrong password, and a database that does not exist, with the secret in the URL.
    if hba.is_some() {
        let wrong = url.replacen(SECRET, "wrong-pw", 1);
        // The reload takes effect as the postmaster gets to it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let err = loop {
            match abc().run(&pool_of(&wrong)).await {
                Err(err @ Error::Pool { .. }) => break err,
                other if std::time::Instant::now() > deadline => panic!("the wrong password got {other:?}"),
                _ => tokio::task::yield_now().await,
            }
        };
        assert!(chain(&err).contains("password authentication failed"), "{}", chain(&err));
        assert_secret_free("a refused connection", &err);
    } else {
        println!("note: this server's pg_hba.conf is not the test's to edit; not checking a wrong password");
    }
    let nowhere = url.replacen(&format!("/{role}?"), "/no_such_db?", 1);
    let err = abc().run(&pool_of(&nowhere)).await.unwrap_err();
    assert!(matches!(err, Error::Pool { .. }), "{err:?}");
    assert_secret_free("a connection to a missing database", &err);
    let err = tokio_postgres::connect(&nowhere, tokio_postgres::NoTls).await.err().unwrap();
    assert_secret_free("tokio-postgres's own connect error", &err);

    // A successful run, for good measure: its log too.
    abc().run(&pool).await.unwrap();
    drop(pool);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("revision failed") && log.contains("0002_bad"),
        "the subscriber captured pgskein's events"
    );
    assert!(!log.contains(SECRET), "the log shows the password:\n{log}");
    if let Some((path, old)) = hba {
        std::fs::write(path, old).unwrap();
        admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    }
    drop(admin);
    drop(db);
    let server = pgskein::testing::TestServer::shared().unwrap();
    let (admin, connection) = server.config("postgres").connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    admin.batch_execute(&format!("DROP ROLE \"{role}\"")).await.unwrap();
}
