//! Operating a mount: the `/metrics` endpoint scraped with a real HTTP client during a
//! workload, `wombatfs stats`, `wombatfs warm` under a frozen object store, the startup error
//! of a metrics port in use, JSON logs.

mod common;

use std::fs;
use std::process::Command;

use common::mount::{bin, is_mounted, Mount};
use common::s3::{endpoint, mount_args, PrivateServer};
use common::scrape::{get, scrape};

/// Incompressible bytes (xorshift), or compressible ones.
fn data(seed: u64, len: usize, random: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            if random {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                (i / 4096) as u8 ^ seed as u8
            }
        })
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn metrics_count_what_a_cold_read_workload_did() {
    let Some(ep) = endpoint() else { return };
    let prefix = common::s3::unique_prefix("metrics");
    let a = mount_args(&ep, &prefix, &["--upload", "sync"]);
    let mut w = Mount::start_with(&args(&a));
    fs::create_dir(w.path("ns")).unwrap();
    let files: Vec<Vec<u8>> = (0..6).map(|i| data(i, (1 << 20) + 4096 * i as usize, i % 2 == 0)).collect();
    let before = scrape(&w);
    for (i, f) in files.iter().enumerate() {
        fs::write(w.path(&format!("ns/f{i}")), f).unwrap();
    }
    let after = scrape(&w);
    let total: usize = files.iter().map(Vec::len).sum();
    assert_eq!(get(&after, "wombatfs_fuse_write_bytes_total") - get(&before, "wombatfs_fuse_write_bytes_total"), total as f64);
    let puts = get(&after, "wombatfs_object_store_requests_total{op=\"put_blob\",outcome=\"ok\"}") - get(&before, "wombatfs_object_store_requests_total{op=\"put_blob\",outcome=\"ok\"}");
    assert!(puts >= files.len() as f64, "every block stored before its close returned: {puts} puts");
    assert!(puts <= files.len() as f64 + 1.0, "one PUT per block (and the empty blob): a sync close does not queue its blob again: {puts} puts");
    assert!(get(&after, "wombatfs_object_store_bytes_total{op=\"put_blob\"}") >= total as f64);
    assert_eq!(get(&after, "wombatfs_namespace_used_bytes{namespace=\"ns\"}"), total as f64);
    w.unmount();

    // a fresh node: N cold reads are N object-store fetches, N object-store tier hits
    let mut r = Mount::start_with(&args(&a));
    let before = scrape(&r);
    for (i, f) in files.iter().enumerate() {
        assert!(fs::read(r.path(&format!("ns/f{i}"))).unwrap() == *f, "f{i} byte-exact");
    }
    // a fetch is counted when its call returns, which can be just after its reader got the
    // last byte: wait for the counters to settle
    let fetched = |after: &std::collections::BTreeMap<String, f64>| {
        ["fetch_blob", "get_blob"].iter().map(|op| {
            let k = format!("wombatfs_object_store_requests_total{{op=\"{op}\",outcome=\"ok\"}}");
            get(after, &k) - get(&before, &k)
        }).sum::<f64>()
    };
    let t = std::time::Instant::now();
    let mut after = scrape(&r);
    while fetched(&after) < files.len() as f64 && t.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = scrape(&r);
    }
    let d = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(fetched(&after), files.len() as f64, "one object-store GET per cold file");
    assert_eq!(d("wombatfs_tier_hits_total{tier=\"object_store\"}"), files.len() as f64);
    assert_eq!(d("wombatfs_tier_read_bytes_total{tier=\"object_store\"}"), total as f64);
    assert_eq!(d("wombatfs_fuse_read_bytes_total"), total as f64, "every byte went through READ once");
    assert!(d("wombatfs_fuse_request_duration_seconds_count{op=\"read\"}") >= files.len() as f64);
    assert!(get(&after, "wombatfs_resident_memory_bytes") > 0.0);
    assert_eq!(get(&after, "wombatfs_upload_queue_blobs"), 0.0);
    // a failed request is counted by op and errno
    assert!(fs::read(r.path("ns/missing")).is_err());
    assert_eq!(fs::remove_dir(r.path("ns")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    let errs = scrape(&r);
    assert_eq!(get(&errs, "wombatfs_fuse_errors_total{op=\"rmdir\",errno=\"ENOTEMPTY\"}"), 1.0, "{errs:?}");

    // stats: one interval, as JSON, finding the daemon from the mountpoint
    let reader = {
        let p = r.path("ns/f1");
        std::thread::spawn(move || {
            for _ in 0..20 {
                let _ = fs::read(&p);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = Command::new(bin()).args(["stats", "--once", "--json", "--interval", "0.5"]).arg(&r.mnt).output().unwrap();
    reader.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats --json is one JSON object");
    assert_eq!(v["mountpoint"], r.mnt.display().to_string());
    for key in ["/fuse/ops_per_s", "/tiers/flat/hits_per_s", "/object_store/requests_per_s", "/upload_queue/blobs", "/journal/publish_lag_s"] {
        assert!(v.pointer(key).is_some_and(|x| x.is_number()), "{key} in {v}");
    }
    assert!(v["fuse"]["ops_per_s"].as_f64().unwrap() > 0.0, "the reader's requests are counted: {v}");
    let table = Command::new(bin()).args(["stats", "--once", "--interval", "0.2"]).arg(r.path("ns")).output().unwrap();
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(text.lines().count(), 2, "a header and one line: {text}");
    assert!(text.lines().next().unwrap().contains("flat%"));
    r.unmount();
}

#[test]
fn a_warmed_namespace_reads_byte_exact_with_the_store_frozen() {
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let a = mount_args(&server.endpoint, "warm", &["--upload", "sync", "--store-timeout", "5"]);
    let mut w = Mount::start_with(&args(&a));
    fs::create_dir_all(w.path("ns/sub")).unwrap();
    let mut files = Vec::new();
    for i in 0..12u64 {
        let name = if i % 3 == 0 { format!("ns/sub/b{i}") } else { format!("ns/b{i}") };
        let d = data(i, [1, 4096, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20][i as usize % 6], i % 2 == 0);
        fs::write(w.path(&name), &d).unwrap();
        files.push((name, d));
    }
    w.unmount();

    let mut r = Mount::start_with(&args(&a));
    let out = Command::new(bin()).args(["warm", "--jobs", "4"]).arg(r.path("ns")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("warm done: 12 of 12 files"), "{stdout}");
    assert!(stdout.contains("from the object store: 12 files"), "{stdout}");
    server.pause();
    for (name, d) in &files {
        assert!(fs::read(r.path(name)).unwrap() == *d, "{name} byte-exact from the local tiers with the store frozen");
    }
    // warming again finds everything local
    let again = Command::new(bin()).arg("warm").arg(r.path("ns")).output().unwrap();
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("already in the flat tier: 12 files"), "{again}");
    server.resume();
    r.unmount();
}

#[test]
fn warming_more_than_the_flat_tier_holds_says_so_and_warms_what_fits() {
    let Some(ep) = endpoint() else { return };
    let prefix = common::s3::unique_prefix("warmfit");
    let a = mount_args(&ep, &prefix, &["--upload", "sync", "--flat-size", "16MiB"]);
    let mut w = Mount::start_with(&args(&a));
    fs::create_dir(w.path("ns")).unwrap();
    for i in 0..6u64 {
        fs::write(w.path(&format!("ns/f{i}")), data(i, 4 << 20, true)).unwrap();
    }
    w.unmount();
    let mut r = Mount::start_with(&args(&a));
    let out = Command::new(bin()).arg("warm").arg(r.path("ns")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("do not fit the flat tier bound of 16.00 MiB: warming the first 4 files"), "{stderr}");
    assert!(stdout.contains("warm done: 4 of 4 files"), "{stdout}");
    r.unmount();
}

#[test]
fn a_metrics_port_in_use_is_one_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::Builder::new().prefix("wombat-test-").tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = Command::new(bin())
        .arg("mount")
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!is_mounted(&mnt));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("cannot serve metrics on 127.0.0.1:{port} (--metrics-addr)")) && err.contains("Address already in use"), "{err}");
    let bad = Command::new(bin()).arg("mount").arg(&mnt).arg("--metrics-addr").arg("localhost").output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use IP:PORT"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_fields() {
    let mut m = Mount::start_with(&["--log-format", "json", "--metrics-addr", "off"]);
    assert!(!m.cache.join("metrics.addr").exists(), "no endpoint when off");
    fs::create_dir(m.path("ns")).unwrap();
    m.unmount();
    let log = m.log();
    let lines: Vec<serde_json::Value> = log.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().any(|v| v["fields"]["message"] == "mounted" && v["level"] == "INFO"), "{log}");
    assert!(lines.iter().any(|v| v["fields"]["message"] == "clean shutdown"), "{log}");
    assert_eq!(log.lines().filter(|l| !l.starts_with('{')).count(), 0, "every line is JSON: {log}");
}
