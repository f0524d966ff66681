//! Commands an operator runs beside a mount: `wombatfs stats` (a live table from the mount's
//! `/metrics`) and `wombatfs warm` (bring files into the local tiers). They talk to the
//! daemon only through the mount and its metrics endpoint.

pub mod scrape;
pub mod stats;
pub mod warm;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A wombatfs mount of this machine: where it is mounted and its cache dir.
#[derive(Debug, Clone)]
pub struct Found {
    /// the mountpoint
    pub point: PathBuf,
    /// the daemon's cache dir (from the mount's source `wombatfs:<cache-dir>`)
    pub cache_dir: PathBuf,
}

/// The wombatfs mount at `path` (or holding it), or the only one when `path` is `None`.
pub fn find_mount(path: Option<&Path>) -> Result<Found> {
    let mounts: Vec<Found> = crate::sys::mounts()
        .into_iter()
        // `fuse` (mounted by root directly) or `fuse.wombatfs` (through fusermount3)
        .filter(|m| m.fstype == "fuse" || m.fstype == "fuse.wombatfs")
        .filter_map(|m| Some(Found { point: m.point, cache_dir: PathBuf::from(m.source.strip_prefix("wombatfs:")?) }))
        .collect();
    match path {
        Some(p) => {
            let p = std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))?;
            // the innermost mount holding the path
            mounts.into_iter().filter(|m| p.starts_with(&m.point)).max_by_key(|m| m.point.as_os_str().len()).with_context(|| format!("{} is not on a wombatfs mount", p.display()))
        }
        None => match mounts.len() {
            0 => bail!("no wombatfs mount on this machine"),
            1 => Ok(mounts.into_iter().next().expect("one mount")),
            _ => bail!("{} wombatfs mounts: name one ({})", mounts.len(), mounts.iter().map(|m| m.point.display().to_string()).collect::<Vec<_>>().join(", ")),
        },
    }
}

/// The metrics address of a mount's daemon (`<cache-dir>/metrics.addr`).
pub fn metrics_addr(m: &Found) -> Result<String> {
    let f = crate::daemon::metrics_http::addr_file(&m.cache_dir);
    let addr = std::fs::read_to_string(&f).with_context(|| {
        format!("the mount on {} serves no metrics ({} is missing: mounted with --metrics-addr off?)", m.point.display(), f.display())
    })?;
    Ok(addr.trim().to_string())
}
