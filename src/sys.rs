//! The operating-system calls more than one part needs, each wrapped once: the space of a
//! filesystem (`statvfs`), the mount table (`/proc/self/mountinfo`) and the C allocator's
//! retention (`mallopt`).

use std::path::{Path, PathBuf};

/// What `statvfs` says of a filesystem, in bytes and inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// total bytes
    pub total: u64,
    /// free bytes
    pub free: u64,
    /// bytes free to unprivileged users
    pub avail: u64,
    /// total inodes
    pub files: u64,
    /// free inodes
    pub ffree: u64,
}

/// Keep the C allocator from holding on to freed memory; call before any thread starts.
///
/// glibc's defaults made a daemon that had written 96 × 16 MiB keep 650–760 MiB of anonymous
/// memory with 64 MiB of foyer RAM configured (`scripts/bench-memory`): freeing a large
/// buffer raises the mmap threshold (up to 32 MiB), so the next 1–16 MiB buffers (upload
/// envelopes, ranged GET bodies, foyer pieces) come from per-thread heap arenas (up to 8 per
/// core) that fragment and are never returned. A fixed 256 KiB threshold sends every large
/// buffer to `mmap` (returned on free) and two arenas bound the rest. `GLIBC_TUNABLES` with
/// malloc settings, when set, wins (an operator's choice).
pub fn bound_allocator() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc")) {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hand the heap's free pages back to the system. The load at mount allocates every index
/// record (three per name) and frees them between the tree's long-lived blocks, so without
/// this the freed pages stayed resident (glibc trims only the top of the heap on its own).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointer changes.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The space of the filesystem holding `path`.
pub fn space(path: &Path) -> std::io::Result<Space> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs fills the zeroed struct we own; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bytes = |n: u64| n.saturating_mul(st.f_frsize);
    Ok(Space { total: bytes(st.f_blocks), free: bytes(st.f_bfree), avail: bytes(st.f_bavail), files: st.f_files, ffree: st.f_ffree })
}

/// Total bytes of the filesystem that holds `path` or, while it does not exist yet, its
/// nearest existing ancestor.
pub fn capacity(path: &Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    space(p).ok().map(|s| s.total)
}

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted device (the key of `/sys/class/bdi/`)
    pub dev: String,
    /// where it is mounted (octal escapes of the table undone)
    pub point: PathBuf,
    /// filesystem type, e.g. `fuse.wombatfs`
    pub fstype: String,
    /// what is mounted, e.g. `wombatfs:/var/lib/wombatfs` (octal escapes undone)
    pub source: String,
}

/// This process's mount table, oldest mount first.
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

/// Parse `/proc/<pid>/mountinfo`: `id parent major:minor root point options… - fstype …`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(Mount {
                dev: f.get(2)?.to_string(),
                point: PathBuf::from(unescape(f.get(4)?)),
                fstype: f.get(sep + 1)?.to_string(),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
}

/// Undo the table's `\ooo` escapes (space, tab, newline, backslash in mount points).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's resident memory (`VmRSS`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes of the files under `dir` (not following links); unreadable entries count as empty.
pub fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let t = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                 90 22 0:52 / /tmp/kv\\040cache rw,nosuid - fuse.wombatfs wombatfs:/c rw,user_id=0\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], Mount { dev: "0:52".into(), point: "/tmp/kv cache".into(), fstype: "fuse.wombatfs".into(), source: "wombatfs:/c".into() });
        assert_eq!(m[0].fstype, "ext4");
    }

    #[test]
    fn space_of_an_existing_dir_and_capacity_of_a_future_one() {
        let s = space(Path::new("/")).unwrap();
        assert!(s.total > 0 && s.free <= s.total);
        assert_eq!(capacity(Path::new("/no/such/dir/yet")), Some(s.total));
    }
}
