//! Mounted tests through the kernel: the real binary, real syscalls. Needs root (or
//! fusermount3 permissions) and /dev/fuse; CI runs them as root.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use common::mount::{bin, daemon_gone, is_mounted, Mount};

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn getxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::getxattr(cstr(p).as_ptr(), cstr(Path::new(name)).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn setxattr(p: &Path, name: &str, v: &[u8]) -> Result<(), i32> {
    let rc = unsafe { libc::setxattr(cstr(p).as_ptr(), cstr(Path::new(name)).as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if rc < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap()) } else { Ok(()) }
}

fn errno<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i % 253) as u8)).collect()
}

#[test]
fn namespaces_files_and_errnos_through_the_kernel() {
    let m = Mount::start();
    assert_eq!(errno(fs::write(m.path("at-root"), b"x")), libc::EPERM);
    fs::create_dir_all(m.path("llama/a/b/c")).unwrap();
    fs::write(m.path("llama/a/b/c/block.bin"), b"kv").unwrap();
    assert_eq!(fs::read(m.path("llama/a/b/c/block.bin")).unwrap(), b"kv");
    let long = "x".repeat(256);
    assert_eq!(errno(fs::write(m.path(&format!("llama/{long}")), b"")), libc::ENAMETOOLONG);
    assert_eq!(errno(fs::metadata(m.path("llama/missing"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.path("llama/missing"))), libc::ENOENT, "cached negative entry answers the same");
    fs::write(m.path("llama/missing"), b"now here").unwrap();
    assert_eq!(fs::read(m.path("llama/missing")).unwrap(), b"now here", "a cached negative entry does not hide a create");
    assert_eq!(errno(fs::remove_dir(m.path("llama/a"))), libc::ENOTEMPTY);
    fs::remove_dir_all(m.path("llama/a")).unwrap();
    // O_CREAT|O_EXCL
    let p = m.path("llama/excl");
    OpenOptions::new().write(true).create_new(true).open(&p).unwrap();
    assert_eq!(errno(OpenOptions::new().write(true).create_new(true).open(&p)), libc::EEXIST);
    // times, modes and owners persist through setattr
    let f = File::options().write(true).open(&p).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))).unwrap();
    drop(f);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.mtime(), md.uid(), md.gid(), md.mode() & 0o7777), (1_000_000, 1234, 5678, 0o640));
    // statvfs: 4 KiB blocks, real capacity
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cstr(&m.mnt).as_ptr(), &mut s) }, 0);
    assert_eq!(s.f_bsize, 4096);
    assert!(s.f_blocks > 0 && s.f_bavail > 0 && s.f_namemax == 255);
}

