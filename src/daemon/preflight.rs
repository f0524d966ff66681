//! Checks before a daemon starts: the mountpoint (clearing a stale mount of a dead daemon),
//! /dev/fuse, the cache dir and its exclusive lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::Settings;

/// Checks that need no daemon: the mountpoint, /dev/fuse, stale mounts, the cache dir.
pub(super) fn preflight(s: &Settings) -> Result<()> {
    let mp = &s.mountpoint;
    if let Some(fstype) = fuse_mount_at(mp).map(|m| m.fstype) {
        // statfs always reaches the daemon; a stat of the root may be answered from the
        // kernel's attribute cache of a dead mount
        match crate::sys::space(mp) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                eprintln_stale(mp);
                detach(mp)?;
            }
            _ => bail!("{} is already mounted ({fstype}); unmount it first", mp.display()),
        }
    }
    let md = std::fs::metadata(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !md.is_dir() {
        bail!("mountpoint {} is not a directory", mp.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or pass the device to the container");
    }
    make_cache_dir(&s.cache_dir)
}

/// Create the cache dir (private to its owner) and check that it is writable.
pub(super) fn make_cache_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("cannot create cache dir {}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"").with_context(|| format!("cache dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

fn eprintln_stale(mp: &Path) {
    // logging is not initialised yet; this goes to the terminal of whoever mounts
    let _ = writeln!(std::io::stderr(), "wombatfs: clearing a stale mount at {} (its daemon died)", mp.display());
}

/// The FUSE mount at `mp`, if any.
pub(super) fn fuse_mount_at(mp: &Path) -> Option<crate::sys::Mount> {
    let want = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
    crate::sys::mounts().into_iter().find(|m| m.point == want && m.fstype.starts_with("fuse"))
}

/// Lazily detach whatever is mounted at `mp`.
pub(super) fn detach(mp: &Path) -> Result<()> {
    let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes())?;
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let st = std::process::Command::new("fusermount3").arg("-uz").arg(mp).status();
    match st {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("cannot unmount {}: {}", mp.display(), std::io::Error::last_os_error()),
    }
}

/// Take the cache dir's exclusive lock, naming the holder when it is taken.
pub(super) fn lock_cache_dir(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        bail!("cache dir {} is in use by another wombatfs (pid {})", dir.display(), holder.trim());
    }
    Ok(f)
}

pub(super) fn write_pid(lock: &mut File) {
    let _ = lock.set_len(0);
    let _ = std::os::unix::fs::FileExt::write_all_at(lock, std::process::id().to_string().as_bytes(), 0);
}

