//! The embedded key-value API (`wombatfs::kv::Kv`): a node opened as a library, by
//! `(namespace, key)`; with a bucket, its keys are files on the mounts of that bucket and
//! theirs are keys here.

mod common;

use std::time::{Duration, Instant};

use common::mount::Mount;
use wombatfs::kv::Kv;

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keys_put_get_list_delete_and_survive_a_reopen() {
    let dir = tempfile::Builder::new().prefix("wombat-kv-").tempdir().unwrap();
    let cache = dir.path().join("cache");
    let random = common::random_bytes(3 << 20, 5);
    let compressible = vec![b'k'; (1 << 20) + 1];
    {
        let kv = Kv::open(&cache, None, &["--metrics-addr", "off"]).unwrap();
        kv.put("llama", "block-0", &random).unwrap();
        kv.put("llama", "block-1", &compressible).unwrap();
        kv.put("llama", "tp0/block-2", b"nested").unwrap();
        kv.put("llama", "block-1", b"replaced").unwrap();
        kv.put("qwen", "empty", b"").unwrap();
        assert!(kv.get("llama", "block-0").unwrap().unwrap() == random);
        assert_eq!(kv.get("llama", "block-1").unwrap().unwrap(), b"replaced");
        assert_eq!(kv.get("llama", "tp0/block-2").unwrap().unwrap(), b"nested");
        assert_eq!(kv.get("qwen", "empty").unwrap().unwrap(), b"");
        assert_eq!(kv.get("llama", "missing").unwrap(), None);
        assert_eq!(kv.get("nowhere", "x").unwrap(), None);
        assert!(kv.exists("llama", "block-0").unwrap() && !kv.exists("llama", "block-9").unwrap());
        assert_eq!(kv.list("llama").unwrap(), ["block-0", "block-1", "tp0/block-2"]);
        assert_eq!(kv.list("nowhere").unwrap(), Vec::<String>::new());
        // the chain stops at the first block not stored
        assert_eq!(kv.longest_cached_prefix("llama", &["block-0", "block-1", "block-7", "tp0/block-2"]), 2);
        assert_eq!(kv.longest_cached_prefix("llama", &[]), 0);
        assert_eq!(kv.prefetch("llama", &["block-0", "block-7"]), 1, "only existing keys are scheduled");
        assert!(kv.delete("llama", "block-1").unwrap());
        assert!(!kv.delete("llama", "block-1").unwrap(), "a second delete finds nothing");
        // bad names: the errno a mount would give, nothing stored
        assert_eq!(kv.put("llama", "..", b"x").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(kv.put("llama", &"n".repeat(300), b"x").unwrap_err().errno(), libc::ENAMETOOLONG);
        assert_eq!(kv.put("llama", "block-0/under-a-file", b"x").unwrap_err().errno(), libc::ENOTDIR);
        // one node per cache dir: a second open is refused while the first holds it
        let err = Kv::open(&cache, None, &["--metrics-addr", "off"]).err().expect("refused").to_string();
        assert!(err.contains("in use"), "{err}");
        // bad flags are refused as for a mount
        assert!(Kv::open(dir.path().join("other"), None, &["--upload", "later"]).is_err());
        kv.close().unwrap();
    }
    let kv = Kv::open(&cache, None, &["--metrics-addr", "off"]).unwrap();
    assert!(kv.get("llama", "block-0").unwrap().unwrap() == random, "after a reopen");
    assert_eq!(kv.list("llama").unwrap(), ["block-0", "tp0/block-2"]);
    assert_eq!(kv.list("qwen").unwrap(), ["empty"]);
}

/// A mount and a library node on one bucket (two cache dirs, as two machines would have):
/// a fresh library node restores the mount's tree; afterwards each sees the other's writes
/// through the change journal; a prefetched key is then read with the object store frozen.
#[test]
fn library_keys_are_files_on_a_mount_of_the_same_bucket_and_back() {
    if common::s3::endpoint().is_none() {
        return;
    }
    let server = common::s3::PrivateServer::start();
    let prefix = common::s3::unique_prefix("kv");
    let poll = ["--poll-interval-ms", "200", "--snapshot-interval", "0", "--store-timeout", "3"];
    let args = common::s3::mount_args(&server.endpoint, &prefix, &poll);
    let mut m = Mount::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::create_dir(m.path("llama")).unwrap();
    let early = common::random_bytes(2 << 20, 31);
    std::fs::write(m.path("llama/early"), &early).unwrap();
    m.unmount(); // writes the tree snapshot a new node restores
    m.mount();
    let dir = tempfile::Builder::new().prefix("wombat-kv-").tempdir().unwrap();
    let store = format!("s3://{}/{prefix}", common::s3::BUCKET);
    let mut flags = vec!["--s3-endpoint", &server.endpoint, "--s3-path-style", "--metrics-addr", "off", "--flat-size", "64MiB"];
    flags.extend(poll);
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test-secret");
    let kv = Kv::open(dir.path().join("cache"), Some(&store), &flags).unwrap();
    assert!(kv.get("llama", "early").unwrap().unwrap() == early, "restored from the bucket");
    // library -> mount
    let block = common::random_bytes(4 << 20, 32);
    kv.put("llama", "from-library", &block).unwrap();
    wait_until("the library's key on the mount", || std::fs::read(m.path("llama/from-library")).ok().is_some_and(|b| b == block));
    // mount -> library
    let other = common::random_bytes(3 << 20, 33);
    std::fs::write(m.path("llama/from-mount"), &other).unwrap();
    wait_until("the mount's file in the library", || kv.exists("llama", "from-mount").unwrap());
    assert_eq!(kv.longest_cached_prefix("llama", &["early", "from-library", "from-mount", "later"]), 3);
    // prefetch into the local tiers, then read with the store frozen
    std::fs::write(m.path("llama/to-prefetch"), &block[..1 << 20]).unwrap();
    wait_until("the prefetch key in the library", || kv.exists("llama", "to-prefetch").unwrap());
    assert_eq!(kv.prefetch("llama", &["to-prefetch", "from-mount"]), 2);
    std::thread::sleep(Duration::from_secs(2));
    server.pause();
    let frozen = (kv.get("llama", "to-prefetch"), kv.get("llama", "from-mount"));
    server.resume();
    assert!(frozen.0.unwrap().unwrap() == block[..1 << 20], "prefetched key read with the store frozen");
    assert!(frozen.1.unwrap().unwrap() == other);
    // a delete through the mount reaches the library
    std::fs::remove_file(m.path("llama/early")).unwrap();
    wait_until("the mount's delete in the library", || !kv.exists("llama", "early").unwrap());
    kv.close().unwrap();
    m.unmount();
}

/// `wombatfs gc --forget-node`: the forgotten node's old cache dir is refused with the way
/// out, and a node on an empty cache dir serves what the bucket holds.
#[test]
fn a_node_the_collector_forgot_refuses_its_old_cache_dir() {
    let Some(ep) = common::s3::endpoint() else { return };
    let prefix = common::s3::unique_prefix("gone");
    let store = format!("s3://{}/{prefix}", common::s3::BUCKET);
    let flags = ["--s3-endpoint", &ep, "--s3-path-style", "--metrics-addr", "off", "--flat-size", "64MiB", "--upload", "sync"];
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test-secret");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::Builder::new().prefix("wombat-kv-").tempdir().unwrap()).collect();
    let block = common::random_bytes(1 << 20, 41);
    {
        let kv = Kv::open(dirs[0].path().join("cache"), Some(&store), &flags).unwrap();
        kv.put("llama", "block", &block).unwrap();
        let other = Kv::open(dirs[1].path().join("cache"), Some(&store), &flags).unwrap();
        wait_until("the block on the second node", || other.exists("llama", "block").unwrap());
    }
    let id = std::fs::read_to_string(dirs[0].path().join("cache/node-id")).unwrap();
    let gc = |extra: &[&str]| {
        let out = std::process::Command::new(common::mount::bin())
            .args(["gc", "--store", &store, "--s3-endpoint", &ep, "--s3-path-style"])
            .args(extra)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, out) = gc(&["--forget-node", "not-a-node"]);
    assert!(!ok && out.contains("no node not-a-node"), "{out}");
    let (ok, out) = gc(&["--forget-node", id.trim()]);
    assert!(ok && out.contains("recorded as gone") && out.contains(id.trim()), "{out}");
    let err = Kv::open(dirs[0].path().join("cache"), Some(&store), &flags).err().expect("the forgotten node's cache dir is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("recorded as gone") && msg.contains("empty cache dir"), "{msg}");
    let fresh = Kv::open(dirs[2].path().join("cache"), Some(&store), &flags).unwrap();
    assert!(fresh.get("llama", "block").unwrap().unwrap() == block, "a new node serves what the bucket holds");
}