#[test]
fn write_patterns_truncate_fallocate_rename_link_symlink() {
    let m = Mount::start();
    fs::create_dir(m.path("ns")).unwrap();
    fs::create_dir(m.path("other")).unwrap();
    // random writes with read-your-writes while open
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.path("ns/rand")).unwrap();
    f.seek(SeekFrom::Start(8192)).unwrap();
    f.write_all(b"tail").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"head").unwrap();
    let mut buf = vec![0; 8196];
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..4], b"head");
    assert_eq!(&buf[8192..], b"tail");
    f.set_len(6000).unwrap();
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 10_000) }, 0);
    assert_eq!(f.metadata().unwrap().len(), 10_000);
    f.sync_all().unwrap();
    drop(f);
    let data = fs::read(m.path("ns/rand")).unwrap();
    assert_eq!(data.len(), 10_000);
    assert_eq!(&data[..4], b"head");
    assert!(data[4..].iter().all(|b| *b == 0));
    // tmp + rename over an existing name; a reader of the old name keeps the old bytes
    fs::write(m.path("ns/final"), b"old").unwrap();
    let mut old = File::open(m.path("ns/final")).unwrap();
    fs::write(m.path("ns/final.tmp"), b"new").unwrap();
    fs::rename(m.path("ns/final.tmp"), m.path("ns/final")).unwrap();
    let mut s = String::new();
    old.read_to_string(&mut s).unwrap();
    assert_eq!(s, "old");
    assert_eq!(fs::read(m.path("ns/final")).unwrap(), b"new");
    // RENAME_NOREPLACE / RENAME_EXCHANGE through renameat2
    fs::write(m.path("ns/x"), b"x").unwrap();
    let r = |a: &str, b: &str, fl: u32| unsafe {
        libc::renameat2(libc::AT_FDCWD, cstr(&m.path(a)).as_ptr(), libc::AT_FDCWD, cstr(&m.path(b)).as_ptr(), fl)
    };
    assert_eq!(r("ns/x", "ns/final", libc::RENAME_NOREPLACE), -1);
    assert_eq!(r("ns/x", "ns/final", libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(m.path("ns/x")).unwrap(), b"new");
    // directories move across namespaces
    fs::create_dir(m.path("ns/sub")).unwrap();
    fs::write(m.path("ns/sub/f"), b"f").unwrap();
    fs::rename(m.path("ns/sub"), m.path("other/sub")).unwrap();
    assert_eq!(fs::read(m.path("other/sub/f")).unwrap(), b"f");
    // unlink while open
    let mut held = File::open(m.path("ns/x")).unwrap();
    fs::remove_file(m.path("ns/x")).unwrap();
    let mut s = String::new();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(s, "new");
    // hard links and symlinks
    fs::hard_link(m.path("ns/final"), m.path("other/link")).unwrap();
    assert_eq!(fs::metadata(m.path("ns/final")).unwrap().nlink(), 2);
    std::os::unix::fs::symlink("../ns/final", m.path("other/sym")).unwrap();
    assert_eq!(fs::read(m.path("other/sym")).unwrap(), b"x");
    assert_eq!(fs::read_link(m.path("other/sym")).unwrap(), Path::new("../ns/final"));
}

#[test]
fn o_direct_mmap_and_xattrs() {
    let m = Mount::start();
    fs::create_dir(m.path("ns")).unwrap();
    // O_DIRECT round-trips: writes are accepted at any alignment (they reach the daemon);
    // reads of a local blob are served by passthrough from the flat file, so they follow the
    // cache filesystem's alignment rules, as on the directory wombatfs replaces
    let data = pattern(1 << 20, 3);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(m.path("ns/direct")).unwrap();
    f.write_all(&data).unwrap();
    drop(f);
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(m.path("ns/direct")).unwrap();
    let mut raw = vec![0u8; data.len() + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let aligned = &mut raw[off..off + data.len()];
    f.read_exact(aligned).unwrap();
    assert!(aligned == &data[..]);
    // mmap: MAP_PRIVATE and read-only MAP_SHARED of a sealed file
    let f = File::open(m.path("ns/direct")).unwrap();
    for flags in [libc::MAP_PRIVATE, libc::MAP_SHARED] {
        let p = unsafe { libc::mmap(std::ptr::null_mut(), data.len(), libc::PROT_READ, flags, f.as_raw_fd(), 0) };
        assert_ne!(p, libc::MAP_FAILED);
        let view = unsafe { std::slice::from_raw_parts(p as *const u8, data.len()) };
        assert!(view == &data[..]);
        unsafe { libc::munmap(p, data.len()) };
    }
    // a shared writable mapping of a file being written does not corrupt it
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.path("ns/shared")).unwrap();
    f.set_len(8192).unwrap();
    let p = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    assert_ne!(p, libc::MAP_FAILED);
    unsafe {
        std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), p as *mut u8, 6);
        libc::msync(p, 8192, libc::MS_SYNC);
        libc::munmap(p, 8192);
    }
    drop(f);
    let got = fs::read(m.path("ns/shared")).unwrap();
    assert_eq!(got.len(), 8192);
    assert_eq!(&got[..6], b"mapped");
    // xattrs
    let p = m.path("ns/direct");
    setxattr(&p, "user.owner", b"rank0").unwrap();
    assert_eq!(getxattr(&p, "user.owner").unwrap(), b"rank0");
    assert_eq!(getxattr(&p, "user.wombatfs.blake3").unwrap(), blake3::hash(&data).to_hex().as_bytes());
    assert_eq!(getxattr(&p, "user.wombatfs.tier").unwrap(), b"flat");
    assert_eq!(setxattr(&p, "user.wombatfs.tier", b"s3"), Err(libc::EPERM));
    assert_eq!(getxattr(&p, "user.nothing"), Err(libc::ENODATA));
}

