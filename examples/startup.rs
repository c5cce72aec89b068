//! What a service does when it starts: load its migrations, connect, call
//! `run()`, go on. The end-to-end bench (`cargo bench --bench e2e`) times it
//! as a fresh process, against the same binary doing only `SELECT 1`.
//!
//! ```text
//! cargo run --release --example startup -- run URL MIGRATIONS [--single]
//! cargo run --release --example startup -- select1 URL
//! ```
//!
//! `URL` is a libpq-style URL or `key=value` string, e.g.
//! `postgresql://postgres@/app?host=/run/postgresql`. `MIGRATIONS` is a
//! directory of revision files, read file by file as the CLI does, or a
//! bundle: one file holding all revisions (`<name> <length>\n<bytes>` for each),
//! read at once into memory, as a set embedded with `include_dir!` is. Either
//! way the set is a `LazySet`: at head the files are hashed, not parsed.
//! `--single` applies the whole plan in one transaction. Exits non-zero, with
//! the error chain on stderr, when the run fails.

use std::error::Error;
use std::str::FromStr;

use pgskein::config::TransactionMode;
use pgskein::{Config, LazySet, MigrationSet, Migrator};
use tokio_postgres::NoTls;

fn usage() -> ! {
    eprintln!("usage: startup run URL MIGRATIONS_DIR [--single] | startup select1 URL");
    std::process::exit(2)
}

// One thread is all a start-up needs, and it is the cheapest runtime to start.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["select1", url] => select1(url).await,
        ["run", url, dir] => run(url, dir, TransactionMode::PerRevision).await,
        ["run", url, dir, "--single"] => run(url, dir, TransactionMode::Single).await,
        _ => usage(),
    };
    if let Err(e) = outcome {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        eprintln!("startup: {message}");
        std::process::exit(1);
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, Box<dyn Error>> {
    let (client, connection) = tokio_postgres::Config::from_str(url)?.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("startup: connection: {e}");
        }
    });
    Ok(client)
}

/// The connect floor: a fresh process that connects and asks one query.
async fn select1(url: &str) -> Result<(), Box<dyn Error>> {
    let client = connect(url).await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}

async fn run(url: &str, path: &str, mode: TransactionMode) -> Result<(), Box<dyn Error>> {
    let set = if std::path::Path::new(path).is_dir() {
        MigrationSet::builder().dir(path).lazy()?
    } else {
        bundle(path)?
    };
    let client = connect(url).await?;
    let report = set.with_config(Config::default().transaction_mode(mode)).run(&client).await?;
    if report.fast_path {
        return Ok(());
    }
    println!("applied {} revisions in {:?}", report.steps.len(), report.duration);
    Ok(())
}

/// Loads a bundle: `<name> <length>\n` followed by `length` bytes, for each file.
fn bundle(path: &str) -> Result<LazySet, Box<dyn Error>> {
    let bytes = std::fs::read(path)?;
    let mut builder = MigrationSet::builder();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let eol = rest.iter().position(|&b| b == b'\n').ok_or("bundle: header without a newline")?;
        let header = std::str::from_utf8(&rest[..eol])?;
        let (name, len) = header.rsplit_once(' ').ok_or("bundle: header without a length")?;
        let len: usize = len.parse()?;
        let body = rest.get(eol + 1..eol + 1 + len).ok_or("bundle: truncated file")?;
        builder = builder.file(name, body);
        rest = &rest[eol + 1 + len..];
    }
    Ok(builder.lazy()?)
}
