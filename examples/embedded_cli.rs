//! A service's own binary offering pgskein's commands over the migrations it
//! embeds: `myservice migrate status`, `myservice migrate upgrade`, ... The
//! production image needs no separate tool and no migration files on disk.
//!
//! ```text
//! cargo run --example embedded_cli                          # a short tour
//! cargo run --example embedded_cli -- migrate history
//! cargo run --example embedded_cli -- migrate upgrade 0004
//! cargo run --example embedded_cli -- migrate --help
//! ```
//!
//! Each run creates a fresh database, migrated by nothing else: on a
//! throwaway PostgreSQL started from the machine's binaries when
//! `DATABASE_URL` is unset, else on the server of `DATABASE_URL` (dropped at
//! exit, like `examples/demo.rs`). A real service passes no URL: the
//! commands read `DATABASE_URL` or `--database-url`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgskein::testing::TestServer;
use pgskein::{Config, Migrator};

static MIGRATIONS: pgskein::Embedded = pgskein::embed_migrations!("migrations");

#[derive(Parser)]
#[command(name = "myservice", about = "A service that embeds its migrations")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate to head and serve (here: migrate and exit).
    Serve,
    /// Manage the database schema with pgskein's commands.
    Migrate(pgskein::cli::Args),
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // The service's own migrator: its embedded set and its settings, which
    // the commands use too (bookkeeping schema, hooks, application name).
    let migrator =
        MIGRATIONS.builder().build()?.with_config(Config::default().application_name("myservice-migrate"));

    let db = TestServer::shared()?.create_database("embedded_cli").await?;
    let url = db.url();

    match Cli::parse().command {
        Some(Command::Migrate(args)) => {
            let args = args.with_database_url(url).with_command_name("myservice migrate");
            Ok(pgskein::cli::execute(&migrator, args).await)
        }
        Some(Command::Serve) => {
            let report = migrator.run(&db.pool(2)).await?;
            println!("migrated {} revisions; serving would start here", report.steps.len());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            for line in [
                "migrate status",
                "migrate upgrade 0004",
                "migrate history",
                "migrate upgrade",
                "migrate downgrade -1 --yes",
                "migrate status --json",
            ] {
                println!("\n$ myservice {line}");
                let argv = std::iter::once("myservice").chain(line.split(' '));
                let Some(Command::Migrate(args)) = Cli::parse_from(argv).command else { unreachable!() };
                let args = args.with_database_url(url.clone()).with_command_name("myservice migrate");
                let code = pgskein::cli::execute(&migrator, args).await;
                if code != ExitCode::SUCCESS {
                    return Ok(code);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
