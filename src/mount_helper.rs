//! `mount.fuse.wombatfs`: the helper util-linux's `mount` runs for an fstab line of type
//! `fuse.wombatfs` (and systemd's fstab generator through it):
//!
//! ```text
//! s3://kv-bucket/cluster1  /var/cache/kv  fuse.wombatfs  cache_dir=/nvme/wombat,upload=sync,allow_other,_netdev  0 0
//! ```
//!
//! `mount` calls `mount.fuse.wombatfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]`. The
//! binary answers to that name (a symlink made by `scripts/install`) and turns the call into
//! `wombatfs mount`:
//! - SOURCE is the object store (`s3://BUCKET[/PREFIX]`, `file:///DIR`), or `wombatfs` (or
//!   `none`) for the default local store;
//! - an option named like a `wombatfs mount` flag, with `_` or `-`, becomes that flag
//!   (`cache_dir=/x` is `--cache-dir /x`, `s3_path_style` is `--s3-path-style`);
//! - the options that only `mount` itself reads (`defaults`, `noauto`, `_netdev`, `nofail`,
//!   `x-systemd.*`, …) are dropped;
//! - everything else is a FUSE mount option (`allow_other`, `ro`, `noatime`, …);
//! - `-f` (fake) does nothing; `-n`, `-s`, `-v` change nothing here.
//!
//! The daemon forks and `mount` returns once the mount is live, as with any helper.

use std::ffi::OsString;

use anyhow::{bail, Result};

/// The helper's name; `scripts/install` links it into `/sbin`. Any name that starts with it
/// works (tests link a unique `mount.fuse.wombatfs-…` with a matching fstab type).
pub const NAME: &str = "mount.fuse.wombatfs";

/// Whether the program was started under the helper's name.
pub fn invoked_as_helper(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(NAME))
}

/// Options only `mount` (or systemd) reads; never passed to the kernel.
fn mount_only(opt: &str) -> bool {
    const PLAIN: [&str; 11] = ["defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail", "rw"];
    PLAIN.contains(&opt) || opt.starts_with("x-") || opt.starts_with("comment=") || opt.starts_with("helper=")
}

/// A flag of `wombatfs mount` by its long name: whether it takes a value.
struct Flag {
    long: String,
    takes_value: bool,
}

fn mount_flags() -> Vec<Flag> {
    use clap::CommandFactory;
    let cli = crate::cli::Cli::command();
    let mount = cli.find_subcommand("mount").expect("the mount subcommand");
    mount
        .get_arguments()
        // secrets and the environment fallbacks are hidden flags: an fstab line is world-readable
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| Some(Flag { long: a.get_long()?.to_string(), takes_value: a.get_action().takes_values() }))
        .filter(|f| !matches!(f.long.as_str(), "help" | "version" | "foreground"))
        .collect()
}

/// What the helper was asked to do.
#[derive(Debug, PartialEq)]
pub enum Call {
    /// run `wombatfs` with these arguments
    Mount(Vec<OsString>),
    /// `mount -f`: pretend, change nothing
    Fake,
}

