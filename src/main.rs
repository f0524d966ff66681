//! The `wombatfs` binary: parse the command line and run it.

use clap::Parser;
use wombatfs::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let log = wombatfs::daemon::LogSpec { filter: cli.log.clone(), json: cli.log_format == "json" };
    let res = match &cli.command {
        Command::Mount(args) => args.settings().and_then(|s| wombatfs::daemon::mount(s, &log)),
        Command::Gc(args) => wombatfs::daemon::gc(args, &log),
        Command::Stats(args) => wombatfs::admin::stats::run(args),
        Command::Warm(args) => wombatfs::admin::warm::run(args),
    };
    if let Err(e) = res {
        eprintln!("wombatfs: {e:#}");
        std::process::exit(1);
    }
}