#[test]
fn identical_blocks_are_stored_once_on_disk() {
    let m = Mount::start();
    let block = pattern(16 << 20, 9);
    for (i, ns) in ["a", "b"].iter().enumerate() {
        fs::create_dir(m.path(ns)).unwrap();
        for j in 0..3 {
            fs::write(m.path(&format!("{ns}/block-{i}-{j}.bin")), &block).unwrap();
        }
    }
    let du = |p: &Path| -> u64 {
        let out = Command::new("du").arg("-sk").arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse::<u64>().unwrap() * 1024
    };
    // six names of one 16 MiB block: the cache dir (flat tier + object store + index, with
    // ~2 MiB of fixed fan-out directories) holds ~1×, not 6× or 2×
    let used = du(&m.cache);
    assert!(used < block.len() as u64 * 3 / 2, "cache dir uses {used} bytes for one 16 MiB block");
    assert!(used >= block.len() as u64, "the block is on disk: {used}");
    assert_eq!(getxattr(&m.path("a/block-0-0.bin"), "user.wombatfs.blake3"), getxattr(&m.path("b/block-1-2.bin"), "user.wombatfs.blake3"));
}

#[test]
fn large_directory_readdir() {
    let m = Mount::start();
    fs::create_dir(m.path("ns")).unwrap();
    let n = 100_000;
    for i in 0..n {
        File::create(m.path(&format!("ns/{i:07}.bin"))).unwrap();
    }
    let count = fs::read_dir(m.path("ns")).unwrap().count();
    assert_eq!(count, n);
    let out = Command::new("ls").arg("-l").arg(m.path("ns")).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n + 1);
    fs::remove_dir_all(m.path("ns")).unwrap();
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);
}

#[test]
fn kill9_then_remount_keeps_closed_and_fsynced_files() {
    let mut m = Mount::start();
    fs::create_dir_all(m.path("ns/d")).unwrap();
    let mut expected = Vec::new();
    for i in 0..50u8 {
        let p = format!("ns/d/f{i}");
        let data = pattern(1000 + i as usize * 3000, i);
        let mut f = File::create(m.path(&p)).unwrap();
        f.write_all(&data).unwrap();
        if i % 2 == 0 {
            f.sync_all().unwrap();
        }
        drop(f);
        expected.push((p, data));
    }
    // a file open for writing at the crash is not promised; it must not corrupt anything
    let mut open = File::create(m.path("ns/d/open")).unwrap();
    open.write_all(b"unsealed").unwrap();
    m.kill9();
    drop(open);
    assert!(is_mounted(&m.mnt), "the dead mount is still there");
    assert_eq!(errno(fs::metadata(m.path("never-looked-up"))), libc::ENOTCONN);
    m.mount(); // clears the stale mount by itself
    for (p, data) in &expected {
        assert_eq!(&fs::read(m.path(p)).unwrap(), data, "{p}");
    }
    // the flat tier can be lost entirely: blobs come back from the object store, verified
    m.unmount();
    fs::remove_dir_all(m.cache.join("flat")).unwrap();
    m.mount();
    for (p, data) in &expected {
        assert_eq!(&fs::read(m.path(p)).unwrap(), data, "{p} after losing the flat tier");
    }
    m.unmount();
}

#[test]
fn signals_and_unmounts_end_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut m = Mount::start();
        fs::create_dir(m.path("ns")).unwrap();
        fs::write(m.path("ns/f"), b"persist").unwrap();
        m.signal(sig);
        m.wait_exit(0);
        m.mount();
        assert_eq!(fs::read(m.path("ns/f")).unwrap(), b"persist");
        m.unmount();
    }
}

