//! Passwords never shown (SPEC R8): a table of tricky connection strings run
//! through the `pgskein` binary against a private server that asks for
//! passwords. For each, the password is in no output (text, `--json`,
//! pre-flight, the downgrade confirmation, errors), in no log line at `-vv`
//! or `RUST_LOG=trace`, and not on the command line of the `pg_dump` that
//! `--backup` runs, which still authenticates.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use pgskein::testing::{ServerOptions, TestServer};

use crate::cli::Out;
use crate::common::fixture_dir;

/// One connection string and what must never be printed from it.
struct Case {
    /// The string, with `{P}` for the server's port and `{DB}` for the database.
    conn: &'static str,
    /// The role that connects and the password it authenticates with, when it connects.
    login: Option<(&'static str, &'static str)>,
    /// The password as written, decoys given twice, and pieces that must not show either.
    never: &'static [&'static str],
}

const fn connects(
    role: &'static str,
    password: &'static str,
    conn: &'static str,
    never: &'static [&'static str],
) -> Case {
    Case { conn, login: Some((role, password)), never }
}

const fn refused(conn: &'static str, never: &'static [&'static str]) -> Case {
    Case { conn, login: None, never }
}

const CASES: &[Case] = &[
    // URLs, the password in the user info, not encoded.
    connects("r01", "Sl4sh/Pw-01", "postgresql://r01:Sl4sh/Pw-01@127.0.0.1:{P}/{DB}", &[]),
    connects("r02", "Qu?estion-02", "postgresql://r02:Qu?estion-02@127.0.0.1:{P}/{DB}", &[]),
    connects("r03", "hash#tag-03", "postgresql://r03:hash#tag-03@127.0.0.1:{P}/{DB}", &[]),
    connects("r04", "co:lon:s-04", "postgresql://r04:co:lon:s-04@127.0.0.1:{P}/{DB}", &[]),
    connects("r05", "100%sure-05", "postgresql://r05:100%sure-05@127.0.0.1:{P}/{DB}", &[]),
    connects("r06", "pässwörd🔑-06", "postgresql://r06:pässwörd🔑-06@127.0.0.1:{P}/{DB}", &[]),
    connects("r07", "it's\"quoted\"-07", "postgresql://r07:it's\"quoted\"-07@127.0.0.1:{P}/{DB}", &[]),
    connects("r08", "back\\slash-08", "postgresql://r08:back\\slash-08@127.0.0.1:{P}/{DB}", &[]),
    connects("r09", "a+b=c&d-09", "postgres://r09:a+b=c&d-09@127.0.0.1:{P}/{DB}", &[]),
    connects("r10", "Sch3me/Pw?x-10", "postgres://r10:Sch3me/Pw?x-10@127.0.0.1:{P}/{DB}", &[]),
    // URLs, percent-encoded.
    connects("r11", "p@ssw0rd-11", "postgresql://r11:p%40ssw0rd-11@127.0.0.1:{P}/{DB}", &["p%40ssw0rd-11"]),
    connects(
        "r12",
        "/?@:#%-12",
        "postgresql://r12:%2F%3F%40%3A%23%25-12@127.0.0.1:{P}/{DB}",
        &["%2F%3F%40%3A%23%25-12"],
    ),
    connects(
        "r13",
        "été secret-13",
        "postgresql://r13:%C3%A9t%C3%A9%20secret-13@127.0.0.1:{P}/{DB}",
        &["%C3%A9t%C3%A9%20secret-13"],
    ),
    // URLs, the password in the query, once or twice.
    connects("r14", "QueryPw-14", "postgresql://r14@127.0.0.1:{P}/{DB}?password=QueryPw-14", &[]),
    connects("r15", "sl/ash?q-15", "postgresql://r15@127.0.0.1:{P}/{DB}?password=sl/ash?q-15", &[]),
    connects(
        "r16",
        "Real-16b",
        "postgresql://r16@127.0.0.1:{P}/{DB}?password=Decoy-16a&password=Real-16b",
        &["Decoy-16a"],
    ),
    connects(
        "r17",
        "Real-17b",
        "postgresql://r17:Decoy-17a@127.0.0.1:{P}/{DB}?password=Real-17b",
        &["Decoy-17a"],
    ),
    // key=value strings.
    connects("r18", "Plain-18", "host=127.0.0.1 port={P} user=r18 dbname={DB} password=Plain-18", &[]),
    connects(
        "r19",
        "two words 19",
        "host=127.0.0.1 port={P} user=r19 dbname={DB} password='two words 19'",
        &[],
    ),
    connects(
        "r20",
        "it's \\ 20",
        "host=127.0.0.1 port={P} user=r20 dbname={DB} password='it\\'s \\\\ 20'",
        &["it\\'s \\\\ 20"],
    ),
    connects(
        "r21",
        "esc aped-21",
        "host=127.0.0.1 port={P} user=r21 dbname={DB} password=esc\\ aped-21",
        &["esc\\ aped-21"],
    ),
    connects(
        "r22",
        "Real-22b",
        "password=Decoy-22a host=127.0.0.1 port={P} user=r22 dbname={DB} password=Real-22b",
        &["Decoy-22a"],
    ),
    connects(
        "r23",
        "a=b?c/d@e:f#g%h-23",
        "host=127.0.0.1 port={P} user=r23 dbname={DB} password='a=b?c/d@e:f#g%h-23'",
        &[],
    ),
    connects("r24", "ключ-24", "host=127.0.0.1 port={P} user=r24 dbname={DB} password='ключ-24'", &[]),
    connects("r25", "spaced-25", "host=127.0.0.1 port={P} user=r25 dbname={DB} password = 'spaced-25'", &[]),
    connects(
        "r26",
        "tab\tand:colon-26",
        "host=127.0.0.1 port={P} user=r26 dbname={DB} password='tab\tand:colon-26'",
        &[],
    ),
    // Strings that cannot be used: an error, never the password.
    refused("postgresql://r27@127.0.0.1:{P}/{DB}?PASSWORD=Upper-27", &["Upper-27"]),
    refused("host=127.0.0.1 port={P} user=r28 dbname={DB} PASSWORD=Upper-28", &["Upper-28"]),
    refused("host=127.0.0.1 port={P} user=r29 dbname={DB} password=half of-29", &["half of-29", "of-29"]),
    refused("host=127.0.0.1 port={P} user=r30 dbname={DB} password='unclosed-30", &["unclosed-30"]),
    refused("postgresql://127.0.0.1:{P}/{DB}?password=at@sign-31", &["at@sign-31", "sign-31"]),
    refused("postgresql://r32:Closed/Port-32@127.0.0.1:1/{DB}", &["Closed/Port-32"]),
    refused(
        "host=/nonexistent/pgskein/socket user=r33 password='No Socket-33' dbname={DB}",
        &["No Socket-33"],
    ),
];

/// A `pg_dump` that records its own command line, its environment (less
/// PGPASSWORD) and whether libpq authenticates with what it was given.
const FAKE_PG_DUMP: &str = r#"#!/bin/sh
out="$PGSKEIN_SECRETS_OUT"
tr '\0' '\n' < /proc/$$/cmdline > "$out.argv"
(unset PGPASSWORD; env) > "$out.env"
{ [ -n "${PGPASSWORD:-}" ] && echo PGPASSWORD; [ -n "${PGPASSFILE:-}" ] && [ -f "$PGPASSFILE" ] && echo PGPASSFILE; } > "$out.how"
"$PSQL" -X -A -t -c 'SELECT current_user' > "$out.login" 2>&1
"#;

struct Env {
    dir: PathBuf,
    fake: PathBuf,
    psql: PathBuf,
}

async fn pgskein(case_out: &Path, env: &Env, url: &str, args: &[&str], extra: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgskein"));
    cmd.arg("--dir").arg(fixture_dir("linear")).args(args);
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1").env("DATABASE_URL", url);
    cmd.env("PGSKEIN_PG_DUMP", &env.fake).env("PGSKEIN_SECRETS_OUT", case_out).env("PSQL", &env.psql);
    cmd.envs(extra.iter().copied());
    cmd.stdin(Stdio::null());
    let out = cmd.output().await.unwrap();
    Out {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn psql() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::var_os("PGSKEIN_PG_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path))
        .chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin")),
        )
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_of_the_table_is_shown_logged_or_put_on_a_command_line() {
    let Some(psql) = psql() else {
        println!("note: no psql found; the fake pg_dump needs it to check the login");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have psql");
        return;
    };
    let server = TestServer::start_private_with(
        ServerOptions::new()
            .tcp()
            .hba("local all postgres trust")
            .hba("local all all scram-sha-256")
            .hba("host all all 127.0.0.1/32 scram-sha-256"),
    )
    .unwrap();
    let port = server.tcp_port().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("pgskein-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("pg_dump");
    std::fs::write(&fake, FAKE_PG_DUMP).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let env = Env { dir: dir.clone(), fake, psql };

    let admin = server.create_database("secrets_admin").await.unwrap();
    let admin = admin_client(&admin).await;
    let mut databases = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let db = server.create_database(&format!("secrets_{i}")).await.unwrap();
        if let Some((role, password)) = case.login {
            let sql: String = admin
                .query_one(
                    "SELECT format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', $1::text, $2::text)",
                    &[&role, &password],
                )
                .await
                .unwrap()
                .get(0);
            admin.batch_execute(&sql).await.unwrap();
        }
        databases.push(db);
    }

    let started = std::time::Instant::now();
    let checks = CASES.iter().zip(&databases).enumerate().map(|(i, (case, db))| {
        let conn = case.conn.replace("{P}", &port).replace("{DB}", db.name());
        check_case(i, case, conn, &env)
    });
    futures_util::future::join_all(checks).await;
    println!("{} connection strings checked in {:?}", CASES.len(), started.elapsed());

    for case in CASES {
        if let Some((role, _)) = case.login {
            admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\"")).await.ok();
        }
    }
    drop(databases);
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn admin_client(db: &pgskein::testing::TestDatabase) -> tokio_postgres::Client {
    db.connect().await.unwrap()
}

/// A run of the binary: what it is, its arguments, its extra environment.
type Run<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);

async fn check_case(i: usize, case: &Case, conn: String, env: &Env) {
    let out_base = env.dir.join(format!("case{i}"));
    let password = case.login.map(|(_, p)| p);
    let never: Vec<&str> = case.never.iter().copied().chain(password).collect();
    let shown = |what: &str, out: &Out| {
        for secret in &never {
            assert!(!out.all().contains(secret), "case {i} ({conn}): {what} shows {secret:?}:\n{out:?}");
        }
    };
    let backup_file = env.dir.join(format!("case{i}.dump"));
    let backup = backup_file.to_str().unwrap();
    let runs: [Run<'_>; 8] = [
        ("status", &["status"], &[]),
        ("status --json", &["status", "--json"], &[]),
        ("status -vv", &["status", "-vv"], &[]),
        ("preflight", &["preflight"], &[]),
        ("preflight --json", &["preflight", "--json"], &[("RUST_LOG", "trace")]),
        ("upgrade --backup", &["upgrade", "--backup", backup, "-vv"], &[("RUST_LOG", "trace")]),
        ("downgrade, unconfirmed", &["downgrade", "base"], &[]),
        ("downgrade --yes", &["downgrade", "base", "--yes", "--json", "-vv"], &[]),
    ];
    for (what, args, extra) in runs {
        let out = pgskein(&out_base, env, &conn, args, extra).await;
        shown(what, &out);
        match (case.login, what) {
            (None, _) => assert!(out.code == 1 || out.code == 2, "case {i} ({conn}): {what} fails: {out:?}"),
            (Some(_), "downgrade, unconfirmed") => {
                assert_eq!(out.code, 3, "case {i}: {out:?}");
                assert!(out.stderr.contains("Revert 4 revisions in postgresql://"), "case {i}: {out:?}");
            }
            (Some(_), _) => assert_eq!(out.code, 0, "case {i} ({conn}): {what}: {out:?}"),
        }
        if what == "status" && case.login.is_some() {
            assert!(out.stdout.contains("database  postgresql://r"), "case {i}: {out:?}");
        }
        if what == "upgrade --backup" && case.login.is_some() {
            assert!(out.stdout.contains("applied 4 revisions"), "case {i}: {out:?}");
        }
    }
    let read = |ext: &str| std::fs::read_to_string(out_base.with_extension(ext)).ok();
    match case.login {
        None => assert!(read("argv").is_none(), "case {i}: pg_dump ran for a string that cannot connect"),
        Some((role, _)) => {
            let argv = read("argv").expect("pg_dump ran");
            let env_text = read("env").unwrap();
            for secret in &never {
                assert!(!argv.contains(secret), "case {i}: pg_dump's argv holds {secret:?}: {argv}");
                assert!(!env_text.contains(secret), "case {i}: pg_dump's environment holds {secret:?}");
            }
            assert!(argv.contains("--format=custom") && !argv.contains("--dbname"), "case {i}: {argv}");
            let how = read("how").unwrap();
            assert!(how.contains("PGPASSFILE") || how.contains("PGPASSWORD"), "case {i}: {how}");
            assert_eq!(
                read("login").unwrap().trim(),
                role,
                "case {i}: pg_dump's libpq logs in with the password"
            );
            let passfile = env_text.lines().find_map(|l| l.strip_prefix("PGPASSFILE="));
            if let Some(passfile) = passfile {
                assert!(!Path::new(passfile).exists(), "case {i}: the passfile is removed after the dump");
            }
        }
    }
}
