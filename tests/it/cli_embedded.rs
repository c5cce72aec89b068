//! The commands embedded in a service's binary: `cli::execute` with `Args`
//! mounted as a subcommand, and `cli::run_with`, over an in-memory set with
//! the service's own configuration.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgskein::{Config, Migrator};

use crate::common::{fixture, fresh_db};

#[derive(Parser)]
struct Service {
    #[command(subcommand)]
    command: ServiceCommand,
}

#[derive(Subcommand)]
enum ServiceCommand {
    Serve,
    Migrate(pgskein::cli::Args),
}

/// The `pgskein::cli::Args` of `myservice migrate <argv>`.
pub fn migrate_args(argv: &[&str]) -> pgskein::cli::Args {
    let argv = ["myservice", "migrate"].iter().chain(argv).copied();
    match Service::parse_from(argv).command {
        ServiceCommand::Migrate(args) => args,
        ServiceCommand::Serve => unreachable!(),
    }
}

#[tokio::test]
async fn a_service_mounts_the_commands_as_a_subcommand_over_its_own_set_and_config() {
    let db = fresh_db("cli_mount").await;
    let client = db.connect().await.unwrap();
    let set = fixture("linear").with_config(Config::default().schema("svc_ledger"));

    let args = migrate_args(&["upgrade", "0002", "--json"]).default_database_url(db.url());
    assert_eq!(args.command_name(), "upgrade");
    assert_eq!(pgskein::cli::execute(&set, args).await, ExitCode::SUCCESS);
    let n: i64 = client.query_one("SELECT count(*) FROM svc_ledger.applied", &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "the service's schema setting is used");

    let args = migrate_args(&["downgrade", "base", "--json"]).default_database_url(db.url());
    assert_eq!(pgskein::cli::execute(&set, args).await, ExitCode::from(3), "no terminal, no --yes");
    let status = set.status(&client).await.unwrap();
    assert_eq!(status.applied.len(), 2);

    let args = migrate_args(&["new", "x"]).default_database_url(db.url());
    assert_eq!(
        pgskein::cli::execute(&set, args).await,
        ExitCode::from(2),
        "an embedded set has no files to add to"
    );
}

#[test]
fn run_with_parses_the_arguments_and_blocks_on_its_own_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = runtime.block_on(fresh_db("cli_run_with"));
    let url = db.url();
    let set = fixture("linear");
    let code =
        pgskein::cli::run_with(set.clone(), ["myservice", "--database-url", &url, "upgrade", "--json"]);
    assert_eq!(code, ExitCode::SUCCESS);
    let code = pgskein::cli::run_with(
        set.clone(),
        ["myservice", "--database-url", &url, "status", "--require-head", "--json"],
    );
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(pgskein::cli::run_with(set, ["myservice", "no-such-command"]), ExitCode::from(2));
    let applied = runtime.block_on(async {
        let client = db.connect().await.unwrap();
        crate::common::ledger(&client).await.len()
    });
    assert_eq!(applied, 4);
}