/// Translate the helper's arguments (without argv\[0\]) into a `wombatfs mount` call.
pub fn translate(args: &[OsString]) -> Result<Call> {
    let usage = "usage: mount.fuse.wombatfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]";
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => match it.next().and_then(|o| o.to_str()) {
                Some(o) => options.extend(o.split(',').filter(|o| !o.is_empty()).map(str::to_string)),
                None => bail!("-o needs a value; {usage}"),
            },
            Some("-t") => {
                it.next();
            }
            Some("-N") => bail!("mount --namespace is not supported by {NAME}: run mount inside the namespace"),
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                for c in flags[1..].chars() {
                    match c {
                        'f' => fake = true,
                        's' | 'n' | 'v' => {}
                        other => bail!("unknown option -{other}; {usage}"),
                    }
                }
            }
            _ => positional.push(a.clone()),
        }
    }
    let [source, mountpoint] = <[OsString; 2]>::try_from(positional).map_err(|_| anyhow::anyhow!("{usage}"))?;
    let mut out: Vec<OsString> = vec!["wombatfs".into(), "mount".into(), mountpoint];
    // the store named as the source, or `None` for the local store
    let store = match source.to_str() {
        Some("wombatfs" | "none" | "") => None,
        Some(s) if s.starts_with("s3://") || s.starts_with("file://") => Some(s.to_string()),
        _ => bail!("source {source:?}: use s3://BUCKET[/PREFIX], file:///DIR, or wombatfs for the local store"),
    };
    if let Some(s) = &store {
        out.extend(["--store".into(), s.into()]);
    }
    let flags = mount_flags();
    let mut fuse = Vec::new();
    for opt in options {
        if mount_only(&opt) {
            continue;
        }
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        let long = key.replace('_', "-");
        if long == "store" && store.is_some() {
            bail!("the store is given twice: as the source and as store=");
        }
        match (flags.iter().find(|f| f.long == long), value) {
            (Some(f), Some(v)) if f.takes_value => out.extend([format!("--{long}").into(), v.into()]),
            (Some(f), None) if !f.takes_value => out.push(format!("--{long}").into()),
            (Some(f), _) if f.takes_value => bail!("option {key} needs a value ({key}=…)"),
            (Some(_), _) => bail!("option {key} takes no value"),
            (None, _) if matches!(long.as_str(), "aws-secret-access-key" | "aws-session-token" | "aws-access-key-id") => {
                bail!("option {key} is refused: fstab is world-readable; use /root/.aws/credentials or the unit's Environment=")
            }
            (None, _) => fuse.push(opt.clone()),
        }
    }
    if !fuse.is_empty() {
        out.extend(["-o".into(), fuse.join(",").into()]);
    }
    Ok(if fake { Call::Fake } else { Call::Mount(out) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Result<Call> {
        translate(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    fn argv(args: &[&str]) -> Vec<String> {
        match call(args).unwrap() {
            Call::Mount(v) => v.into_iter().map(|a| a.into_string().unwrap()).collect(),
            Call::Fake => panic!("fake"),
        }
    }

    #[test]
    fn an_fstab_line_becomes_the_mount_flags_and_fuse_options() {
        let v = argv(&["s3://kv-bucket/cluster1", "/var/cache/kv", "-o", "rw,cache_dir=/nvme/w,upload=sync,allow_other,_netdev,s3_path_style,x-systemd.requires=network-online.target,noatime", "-t", "fuse.wombatfs"]);
        assert_eq!(
            v,
            [
                "wombatfs", "mount", "/var/cache/kv", "--store", "s3://kv-bucket/cluster1", "--cache-dir", "/nvme/w", "--upload", "sync", "--s3-path-style", "-o",
                "allow_other,noatime"
            ]
        );
        // the translated call is one the real parser accepts
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&v).unwrap();
        let crate::cli::Command::Mount(m) = cli.command else { panic!() };
        let s = m.settings().unwrap();
        assert!(s.sync_uploads && s.s3.path_style);
        assert_eq!(s.mount_options, ["allow_other", "noatime"]);
        assert_eq!(argv(&["wombatfs", "/mnt", "-n"]), ["wombatfs", "mount", "/mnt"]);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let err = |args: &[&str]| call(args).unwrap_err().to_string();
        assert!(err(&["/mnt"]).contains("usage"));
        assert!(err(&["http://x", "/mnt"]).contains("s3://"));
        assert!(err(&["wombatfs", "/mnt", "-o", "upload"]).contains("needs a value"));
        assert!(err(&["wombatfs", "/mnt", "-o", "s3_path_style=yes"]).contains("takes no value"));
        assert!(err(&["wombatfs", "/mnt", "-o", "aws_secret_access_key=x"]).contains("world-readable"));
        assert!(err(&["s3://a", "/mnt", "-o", "store=s3://b"]).contains("twice"));
        assert!(err(&["wombatfs", "/mnt", "-x"]).contains("-x"));
        assert_eq!(call(&["wombatfs", "/mnt", "-fv"]).unwrap(), Call::Fake);
        assert!(invoked_as_helper("/sbin/mount.fuse.wombatfs".as_ref()) && !invoked_as_helper("/usr/bin/wombatfs".as_ref()));
    }
}