#[test]
fn background_mode_returns_once_mounted() {
    let dir = tempfile::Builder::new().prefix("wombat-test-").tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let cache = dir.path().join("cache");
    fs::create_dir(&mnt).unwrap();
    let out = Command::new(bin()).env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0").arg("mount").arg(&mnt).arg("--cache-dir").arg(&cache).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let guard = scopeguard(&mnt, Some(&cache));
    assert!(is_mounted(&mnt), "mounted when the command returns");
    fs::create_dir(mnt.join("ns")).unwrap();
    fs::write(mnt.join("ns/f"), b"bg").unwrap();
    // a second daemon on the same cache dir is refused with the holder's pid
    let other = dir.path().join("mnt2");
    fs::create_dir(&other).unwrap();
    let out = Command::new(bin()).env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0").arg("mount").arg(&other).arg("--cache-dir").arg(&cache).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another wombatfs (pid"), "{err}");
    assert!(!is_mounted(&other));
    assert!(Command::new("fusermount3").arg("-u").arg(&mnt).status().unwrap().success());
    // the daemon flushes and releases the cache dir; remounting sees the file
    assert!(daemon_gone(&cache, std::time::Duration::from_secs(30)), "daemon did not exit after unmount");
    let out = Command::new(bin()).env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0").arg("mount").arg(&mnt).arg("--cache-dir").arg(&cache).output().unwrap();
    assert!(out.status.success());
    assert_eq!(fs::read(mnt.join("ns/f")).unwrap(), b"bg");
    assert!(fs::read_to_string(cache.join("wombatfs.log")).unwrap().contains("clean shutdown"));
    // unmounted and waited for, so the daemon's last index write is not made after the temp
    // dir is removed (it recreated `cache/index` there)
    assert!(Command::new("fusermount3").arg("-u").arg(&mnt).status().unwrap().success());
    assert!(daemon_gone(&cache, std::time::Duration::from_secs(30)), "daemon did not exit after unmount");
    drop(guard);
}

/// Unmounts `mnt` if a test ends with it mounted (a failed assertion), and then waits for a
/// background daemon on `cache` to exit before the test's temp dir goes.
fn scopeguard<'a>(mnt: &'a Path, cache: Option<&'a Path>) -> impl Drop + 'a {
    struct G<'a>(&'a Path, Option<&'a Path>);
    impl Drop for G<'_> {
        fn drop(&mut self) {
            if is_mounted(self.0) {
                common::mount::lazy_unmount(self.0);
            }
            if let Some(cache) = self.1 {
                daemon_gone(cache, std::time::Duration::from_secs(30));
            }
        }
    }
    G(mnt, cache)
}

#[test]
fn bad_startup_input_gives_one_clear_error_and_mounts_nothing() {
    let dir = tempfile::Builder::new().prefix("wombat-test-").tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let cache = dir.path().join("cache");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![dir.path().join("nope").display().to_string()], "No such file"),
        (vec![mnt.display().to_string(), "--store".into(), "ftp://x/y".into()], "unknown store scheme"),
        (vec![mnt.display().to_string(), "--store".into(), "file://relative".into()], "absolute"),
        (vec![mnt.display().to_string(), "--cache-dir".into(), "/dev/null/cache".into()], "cannot create cache dir"),
        (vec![mnt.display().to_string(), "--compression".into(), "lz9".into()], "compression"),
        (vec![dir.path().join("file").display().to_string()], "not a directory"),
        (vec![mnt.display().to_string(), "--flat-size".into(), "lots".into()], "unknown unit"),
        (vec![mnt.display().to_string(), "--foyer-memory".into(), "MiB".into()], "not a number of bytes"),
        (vec![mnt.display().to_string(), "--flat-size".into(), "1MiB".into()], "at least 16MiB"),
        (vec![mnt.display().to_string(), "--foyer-disk".into(), "10 parsecs".into()], "unknown unit"),
        (vec![mnt.display().to_string(), "--config".into(), dir.path().join("budgets.toml").display().to_string()], "budget for \"a/b\""),
    ];
    fs::write(dir.path().join("budgets.toml"), "[budgets]\n\"a/b\" = \"1GiB\"\n").unwrap();
    fs::write(dir.path().join("file"), b"").unwrap();
    for (args, want) in cases {
        let mut cmd = Command::new(bin());
        cmd.env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0");
        cmd.arg("mount").args(&args);
        if !args.iter().any(|a| a == "--cache-dir") {
            cmd.arg("--cache-dir").arg(&cache);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!is_mounted(&mnt));
    }
}

