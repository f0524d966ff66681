//! Mounted tests with the S3 object store (SeaweedFS on 127.0.0.1).

mod common;

use std::fs::{self, File};
use std::io::Write;

use common::mount::Mount;
use common::s3::{endpoint, unique_prefix, PrivateServer};

use common::s3::mount_args as s3_args;

fn tier(p: &std::path::Path) -> String {
    let out = std::process::Command::new("getfattr").args(["--only-values", "-n", "user.wombatfs.tier"]).arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn files_come_back_from_s3_after_losing_the_flat_tier() {
    let Some(ep) = endpoint() else { return };
    let args = s3_args(&ep, &unique_prefix("mnt"), &[]);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    let big: Vec<u8> = (0..(24u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    fs::write(m.path("ns/big.bin"), &big).unwrap();
    fs::write(m.path("ns/small.bin"), b"small block").unwrap();
    m.unmount(); // drains the upload queue
    fs::remove_dir_all(m.cache.join("flat")).unwrap();
    m.mount();
    assert_eq!(tier(&m.path("ns/big.bin")), "store");
    assert!(fs::read(m.path("ns/big.bin")).unwrap() == big);
    assert_eq!(fs::read(m.path("ns/small.bin")).unwrap(), b"small block");
    assert_eq!(tier(&m.path("ns/big.bin")), "flat", "promoted into the flat tier");
    m.unmount();
}

#[test]
fn sync_upload_mode_reports_an_outage_as_eio_and_recovers() {
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let args = s3_args(&server.endpoint, "sync", &["--upload", "sync"]);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    let mut f = File::create(m.path("ns/a")).unwrap();
    f.write_all(b"acknowledged").unwrap();
    f.sync_all().unwrap();
    drop(f);
    server.stop();
    let mut f = File::create(m.path("ns/b")).unwrap();
    f.write_all(b"during the outage").unwrap();
    let err = f.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    server.restart();
    f.sync_all().unwrap(); // the staging file was kept: the retry publishes it
    drop(f);
    m.unmount();
    fs::remove_dir_all(m.cache.join("flat")).unwrap();
    m.mount();
    assert_eq!(fs::read(m.path("ns/a")).unwrap(), b"acknowledged");
    assert_eq!(fs::read(m.path("ns/b")).unwrap(), b"during the outage");
    m.unmount();
}

#[test]
fn cold_reads_waiting_on_s3_do_not_block_other_requests() {
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let args = s3_args(&server.endpoint, "cold", &["--threads", "2"]);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    let blocks: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 1 << 20]).collect();
    for (i, b) in blocks.iter().enumerate() {
        fs::write(m.path(&format!("ns/cold{i}")), b).unwrap();
    }
    m.unmount();
    fs::remove_dir_all(m.cache.join("flat")).unwrap();
    m.mount();
    let names: Vec<_> = (0..6).map(|i| m.path(&format!("ns/cold{i}"))).collect();
    for n in &names {
        fs::metadata(n).unwrap(); // look the names up while the server answers
    }
    server.pause();
    // more cold reads than FUSE worker threads, all stuck on the frozen server
    let readers: Vec<_> = names.into_iter().map(|p| std::thread::spawn(move || fs::read(p).unwrap())).collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mnt = m.mnt.clone();
    let other = std::thread::spawn(move || {
        fs::write(mnt.join("ns/local"), b"served meanwhile").unwrap();
        let missing = fs::metadata(mnt.join("ns/never-there")).is_err();
        (fs::read(mnt.join("ns/local")).unwrap(), missing)
    });
    let t = std::time::Instant::now();
    while !other.is_finished() {
        assert!(t.elapsed().as_secs() < 10, "metadata and local I/O blocked behind cold reads");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(other.join().unwrap(), (b"served meanwhile".to_vec(), true));
    server.resume();
    for (i, r) in readers.into_iter().enumerate() {
        assert!(r.join().unwrap() == blocks[i], "cold block {i}");
    }
    m.unmount();
}

#[test]
fn a_new_node_with_an_empty_cache_dir_rebuilds_the_tree_from_the_bucket() {
    let Some(ep) = endpoint() else { return };
    let prefix = unique_prefix("restore");
    let args = s3_args(&ep, &prefix, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Mount::start_with(&args);
    let mut expected = Vec::new();
    for ns in ["llama", "qwen", "mistral"] {
        for d in 0..7 {
            fs::create_dir_all(a.path(&format!("{ns}/layer{d}"))).unwrap();
            for i in 0..100 {
                let rel = format!("{ns}/layer{d}/block-{i:03}.bin");
                let data = format!("{rel} {}", "x".repeat(i * 7)).into_bytes();
                fs::write(a.path(&rel), &data).unwrap();
                expected.push((rel, data));
            }
        }
    }
    fs::create_dir(a.path("qwen/empty-dir")).unwrap();
    std::os::unix::fs::symlink("../llama/layer0/block-000.bin", a.path("qwen/alias")).unwrap();
    fs::hard_link(a.path("llama/layer1/block-001.bin"), a.path("mistral/hard.bin")).unwrap();
    let big: Vec<u8> = (0..(5u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
    fs::write(a.path("llama/big.bin"), &big).unwrap();
    a.unmount(); // drains uploads, then writes the tree snapshot

    let b = Mount::start_with(&args); // another cache dir, same bucket prefix
    assert!(b.log().contains("restoring the tree"), "{}", b.log());
    assert_eq!(expected.len(), 2100);
    for (rel, data) in &expected {
        assert_eq!(fs::metadata(b.path(rel)).unwrap().len(), data.len() as u64, "{rel}");
    }
    for (rel, data) in expected.iter().step_by(97) {
        assert_eq!(&fs::read(b.path(rel)).unwrap(), data, "{rel}");
    }
    assert!(fs::read(b.path("llama/big.bin")).unwrap() == big);
    assert!(fs::read_dir(b.path("qwen/empty-dir")).unwrap().next().is_none());
    assert_eq!(fs::read_link(b.path("qwen/alias")).unwrap(), std::path::Path::new("../llama/layer0/block-000.bin"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(b.path("mistral/hard.bin")).unwrap().nlink(), 2);
    assert_eq!(fs::read_dir(b.path("llama/layer3")).unwrap().count(), 100);
}

#[test]
fn periodic_snapshots_let_a_new_node_recover_after_a_crash() {
    let Some(ep) = endpoint() else { return };
    let prefix = unique_prefix("periodic");
    let args = s3_args(&ep, &prefix, &["--snapshot-interval", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Mount::start_with(&args);
    fs::create_dir_all(a.path("ns/d")).unwrap();
    for i in 0..50 {
        fs::write(a.path(&format!("ns/d/f{i}")), format!("block {i}")).unwrap();
    }
    let t = std::time::Instant::now();
    while !a.log().contains("tree snapshot written") {
        assert!(t.elapsed().as_secs() < 20, "no periodic snapshot:\n{}", a.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    a.kill9(); // no clean unmount: only the periodic snapshot can help the next node
    let b = Mount::start_with(&args);
    for i in 0..50 {
        assert_eq!(fs::read_to_string(b.path(&format!("ns/d/f{i}"))).unwrap(), format!("block {i}"));
    }
}

/// Wait until `f` holds, at most `limit`; returns how long it took.
fn within(limit: std::time::Duration, what: &str, mut f: impl FnMut() -> bool) -> std::time::Duration {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    t.elapsed()
}

#[test]
fn two_daemons_one_bucket_see_each_others_changes() {
    let Some(ep) = endpoint() else { return };
    let prefix = unique_prefix("two");
    let args = s3_args(&ep, &prefix, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = Mount::start_with(&args);
    let b = Mount::start_with(&args);
    let ten = std::time::Duration::from_secs(10);
    // B looks first: the kernel caches a negative entry that A's create must invalidate
    assert!(fs::metadata(b.path("ns")).is_err());
    fs::create_dir_all(a.path("ns/layer0")).unwrap();
    let block: Vec<u8> = (0..(6u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    fs::write(a.path("ns/layer0/blk0"), &block).unwrap();
    let took = within(ten, "A's file on B", || fs::metadata(b.path("ns/layer0/blk0")).is_ok());
    eprintln!("create on A visible on B after {took:?}");
    assert_eq!(fs::read(b.path("ns/layer0/blk0")).unwrap(), block, "B reads A's bytes");

    // unlink on B: gone on A (its kernel entry cache too)
    assert!(fs::metadata(a.path("ns/layer0/blk0")).is_ok());
    fs::remove_file(b.path("ns/layer0/blk0")).unwrap();
    let took = within(ten, "B's unlink on A", || fs::metadata(a.path("ns/layer0/blk0")).is_err());
    eprintln!("unlink on B visible on A after {took:?}");
    assert!(fs::read_dir(a.path("ns/layer0")).unwrap().next().is_none());

    // rename on A (write to a temp name, rename into place, as SGLang does)
    fs::write(a.path("ns/.tmp-1"), b"final bytes").unwrap();
    fs::rename(a.path("ns/.tmp-1"), a.path("ns/final")).unwrap();
    within(ten, "A's rename on B", || fs::read(b.path("ns/final")).map(|d| d == b"final bytes").unwrap_or(false));
    assert!(fs::metadata(b.path("ns/.tmp-1")).is_err());

    // rewrite on B: A's cached pages of the old content must not be served
    fs::write(b.path("ns/final"), b"rewritten on B").unwrap();
    within(ten, "B's rewrite on A", || fs::read(a.path("ns/final")).map(|d| d == b"rewritten on B").unwrap_or(false));

    // dedup across nodes: the same block written on both is one object in the bucket
    let shared = vec![0x5au8; 3 << 20];
    fs::write(a.path("ns/dup-a"), &shared).unwrap();
    fs::write(b.path("ns/dup-b"), &shared).unwrap();
    within(ten, "both copies everywhere", || fs::metadata(a.path("ns/dup-b")).is_ok() && fs::metadata(b.path("ns/dup-a")).is_ok());
    let id = wombatfs::blob::BlobId::of(&shared);
    let store = common::s3::store(&ep, &prefix);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let blobs = rt.block_on(wombatfs::tiers::ObjectStore::list_blobs(&store)).unwrap();
    assert_eq!(blobs.iter().filter(|b| **b == id).count(), 1);
    drop((a, b));
}

#[test]
fn sync_mode_survives_losing_the_node() {
    let Some(ep) = endpoint() else { return };
    let prefix = unique_prefix("loss");
    let args = s3_args(&ep, &prefix, &["--upload", "sync", "--snapshot-interval", "0"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Mount::start_with(&args);
    fs::create_dir(a.path("ns")).unwrap();
    for i in 0..20 {
        fs::write(a.path(&format!("ns/blk{i}")), format!("block {i}").repeat(1000)).unwrap();
    }
    // the node is lost the moment close() returned: no unmount, no snapshot, no cache dir
    a.kill9();
    common::mount::lazy_unmount(&a.mnt);
    fs::remove_dir_all(&a.cache).unwrap();
    let c = Mount::start_with(&args);
    for i in 0..20 {
        assert_eq!(fs::read(c.path(&format!("ns/blk{i}"))).unwrap(), format!("block {i}").repeat(1000).into_bytes());
    }
}

#[test]
fn gc_command_collects_what_no_name_refers_to() {
    let Some(ep) = endpoint() else { return };
    let prefix = unique_prefix("gc");
    let args = s3_args(&ep, &prefix, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Mount::start_with(&args);
    fs::create_dir(a.path("ns")).unwrap();
    fs::write(a.path("ns/old"), b"an old block").unwrap();
    fs::write(a.path("ns/kept"), b"a kept block").unwrap();
    a.unmount(); // both uploaded, snapshot written
    a.mount();
    fs::remove_file(a.path("ns/old")).unwrap();
    a.unmount(); // the new snapshot no longer names it
    let gc = |extra: &[&str]| {
        let out = std::process::Command::new(common::mount::bin())
            .args(["gc", "--store", &format!("s3://{}/{prefix}", common::s3::BUCKET), "--s3-endpoint", &ep, "--s3-path-style"])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = gc(&["--grace", "3600"]);
    assert!(first.contains("1 unreferenced within the 3600 s grace period, deleted 0"), "{first}");
    let dry = gc(&["--grace", "0", "--dry-run"]);
    assert!(dry.contains("would delete 1"), "{dry}");
    let real = gc(&["--grace", "0"]);
    assert!(real.contains("deleted 1"), "{real}");
    let store = common::s3::store(&ep, &prefix);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let blobs = rt.block_on(wombatfs::tiers::ObjectStore::list_blobs(&store)).unwrap();
    assert!(!blobs.contains(&wombatfs::blob::BlobId::of(b"an old block")));
    assert!(blobs.contains(&wombatfs::blob::BlobId::of(b"a kept block")));
    // the kept file still comes back on a node that has nothing local
    fs::remove_dir_all(&a.cache).unwrap();
    a.mount();
    assert_eq!(fs::read(a.path("ns/kept")).unwrap(), b"a kept block");
    assert!(fs::metadata(a.path("ns/old")).is_err());
    a.unmount();
}

#[test]
fn a_killed_daemon_with_a_full_upload_queue_drains_it_after_restart() {
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let args = s3_args(&server.endpoint, "killq", &["--snapshot-interval", "0"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Mount::start_with(&args);
    fs::create_dir(a.path("ns")).unwrap();
    server.stop();
    let blocks: Vec<Vec<u8>> = (0..12u32).map(|i| (0..(300_000 + i * 1000)).map(|j| (j ^ i) as u8).collect()).collect();
    for (i, b) in blocks.iter().enumerate() {
        fs::write(a.path(&format!("ns/blk{i}")), b).unwrap(); // async: close returns at the local seal
    }
    a.kill9();
    common::mount::lazy_unmount(&a.mnt);
    server.restart();
    a.mount(); // the persisted queue and outbox resume
    a.unmount(); // a clean unmount waits for both
    // a node with nothing local gets every block from the bucket
    let b = Mount::start_with(&args);
    for (i, want) in blocks.iter().enumerate() {
        assert_eq!(&fs::read(b.path(&format!("ns/blk{i}"))).unwrap(), want, "blk{i}");
    }
    drop(b);
    server.stop();
}

/// Regression (issue 13.1): on a fresh node a file another node wrote is only in the bucket;
/// `open(O_RDWR)` + `pwrite` of 1 KiB in the middle + `close` used to fail with EIO for random
/// data over 1 MiB (envelope version 2). Random and compressible data.
#[test]
fn in_place_write_on_a_fresh_node_of_a_file_only_in_the_bucket() {
    use std::os::unix::fs::FileExt;
    let Some(ep) = endpoint() else { return };
    let args = s3_args(&ep, &unique_prefix("inplace"), &["--upload", "sync"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Mount::start_with(&args);
    fs::create_dir(a.path("ns")).unwrap();
    let files = [("random", common::random_bytes(4 << 20, 1)), ("text", common::compressible_bytes(4 << 20, 2))];
    for (name, data) in &files {
        fs::write(a.path(&format!("ns/{name}")), data).unwrap();
    }
    a.unmount();
    let b = Mount::start_with(&args); // another cache dir: nothing local
    let patch = common::random_bytes(1024, 3);
    for (name, data) in &files {
        let p = b.path(&format!("ns/{name}"));
        let f = fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
        f.write_all_at(&patch, 2 << 20).unwrap();
        f.sync_all().unwrap_or_else(|e| panic!("{name}: fsync {e}"));
        drop(f);
        let mut want = data.clone();
        want[2 << 20..(2 << 20) + 1024].copy_from_slice(&patch);
        assert!(fs::read(&p).unwrap() == want, "{name}: rewritten in place");
    }
    drop(b);
}

/// `--store-timeout`: with the object store frozen (SIGSTOP: connections open, nothing
/// answers), a cold read and a `sync` close fail with EIO within the bound instead of hanging,
/// while local data, lookups and creates keep working; after the thaw the same read succeeds.
#[test]
fn a_frozen_object_store_fails_cold_reads_and_sync_closes_in_time() {
    use std::time::{Duration, Instant};
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let args = s3_args(&server.endpoint, "frozen", &["--store-timeout", "2", "--upload", "sync"]);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    let cold = common::random_bytes(3 << 20, 7);
    fs::write(m.path("ns/cold"), &cold).unwrap();
    m.unmount();
    fs::remove_dir_all(m.cache.join("flat")).unwrap();
    m.mount();
    fs::metadata(m.path("ns/cold")).unwrap(); // looked up while the server answers
    fs::write(m.path("ns/local"), b"local bytes").unwrap();
    server.pause();
    let bound = Duration::from_secs(15);
    let t = Instant::now();
    let err = fs::read(m.path("ns/cold")).unwrap_err();
    eprintln!("cold read failed after {:?}: {err}", t.elapsed());
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(t.elapsed() < bound, "bounded: {:?}", t.elapsed());
    // what is local goes on
    assert_eq!(fs::read(m.path("ns/local")).unwrap(), b"local bytes");
    assert!(fs::metadata(m.path("ns/never-there")).is_err());
    fs::create_dir(m.path("ns/newdir")).unwrap();
    // a sync close needs the store: EIO in time, the written bytes stay staged
    let t = Instant::now();
    let mut f = File::create(m.path("ns/during")).unwrap();
    f.write_all(b"written during the freeze").unwrap();
    let err = f.sync_all().unwrap_err();
    eprintln!("sync close failed after {:?}: {err}", t.elapsed());
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(t.elapsed() < bound, "bounded: {:?}", t.elapsed());
    server.resume();
    f.sync_all().unwrap();
    drop(f);
    assert!(fs::read(m.path("ns/cold")).unwrap() == cold, "read again after the thaw");
    assert_eq!(fs::read(m.path("ns/during")).unwrap(), b"written during the freeze");
    let stats = std::process::Command::new("getfattr").args(["--only-values", "-n", "user.wombatfs.stats"]).arg(&m.mnt).output().unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    let timeouts: u64 = stats.split_whitespace().find_map(|l| l.strip_prefix("object_store_timeouts=")).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(timeouts >= 1, "the timed-out cold read is counted: {stats}");
    m.unmount();
}

/// A working set larger than the flat tier but smaller than foyer stays local: read cold from
/// the object store by several readers at once (each download is admitted into foyer, a burst
/// of admissions), it is then read back byte-exact with the object store frozen. foyer's disk
/// engine silently drops insertions it cannot queue; this lost blobs before admission waited.
#[test]
fn a_working_set_that_fits_in_foyer_is_served_with_the_store_frozen() {
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let extra = ["--flat-size", "64MiB", "--foyer-memory", "8MiB", "--foyer-disk", "1GiB", "--store-timeout", "5"];
    let args = s3_args(&server.endpoint, "fits", &extra);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(m.path("ns")).unwrap();
    // blobs of 64 MiB: one admission alone is more than foyer's submit queue takes at once
    let n = 6;
    let data = |i: usize| common::random_bytes(64 << 20, 100 + i as u64);
    for i in 0..n {
        fs::write(m.path(&format!("ns/{i}")), data(i)).unwrap();
    }
    m.unmount(); // drains the uploads
    fs::remove_dir_all(m.cache.join("flat")).unwrap();
    fs::remove_dir_all(m.cache.join("foyer")).unwrap();
    m.mount();
    let read_all = |m: &Mount| -> Vec<usize> {
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..3)
                .map(|r| s.spawn(move || (r..n).step_by(3).filter(|i| fs::read(m.path(&format!("ns/{i}"))).ok() != Some(data(*i))).collect::<Vec<_>>()))
                .collect();
            readers.into_iter().flat_map(|h| h.join().unwrap()).collect()
        })
    };
    let failed = read_all(&m);
    assert!(failed.is_empty(), "first pass, from the object store, failed for {failed:?}\n{}", m.log());
    server.pause();
    let lost = read_all(&m);
    server.resume();
    assert!(lost.is_empty(), "read back with the store frozen failed for {lost:?}\n{}", m.log());
    m.unmount();
}

/// A stream of `--upload sync` closes: each close waits for its own journal batch, the
/// batches' feed markers go out gathered (a reader catches up from one marker by listing the
/// journal), and another node still sees every file within the poll interval.
#[test]
fn a_stream_of_sync_closes_shares_feed_markers_and_stays_visible() {
    let Some(ep) = endpoint() else { return };
    let prefix = unique_prefix("markers");
    let sync = s3_args(&ep, &prefix, &["--upload", "sync"]);
    let plain = s3_args(&ep, &prefix, &[]);
    let a = Mount::start_with(&sync.iter().map(String::as_str).collect::<Vec<_>>());
    let b = Mount::start_with(&plain.iter().map(String::as_str).collect::<Vec<_>>());
    fs::create_dir(a.path("ns")).unwrap();
    within(std::time::Duration::from_secs(10), "the namespace on B", || fs::metadata(b.path("ns")).is_ok());
    let files = 80;
    for i in 0..files {
        fs::write(a.path(&format!("ns/f{i}")), format!("block {i}").repeat(100)).unwrap();
    }
    within(std::time::Duration::from_secs(10), "every file on B", || (0..files).all(|i| fs::metadata(b.path(&format!("ns/f{i}"))).is_ok()));
    for i in 0..files {
        assert_eq!(fs::read(b.path(&format!("ns/f{i}"))).unwrap(), format!("block {i}").repeat(100).into_bytes());
    }
    let store = common::s3::store(&ep, &prefix);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let node_a = fs::read_to_string(a.cache.join("node-id")).unwrap();
    let markers = rt.block_on(wombatfs::tiers::ObjectStore::list_meta_after(&store, wombatfs::sync::feed::FEED, "")).unwrap();
    let of_a = markers.iter().filter(|k| k.contains(&format!("-{}-", node_a.trim()))).count();
    let batches = rt.block_on(wombatfs::tiers::ObjectStore::list_meta_after(&store, &wombatfs::sync::change::journal_dir(node_a.trim()), "")).unwrap().len();
    eprintln!("{files} sync closes: {batches} journal batches, {of_a} feed markers of the writer");
    assert!(batches >= files / 2, "sync closes are not held back to share batches: {batches}");
    assert!(of_a >= 1 && of_a * 2 < batches, "markers are gathered: {of_a} for {batches} batches");
    drop((a, b));
}
