//! FUSE over io_uring (`--fuse-transport uring`). CI turns the kernel's `enable_uring` on for
//! the run (scripts/test); where it is off, or the kernel lacks it, the mount must say it runs
//! on /dev/fuse, and these tests check that it still serves everything.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::mount::Mount;
use common::scrape::{get, scrape};

const RING: &str = "wombatfs_fuse_uring_requests_total";

/// Whether the kernel offers FUSE over io_uring to mounts that ask (`enable_uring`).
fn kernel_offers_uring() -> bool {
    fs::read_to_string("/sys/module/fuse/parameters/enable_uring").is_ok_and(|v| v.trim() == "Y")
}

fn root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn mount() -> (Mount, bool) {
    let m = Mount::start_with(if root() { &["--fuse-transport", "uring", "-o", "allow_other"] } else { &["--fuse-transport", "uring"] });
    // the line comes once the queues registered, which may be after the mount answers
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !m.log().contains("fuse transport:") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = m.log();
    let on = log.contains("fuse transport: io_uring");
    assert!(on || log.contains("fuse transport: /dev/fuse"), "the mount says which transport it runs on: {log}");
    assert_eq!(on, kernel_offers_uring(), "io_uring exactly when the kernel offers it: {log}");
    (m, on)
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    common::random_bytes(len, seed)
}

