//! Bounded local tiers, the foyer tier and namespace budgets, through the kernel.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mount::Mount;
use common::s3::{endpoint, unique_prefix, PrivateServer};
use common::scrape::{get, scrape};

const MIB: usize = 1 << 20;

use common::s3::mount_args as s3_args;

fn block(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| ((j as u64).wrapping_mul(2654435761).wrapping_add(i as u64 * 97) >> 7) as u8).collect()
}

fn xattr(p: &Path, name: &str) -> String {
    let out = std::process::Command::new("getfattr").args(["--only-values", "-n", name]).arg(p).output().unwrap();
    assert!(out.status.success(), "getfattr {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn stats(m: &Mount) -> HashMap<String, u64> {
    xattr(&m.mnt, "user.wombatfs.stats").split_whitespace().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.parse().unwrap())).collect()
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn du(p: &Path) -> u64 {
    let out = std::process::Command::new("du").args(["-s", "-B1"]).arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

fn daemon_rss(m: &Mount) -> u64 {
    let pid = fs::read_to_string(m.cache.join("lock")).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The daemon's own memory (anonymous RSS: heap and buffers, not file pages).
fn daemon_anon(m: &Mount) -> u64 {
    let pid = fs::read_to_string(m.cache.join("lock")).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let kb: u64 = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The memory model (docs/architecture.md): anonymous RSS stays under foyer's RAM plus a fixed
/// 160 MiB, however much goes through. Random 16 MiB files (each one upload envelope, several
/// ranged GETs) written with `--upload sync` and read back twice; before the allocator was
/// bounded this scenario kept 650–760 MiB (scripts/bench-memory, 96 files, 64 MiB foyer).
#[test]
fn daemon_memory_stays_within_foyer_ram_plus_the_fixed_overhead() {
    let Some(ep) = endpoint() else { return };
    let foyer_mib = 16;
    let args = s3_args(&ep, &unique_prefix("memory"), &["--upload", "sync", "--flat-size", "64MiB", "--foyer-memory", "16MiB", "--foyer-disk", "128MiB"]);
    let m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    let n = 24;
    let data = |i: usize| common::random_bytes(16 * MIB, 500 + i as u64);
    let mut peak = daemon_anon(&m);
    for i in 0..n {
        fs::write(m.path(&format!("ns/f{i}")), data(i)).unwrap();
        peak = peak.max(daemon_anon(&m));
    }
    for round in 0..2 {
        for i in 0..n {
            assert!(fs::read(m.path(&format!("ns/f{i}"))).unwrap() == data(i), "f{i} differs (round {round})");
            peak = peak.max(daemon_anon(&m));
        }
    }
    eprintln!("peak anonymous RSS {} MiB", peak >> 20);
    assert!(peak >> 20 <= foyer_mib + 160, "anonymous RSS {} MiB over foyer RAM {foyer_mib} MiB + 160 MiB", peak >> 20);
}

#[test]
fn more_data_than_the_local_tiers_hold_stays_within_bounds_and_reads_back() {
    let Some(ep) = endpoint() else { return };
    let args = s3_args(&ep, &unique_prefix("bounds"), &["--flat-size", "64MiB", "--foyer-memory", "16MiB", "--foyer-disk", "128MiB"]);
    let m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    let n = 60; // 240 MiB through a 64 MiB flat tier and a 128 MiB foyer
    for i in 0..n {
        fs::write(m.path(&format!("ns/b{i}")), block(i, 4 * MIB)).unwrap();
    }
    wait_for(Duration::from_secs(60), "uploads", || stats(&m)["uploads_pending"] == 0);
    wait_for(Duration::from_secs(10), "eviction", || stats(&m)["flat_bytes"] <= 64 * MIB as u64);
    let mut peak_rss = [daemon_rss(&m); 3];
    for (round, peak) in peak_rss.iter_mut().enumerate() {
        for i in 0..n {
            let got = fs::read(m.path(&format!("ns/b{i}"))).unwrap();
            assert!(got == block(i, 4 * MIB), "b{i} differs (round {round})");
            *peak = (*peak).max(daemon_rss(&m));
            assert!(du(&m.cache.join("flat")) <= 72 * MIB as u64, "flat tier over its bound");
        }
    }
    let peak_rss_mib = peak_rss.map(|r| r >> 20);
    // the last reads' adoptions are evicted in the background, as after the writes above
    wait_for(Duration::from_secs(10), "eviction after the reads", || stats(&m)["flat_bytes"] <= 64 * MIB as u64);
    let s = stats(&m);
    assert!(s["flat_bytes"] <= 64 * MIB as u64 && s["flat_evictions"] > 0, "{s:?}");
    assert!(s["object_store_gets"] > 0 && s["foyer_inserts"] > 0, "{s:?}");
    let foyer = du(&m.cache.join("foyer"));
    assert!(foyer <= 140 * MIB as u64, "foyer dir {foyer} bytes");
    // the daemon's memory does not grow with the data: 240 MiB went through three times
    eprintln!("flat du {} MiB, foyer du {} MiB, peak RSS per pass {peak_rss_mib:?} MiB, stats {s:?}", du(&m.cache.join("flat")) >> 20, foyer >> 20);
    assert!(peak_rss_mib[2] <= peak_rss_mib[0] + 32, "RSS grows with the data read: {peak_rss_mib:?} MiB");
    assert!(peak_rss_mib[2] < 320, "RSS {peak_rss_mib:?} MiB");
    let st = nix_statvfs(&m.mnt);
    assert_eq!(st.0 * 4096, 64 * MIB as u64, "df shows the flat bound");
}

fn nix_statvfs(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    (s.f_blocks * s.f_frsize / 4096, s.f_bavail * s.f_frsize / 4096)
}

#[test]
fn eviction_never_breaks_an_open_handle_and_evicted_blobs_survive_a_restart_in_foyer() {
    let Some(ep) = endpoint() else { return };
    let args = s3_args(&ep, &unique_prefix("open"), &["--flat-size", "16MiB", "--foyer-memory", "8MiB", "--foyer-disk", "256MiB"]);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    let first = block(1000, 8 * MIB);
    fs::write(m.path("ns/held"), &first).unwrap();
    let mut f = fs::File::open(m.path("ns/held")).unwrap();
    let mut head = vec![0u8; MIB];
    f.read_exact(&mut head).unwrap();
    // push it out of the flat tier while the handle is open
    for i in 0..10 {
        fs::write(m.path(&format!("ns/fill{i}")), block(i, 4 * MIB)).unwrap();
    }
    wait_for(Duration::from_secs(60), "eviction of the held file", || xattr(&m.path("ns/held"), "user.wombatfs.tier") != "flat");
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert!(head == first, "the open handle kept reading the same bytes after eviction");
    drop(f);
    assert_eq!(xattr(&m.path("ns/held"), "user.wombatfs.tier"), "foyer", "evicted blobs are kept in foyer");
    // foyer survives a restart: evicted blobs come back without an object-store GET
    m.unmount();
    m.mount();
    assert_eq!(stats(&m)["object_store_gets"], 0);
    assert!(fs::read(m.path("ns/held")).unwrap() == first);
    let s = stats(&m);
    assert_eq!((s["object_store_gets"], s["foyer_hits"]), (0, 1), "{s:?}");
    assert_eq!(xattr(&m.path("ns/held"), "user.wombatfs.tier"), "flat", "and it is back in the flat tier");
    m.unmount();
}

/// A reader of a small blob that is only in foyer is served by the kernel: the open brings the
/// blob into the flat tier first and hands the kernel its flat file, so no READ reaches the
/// daemon. A blob above `FETCH_AT_OPEN_MAX` opens at once and streams through the daemon as
/// its pieces arrive. Without passthrough (not root) both go through the daemon.
#[test]
fn a_small_blob_only_in_foyer_is_opened_through_passthrough() {
    let Some(ep) = endpoint() else { return };
    let args = s3_args(&ep, &unique_prefix("openfetch"), &["--flat-size", "16MiB", "--foyer-memory", "8MiB", "--foyer-disk", "256MiB"]);
    let m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let passthrough = m.log().contains("passthrough: on");
    fs::create_dir(m.path("ns")).unwrap();
    let small = block(2000, 4 * MIB + 123);
    let large = block(2001, wombatfs::fs::io::FETCH_AT_OPEN_MAX as usize + MIB);
    fs::write(m.path("ns/small"), &small).unwrap();
    fs::write(m.path("ns/large"), &large).unwrap();
    for i in 0..8 {
        fs::write(m.path(&format!("ns/fill{i}")), block(i, 4 * MIB)).unwrap();
    }
    for name in ["small", "large"] {
        wait_for(Duration::from_secs(60), &format!("{name} evicted into foyer"), || xattr(&m.path(&format!("ns/{name}")), "user.wombatfs.tier") == "foyer");
    }
    let count = |s: &std::collections::BTreeMap<String, f64>| (get(s, "wombatfs_passthrough_opens_total"), get(s, "wombatfs_fuse_read_bytes_total"));
    let hits = stats(&m)["foyer_hits"];
    let (opens0, read0) = count(&scrape(&m));
    assert!(fs::read(m.path("ns/small")).unwrap() == small, "the small blob reads back whole");
    let (opens1, read1) = count(&scrape(&m));
    assert_eq!(xattr(&m.path("ns/small"), "user.wombatfs.tier"), "flat", "the open brought it into the flat tier");
    if passthrough {
        assert_eq!((opens1 - opens0, read1 - read0), (1.0, 0.0), "one passthrough open, no byte read through the daemon\n{}", m.log());
    } else {
        assert_eq!((opens1 - opens0, read1 - read0), (0.0, small.len() as f64), "without passthrough the daemon serves every byte");
    }
    assert!(fs::read(m.path("ns/large")).unwrap() == large, "the large blob reads back whole");
    let (opens2, read2) = count(&scrape(&m));
    assert_eq!(opens2, opens1, "a blob above the limit is not held at open: its reads go through the daemon");
    assert_eq!(read2 - read1, large.len() as f64);
    assert_eq!(stats(&m)["foyer_hits"], hits + 2, "both came from foyer");
}

#[test]
fn blobs_not_yet_uploaded_are_never_evicted() {
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let args = s3_args(&server.endpoint, "race", &["--flat-size", "16MiB", "--snapshot-interval", "0"]);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    server.stop();
    for i in 0..10 {
        fs::write(m.path(&format!("ns/b{i}")), block(i, 4 * MIB)).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let s = stats(&m);
    assert!(s["uploads_pending"] >= 10 && s["flat_evictions"] == 0, "nothing evictable while uploads are pending: {s:?}");
    assert!(s["flat_bytes"] >= 40 * MIB as u64, "the flat tier holds the only copy, over its bound: {s:?}");
    let (_, avail) = nix_statvfs(&m.mnt);
    assert_eq!(avail, 0, "df: nothing free while only-local bytes exceed the bound");
    server.restart();
    wait_for(Duration::from_secs(90), "uploads after the restart", || stats(&m)["uploads_pending"] == 0);
    wait_for(Duration::from_secs(10), "eviction after the uploads", || stats(&m)["flat_bytes"] <= 16 * MIB as u64);
    for i in 0..10 {
        assert!(fs::read(m.path(&format!("ns/b{i}"))).unwrap() == block(i, 4 * MIB), "b{i}");
    }
    m.unmount();
    server.stop();
}

#[test]
fn a_namespace_over_its_budget_loses_its_least_recently_used_files_only() {
    let m = Mount::start();
    fs::create_dir(m.path("small")).unwrap();
    fs::create_dir(m.path("other")).unwrap();
    let set = std::process::Command::new("setfattr").args(["-n", "user.wombatfs.budget", "-v", "10MiB"]).arg(m.path("small")).status().unwrap();
    assert!(set.success());
    assert_eq!(xattr(&m.path("small"), "user.wombatfs.budget"), "10MiB");
    let bad = std::process::Command::new("setfattr").args(["-n", "user.wombatfs.budget", "-v", "lots"]).arg(m.path("small")).output().unwrap();
    assert!(!bad.status.success(), "a bad budget is refused");
    fs::create_dir(m.path("small/sub")).unwrap();
    for i in 0..8 {
        let dir = if i % 2 == 0 { "small" } else { "small/sub" };
        fs::write(m.path(&format!("{dir}/f{i}")), block(i, 2 * MIB)).unwrap();
        fs::write(m.path(&format!("other/f{i}")), block(i, 2 * MIB)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // read f0 again: it becomes the most recently used
    fs::read(m.path("small/f0")).unwrap();
    wait_for(Duration::from_secs(5), "budget enforcement", || xattr(&m.path("small"), "user.wombatfs.usage").parse::<u64>().unwrap() <= 9 * MIB as u64);
    let exists = |p: &str| fs::metadata(m.path(p)).is_ok();
    assert!(exists("small/f0"), "recently read: kept");
    assert!(!exists("small/sub/f1") && !exists("small/f2") && !exists("small/sub/f3"), "the least recently used went first");
    assert!(exists("small/sub/f7") && exists("small/f6"), "the newest stay");
    for i in 0..8 {
        assert!(fs::read(m.path(&format!("other/f{i}"))).unwrap() == block(i, 2 * MIB), "other namespaces are untouched");
    }
    let (blocks, avail) = nix_statvfs(&m.path("small"));
    assert_eq!(blocks * 4096, 10 * MIB as u64, "df on the namespace shows its budget");
    let used: u64 = xattr(&m.path("small"), "user.wombatfs.usage").parse().unwrap();
    assert_eq!(avail * 4096, 10 * MIB as u64 - used);
    let names = std::process::Command::new("getfattr").args(["-d", "-m", "user.wombatfs"]).arg(m.path("small")).output().unwrap();
    let listed = String::from_utf8_lossy(&names.stdout);
    assert!(listed.contains("user.wombatfs.budget") && listed.contains("user.wombatfs.usage"), "{listed}");
}