#[test]
fn engine_io_patterns() {
    let m = Mount::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engines/patterns.py");
    let out = Command::new("python3").arg(&script).arg(&m.mnt).output().expect("python3");
    assert!(
        out.status.success(),
        "engine patterns failed:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for engine in ["vllm-fs", "vllm-shared", "lmcache", "sglang", "llama.cpp", "trtllm", "llm-d", "dynamo-kvbm", "people"] {
        assert!(stdout.contains(&format!("ok {engine}")), "{engine} did not run:\n{stdout}");
    }
}

#[test]
fn fio_verify_survives_remount() {
    let mut m = Mount::start();
    fs::create_dir(m.path("fio")).unwrap();
    let dir = m.path("fio");
    // fio writes its verify state files into its working directory: a temp dir, not the repo
    let state = tempfile::Builder::new().prefix("wombat-fio-").tempdir().unwrap();
    let job = |extra: &[&str]| {
        let mut cmd = Command::new("fio");
        cmd.current_dir(state.path());
        cmd.args([
            "--name=kv",
            "--rw=randwrite",
            "--bs=64k",
            "--size=32m",
            "--numjobs=2",
            "--verify=crc32c",
            "--do_verify=1",
            "--randrepeat=1",
            "--ioengine=psync",
        ])
        .arg(format!("--directory={}", dir.display()))
        .args(extra);
        let out = cmd.output().expect("fio (installed by scripts/setup)");
        assert!(out.status.success(), "fio {extra:?}:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    };
    job(&[]);
    m.unmount();
    m.mount();
    job(&["--verify_only"]);
    m.unmount();
}

#[test]
fn umount_ends_the_daemon_cleanly_and_allow_other_passes_through() {
    let mut m = Mount::start_with(&["-o", "allow_other"]);
    let opts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = opts.lines().find(|l| l.split(' ').nth(1) == Some(&*m.mnt.to_string_lossy())).unwrap().to_string();
    assert!(line.contains("allow_other"), "{line}");
    assert!(line.contains("default_permissions") && line.contains("nosuid") && line.contains("nodev"), "{line}");
    fs::create_dir(m.path("ns")).unwrap();
    fs::write(m.path("ns/f"), b"x").unwrap();
    assert!(Command::new("umount").arg(&m.mnt).status().unwrap().success());
    m.wait_exit(0);
    assert!(m.log().contains("clean shutdown"));
}

#[test]
fn disk_full_is_enospc_and_loses_nothing() {
    // the cache dir on a 32 MiB tmpfs: staging, flat tier and index all share it
    let dir = tempfile::Builder::new().prefix("wombat-test-").tempdir().unwrap();
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"]).arg(&small).status().unwrap().success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _tmpfs = Unmount(small.clone());
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut child = Command::new(bin()).env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0")
        .arg("mount")
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(small.join("cache"))
        .arg("--foreground")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !is_mounted(&mnt) {
        assert!(t.elapsed().as_secs() < 20);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _guard = scopeguard(&mnt, None);
    fs::create_dir(mnt.join("ns")).unwrap();
    let keep = pattern(4 << 20, 1);
    fs::write(mnt.join("ns/keep"), &keep).unwrap();
    let mut f = File::create(mnt.join("ns/huge")).unwrap();
    let chunk = pattern(1 << 20, 2);
    let mut err = None;
    for _ in 0..64 {
        if let Err(e) = f.write_all(&chunk) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("a 64 MiB file cannot fit in 32 MiB");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    assert_eq!(fs::read(mnt.join("ns/keep")).unwrap(), keep, "existing files are intact");
    fs::remove_file(mnt.join("ns/huge")).unwrap();
    fs::write(mnt.join("ns/after"), b"space again").unwrap();
    assert_eq!(fs::read(mnt.join("ns/after")).unwrap(), b"space again");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    assert!(child.wait().unwrap().success());
}

/// A failed request is logged once with its request id, op and inode; routine opens log
/// nothing (fuser's default answer to the `TCGETS` ioctl every Python `open()` sends was a
/// multi-line warning: it is `ENOTTY` now, as for a regular file).
#[test]
fn failures_are_logged_with_their_request_and_opens_are_quiet() {
    let mut m = Mount::start_with(&["--log", "wombatfs=debug"]);
    fs::create_dir_all(m.path("ns/full")).unwrap();
    fs::write(m.path("ns/full/f"), b"x").unwrap();
    let err = fs::remove_dir(m.path("ns/full")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    let py = "import fcntl, sys, termios\nf = open(sys.argv[1], 'rb'); f.read()\n\
              try:\n    fcntl.ioctl(f.fileno(), termios.TCGETS, bytes(64))\nexcept OSError as e:\n    print(e.errno)\n";
    let out = std::process::Command::new("python3").arg("-c").arg(py).arg(m.path("ns/full/f")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), libc::ENOTTY.to_string(), "{}", String::from_utf8_lossy(&out.stderr));
    m.unmount();
    let log = m.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("request refused") && l.contains("op=\"rmdir\"")).collect();
    assert_eq!(refused.len(), 1, "logged once: {log}");
    assert!(refused[0].contains("req=") && refused[0].contains(&format!("errno={}", libc::ENOTEMPTY)), "{}", refused[0]);
    assert!(!log.contains("Not Implemented"), "{log}");
}

/// A 4 KiB-aligned buffer for `O_DIRECT`.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096).unwrap();
        // SAFETY: non-zero size; freed with the same layout in drop.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Aligned { ptr, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, std::alloc::Layout::from_size_align(self.len.max(4096), 4096).unwrap()) }
    }
}

/// An fsx-style run with `O_DIRECT` (the fsx crate has no such mode): 20,000 random aligned
/// preads and pwrites, truncates, fsyncs and close+reopens (each close seals a blob) on one
/// file, every read compared with an in-memory model, the whole file compared after each
/// reopen. Random (incompressible) contents.
#[test]
fn o_direct_random_operations_match_a_model() {
    const A: u64 = 4096;
    let mut m = Mount::start();
    fs::create_dir(m.path("ns")).unwrap();
    let path = m.path("ns/direct");
    let open = || OpenOptions::new().read(true).write(true).create(true).custom_flags(libc::O_DIRECT).open(&path).unwrap();
    let mut f = open();
    let mut model: Vec<u8> = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let (mut reads, mut writes, mut reopens) = (0, 0, 0);
    for op in 0..20_000 {
        match rnd(100) {
            0..=39 => {
                let (off, len) = (rnd(256) * A, (1 + rnd(16)) * A);
                let mut buf = Aligned::new(len as usize);
                let data = common::random_bytes(len as usize, op);
                buf.bytes().copy_from_slice(&data);
                // SAFETY: buf is valid and aligned for len bytes.
                let n = unsafe { libc::pwrite(f.as_raw_fd(), buf.ptr as *const libc::c_void, len as usize, off as i64) };
                assert_eq!(n, len as isize, "op {op}: pwrite {off}+{len}: {}", std::io::Error::last_os_error());
                let end = (off + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
                writes += 1;
            }
            40..=84 => {
                let (off, len) = (rnd(300) * A, (1 + rnd(16)) * A);
                let mut buf = Aligned::new(len as usize);
                // SAFETY: buf is valid and aligned for len bytes.
                let n = unsafe { libc::pread(f.as_raw_fd(), buf.ptr as *mut libc::c_void, len as usize, off as i64) };
                assert!(n >= 0, "op {op}: pread {off}+{len}: {}", std::io::Error::last_os_error());
                let want = model.get(off as usize..((off + len) as usize).min(model.len())).unwrap_or(&[]);
                assert_eq!(n as usize, want.len(), "op {op}: pread {off}+{len} length");
                assert!(&buf.bytes()[..n as usize] == want, "op {op}: pread {off}+{len} differs from the model");
                reads += 1;
            }
            85..=89 => {
                let size = rnd(300 * A);
                f.set_len(size).unwrap();
                model.resize(size as usize, 0);
            }
            90..=94 => f.sync_all().unwrap(),
            _ => {
                drop(f);
                assert!(fs::read(&path).unwrap() == model, "op {op}: file differs from the model after close");
                f = open();
                reopens += 1;
            }
        }
    }
    drop(f);
    eprintln!("O_DIRECT: {reads} reads, {writes} writes, {reopens} reopens");
    m.unmount();
    m.mount();
    assert!(fs::read(&path).unwrap() == model, "after a remount");
    m.unmount();
}

fn files_under(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |rd| rd.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum())
}

/// A reader that resolved a name just before a writer's `os.replace` over it opens the version
/// it resolved, as on a local filesystem (the engines replace blocks through a temp name);
/// the replaced inode and its blob go once the kernel forgets it.
#[test]
fn a_name_resolved_before_a_replace_still_opens() {
    let m = Mount::start();
    fs::create_dir(m.path("ns")).unwrap();
    let old = pattern(100_000, 1);
    fs::write(m.path("ns/blk"), &old).unwrap();
    // an O_PATH descriptor holds the resolved inode without opening it
    let fd = unsafe { libc::open(cstr(&m.path("ns/blk")).as_ptr(), libc::O_PATH) };
    assert!(fd >= 0);
    let before = files_under(&m.cache.join("flat"));
    fs::write(m.path("ns/tmp"), pattern(100_000, 2)).unwrap();
    fs::rename(m.path("ns/tmp"), m.path("ns/blk")).unwrap();
    assert_eq!(fs::read(m.path("ns/blk")).unwrap(), pattern(100_000, 2));
    let reopened = fs::read(format!("/proc/self/fd/{fd}"));
    assert!(reopened.as_ref().is_ok_and(|d| *d == old), "the resolved version opens and reads: {:?}", reopened.map(|d| d.len()));
    assert_eq!(files_under(&m.cache.join("flat")), before + 1, "the old blob is kept while it is held");
    unsafe { libc::close(fd) };
    // the kernel forgets the inode once nothing holds it; its blob is then reclaimed
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while files_under(&m.cache.join("flat")) > before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(files_under(&m.cache.join("flat")), before, "the replaced blob is reclaimed after the kernel's forget");

    // racing readers and a replacing writer: no ENOENT, every read is a whole version
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (dir, stop) = (m.path("ns"), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tmp = dir.join(format!("tmp{i}"));
                fs::write(&tmp, pattern(8192, (i % 200) as u8)).unwrap();
                fs::rename(&tmp, dir.join("hot")).unwrap();
                i += 1;
            }
            i
        })
    };
    while fs::metadata(m.path("ns/hot")).is_err() {
        std::thread::yield_now();
    }
    let (mut reads, t0) = (0, std::time::Instant::now());
    while t0.elapsed() < std::time::Duration::from_secs(3) {
        let d = fs::read(m.path("ns/hot")).unwrap_or_else(|e| panic!("read {reads} of a name being replaced: {e}"));
        assert!(d.len() == 8192 && d == pattern(8192, d[0]), "a whole version");
        reads += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replaces = writer.join().unwrap();
    assert!(reads > 100 && replaces > 100, "{reads} reads, {replaces} replaces");
}
