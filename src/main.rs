//! The `wombatfs` binary: parse the command line and run it.

use clap::Parser;
use wombatfs::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let res = match &cli.command {
        Command::Mount(args) => args.settings().and_then(|s| wombatfs::daemon::mount(s, &cli.log)),
        Command::Gc(args) => wombatfs::daemon::gc(args, &cli.log),
    };
    if let Err(e) = res {
        eprintln!("wombatfs: {e:#}");
        std::process::exit(1);
    }
}
