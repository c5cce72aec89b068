//! The `pgskein` operator CLI over a directory of revision files. The
//! commands live in `pgskein::cli`, so a service can offer them too.

fn main() -> std::process::ExitCode {
    pgskein::cli::main()
}