#[test]
fn every_op_is_served_from_the_queues() {
    let (m, on) = mount();
    let before = scrape(&m);
    let ns = m.path("ns");
    fs::create_dir(&ns).unwrap();
    // files: a large random one (several 1 MiB WRITEs and READs), a small one, an empty one
    let big = random(1, (3 << 20) + 12345);
    fs::write(ns.join("big"), &big).unwrap();
    fs::write(ns.join("small"), b"hello ring").unwrap();
    File::create(ns.join("empty")).unwrap();
    assert!(fs::read(ns.join("big")).unwrap() == big);
    assert_eq!(fs::read(ns.join("small")).unwrap(), b"hello ring");
    assert_eq!(fs::metadata(ns.join("empty")).unwrap().len(), 0);
    // O_DIRECT reads, as vLLM's file tier makes them
    let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(ns.join("big")).unwrap();
    let layout = std::alloc::Layout::from_size_align(1 << 20, 4096).unwrap();
    // SAFETY: a non-zero layout; freed below.
    let buf = unsafe { std::slice::from_raw_parts_mut(std::alloc::alloc(layout), 1 << 20) };
    let n = f.read_at(buf, 1 << 20).unwrap();
    assert!(n == 1 << 20 && buf[..] == big[1 << 20..2 << 20]);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf.as_mut_ptr(), layout) };
    // (a writer waits for passthrough readers to close)
    drop(f);
    // a rewrite in place, fsync, truncate, fallocate
    let mut w = OpenOptions::new().write(true).open(ns.join("big")).unwrap();
    w.seek(SeekFrom::Start(4096)).unwrap();
    w.write_all(b"REWRITTEN").unwrap();
    w.sync_all().unwrap();
    w.set_len(8192).unwrap();
    drop(w);
    let mut want = big[..8192].to_vec();
    want[4096..4105].copy_from_slice(b"REWRITTEN");
    assert!(fs::read(ns.join("big")).unwrap() == want);
    let g = OpenOptions::new().write(true).open(ns.join("empty")).unwrap();
    // SAFETY: a valid descriptor.
    assert_eq!(unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&g), 0, 0, 65536) }, 0);
    drop(g);
    assert_eq!(fs::metadata(ns.join("empty")).unwrap().len(), 65536);
    // attributes: chmod, times, ownership
    fs::set_permissions(ns.join("small"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(ns.join("small")).unwrap().permissions().mode() & 0o777, 0o600);
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 5);
    File::options().write(true).open(ns.join("small")).unwrap().set_modified(t).unwrap();
    assert_eq!(fs::metadata(ns.join("small")).unwrap().modified().unwrap(), t);
    if root() {
        std::os::unix::fs::chown(ns.join("small"), Some(1000), Some(1000)).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&fs::metadata(ns.join("small")).unwrap()), 1000);
    }
    // names: rename (and RENAME_NOREPLACE), hard link, symlink, mknod, unlink, rmdir
    fs::rename(ns.join("small"), ns.join("renamed")).unwrap();
    assert!(!ns.join("small").exists());
    fs::hard_link(ns.join("renamed"), ns.join("linked")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&fs::metadata(ns.join("linked")).unwrap()), 2);
    std::os::unix::fs::symlink("renamed", ns.join("sym")).unwrap();
    assert_eq!(fs::read_link(ns.join("sym")).unwrap(), Path::new("renamed"));
    assert_eq!(fs::read(ns.join("sym")).unwrap(), b"hello ring");
    let fifo = std::ffi::CString::new(ns.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let status = Command::new("mv").arg("-n").arg(ns.join("linked")).arg(ns.join("renamed")).status().unwrap();
    assert!(status.success());
    fs::remove_file(ns.join("linked")).unwrap();
    fs::create_dir(ns.join("d")).unwrap();
    fs::remove_dir(ns.join("d")).unwrap();
    assert_eq!(fs::remove_dir(&ns).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    assert_eq!(fs::metadata(ns.join("missing")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    // a directory longer than one READDIRPLUS reply
    let many = m.path("many");
    fs::create_dir(&many).unwrap();
    for i in 0..700 {
        File::create(many.join(format!("name-with-some-length-{i:04}"))).unwrap();
    }
    let mut listed: Vec<String> = fs::read_dir(&many).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    listed.sort();
    assert_eq!(listed.len(), 700);
    assert_eq!(listed[699], "name-with-some-length-0699");
    let out = Command::new("ls").arg("-l").arg(&many).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 701);
    // xattrs and statfs
    let ok = Command::new("setfattr").args(["-n", "user.k", "-v", "v1"]).arg(ns.join("renamed")).status().map(|s| s.success());
    if let Ok(ok) = ok {
        assert!(ok);
        let out = Command::new("getfattr").args(["-n", "user.k", "--only-values"]).arg(ns.join("renamed")).output().unwrap();
        assert_eq!(out.stdout, b"v1");
        assert!(Command::new("setfattr").args(["-x", "user.k"]).arg(ns.join("renamed")).status().unwrap().success());
    }
    let out = Command::new("stat").args(["-f", "-c", "%S %l"]).arg(m.path("")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4096 255");
    // another user: the kernel checks permissions (default_permissions), the daemon lets
    // allow_other through
    if root() {
        let out = Command::new("setpriv").args(["--reuid=2000", "--regid=2000", "--clear-groups", "cat"]).arg(ns.join("renamed")).output().unwrap();
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
        let out = Command::new("setpriv").args(["--reuid=2000", "--regid=2000", "--clear-groups", "ls"]).arg(&ns).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    let after = scrape(&m);
    let served = get(&after, RING) - get(&before, RING);
    if on {
        assert!(served > 1000.0, "requests were served from the queues: {served}");
    } else {
        assert_eq!(served, 0.0);
    }
    assert_eq!(get(&after, "wombatfs_fuse_errors_total{op=\"open\",errno=\"EIO\"}"), 0.0);
    assert!(!m.log().contains("ERROR"), "{}", m.log());
}

#[test]
fn engines_and_passthrough_on_the_queues() {
    let (mut m, on) = mount();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engines/patterns.py");
    let out = Command::new("python3").arg(&script).arg(&m.mnt).output().expect("python3");
    assert!(out.status.success(), "engine patterns failed:\n{}\n{}\ndaemon log:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), m.log());
    // a sealed local blob is read by the kernel from the flat file: the backing was
    // registered on the session's descriptor by the queue that answered the open
    fs::create_dir(m.path("pt")).unwrap();
    let data = random(7, 5 << 20);
    fs::write(m.path("pt/block"), &data).unwrap();
    let opens = |m: &Mount| get(&scrape(m), "wombatfs_passthrough_opens_total");
    let passthrough = m.log().contains("passthrough: on");
    let mut via_kernel = false;
    for _ in 0..50 {
        let before = opens(&m);
        let mut got = Vec::new();
        File::open(m.path("pt/block")).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == data);
        if opens(&m) > before {
            via_kernel = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(via_kernel, passthrough, "passthrough opens exactly when passthrough is on");
    // closed files survive a remount on the same transport
    m.unmount();
    m.mount();
    assert!(fs::read(m.path("pt/block")).unwrap() == data);
    if on {
        assert!(get(&scrape(&m), RING) > 0.0);
    }
}
