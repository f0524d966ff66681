//! The `wombatfs` binary: parse the command line and run it.

use clap::Parser;
use wombatfs::cli::{Cli, Command};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // started by mount(8) as mount.fuse.wombatfs for an fstab line
    let helper = args.first().is_some_and(|a| wombatfs::mount_helper::invoked_as_helper(a));
    let cli = if helper {
        match wombatfs::mount_helper::translate(&args[1..]) {
            Ok(wombatfs::mount_helper::Call::Mount(argv)) => Cli::parse_from(argv),
            Ok(wombatfs::mount_helper::Call::Fake) => return,
            Err(e) => {
                eprintln!("{}: {e:#}", wombatfs::mount_helper::NAME);
                std::process::exit(1);
            }
        }
    } else {
        Cli::parse_from(args)
    };
    let log = wombatfs::daemon::LogSpec { filter: cli.log.clone(), json: cli.log_format == "json" };
    let res = match &cli.command {
        Command::Mount(args) => args.settings().and_then(|s| {
            if helper && wombatfs::daemon::already_serving(&s) {
                return Ok(()); // `mount -a` again: the line is mounted
            }
            wombatfs::daemon::mount(s, &log)
        }),
        Command::Gc(args) => wombatfs::daemon::gc(args, &log),
        Command::Stats(args) => wombatfs::admin::stats::run(args),
        Command::Warm(args) => wombatfs::admin::warm::run(args),
    };
    if let Err(e) = res {
        eprintln!("wombatfs: {e:#}");
        std::process::exit(1);
    }
}
