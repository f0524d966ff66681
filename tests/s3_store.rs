//! The S3 object store against a real S3-compatible server (SeaweedFS), no FUSE.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::s3::{config, endpoint, store, unique_prefix, PrivateServer};
use futures::stream::{self, StreamExt};
use wombatfs::blob::BlobId;
use wombatfs::codec::{self, Compression};
use wombatfs::store::BlobStore;
use wombatfs::tiers::s3::S3Store;
use wombatfs::tiers::{ObjectStore, StoreError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn put_get_has_delete_small_large_and_compressible() {
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let s = store(&ep, &unique_prefix("rt"));
    rt.block_on(async {
        s.check().await.unwrap();
        for (i, data) in [b"tiny".to_vec(), vec![7u8; 5 << 20], common::random_bytes(40 << 20, 1)].into_iter().enumerate() {
            let id = BlobId::of(&data);
            let src = dir.path().join(format!("src{i}"));
            std::fs::write(&src, &data).unwrap();
            assert!(!s.has_blob(&id).await.unwrap());
            s.put_blob(&id, &src).await.unwrap();
            s.put_blob(&id, &src).await.unwrap(); // idempotent
            assert!(s.has_blob(&id).await.unwrap());
            let dst = dir.path().join(format!("dst{i}"));
            assert_eq!(s.get_blob(&id, &dst).await.unwrap(), data.len() as u64);
            assert!(std::fs::read(&dst).unwrap() == data, "blob {i} round trip");
        }
        let ids = s.list_blobs().await.unwrap();
        assert_eq!(ids.len(), 3);
        for id in ids {
            s.delete_blob(&id).await.unwrap();
            assert!(!s.has_blob(&id).await.unwrap());
            s.delete_blob(&id).await.unwrap(); // absent is fine
        }
    });
}

#[test]
fn listing_pages_past_1000_keys() {
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(&ep, &unique_prefix("list")));
    let n = 1100u32;
    rt.block_on(async {
        stream::iter(0..n)
            .for_each_concurrent(16, |i| {
                let s = s.clone();
                let p = dir.path().join(format!("b{i}"));
                async move {
                    let data = i.to_le_bytes();
                    std::fs::write(&p, data).unwrap();
                    s.put_blob(&BlobId::of(&data), &p).await.unwrap();
                }
            })
            .await;
        assert_eq!(s.list_blobs().await.unwrap().len(), n as usize);
    });
}

#[test]
fn corrupt_objects_are_detected_never_served() {
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let s = store(&ep, &unique_prefix("corrupt"));
    rt.block_on(async {
        for (i, data) in [common::random_bytes(100_000, 2), common::random_bytes(20 << 20, 3), vec![1u8; 100_000]].into_iter().enumerate() {
            let id = BlobId::of(&data);
            let mut env = codec::encode(&data, Compression::Auto(1));
            let at = env.len() - 10;
            env[at] ^= 0x55;
            s.put_raw(&s.key(&id), &env).await.unwrap();
            let dst = dir.path().join(format!("d{i}"));
            let err = s.get_blob(&id, &dst).await.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
            assert!(!dst.exists() || std::fs::read(&dst).unwrap() != data);
        }
        let id = BlobId::of(b"x");
        s.put_raw(&s.key(&id), b"not an envelope").await.unwrap();
        assert!(matches!(s.get_blob(&id, &dir.path().join("e")).await, Err(StoreError::Corrupt { .. })));
        assert!(matches!(s.get_blob(&BlobId::of(b"absent"), &dir.path().join("f")).await, Err(StoreError::NotFound(_))));
    });
}

#[test]
fn startup_check_names_the_problem_and_never_the_secret() {
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let mut cfg = config(&ep, "p");
    cfg.bucket = "no-such-bucket-wombat".into();
    cfg.secret_key = Some("SECRET-DO-NOT-LOG".into());
    let s = S3Store::new(&cfg).unwrap();
    let err = rt.block_on(s.check()).unwrap_err().to_string();
    assert!(err.contains("no-such-bucket-wombat"), "{err}");
    assert!(!err.contains("SECRET-DO-NOT-LOG"), "{err}");
    assert!(!format!("{cfg:?}").contains("SECRET-DO-NOT-LOG"));
    let dead = S3Store::new(&config("http://127.0.0.1:9", "p")).unwrap();
    let err = rt.block_on(dead.check()).unwrap_err().to_string();
    assert!(err.contains("not writable"), "{err}");
}

#[test]
fn upload_queue_survives_an_outage_and_drains_after_restart() {
    if endpoint().is_none() {
        return;
    }
    let server = PrivateServer::start();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(store(&server.endpoint, "outage"));
    let bs = BlobStore::open(dir.path(), objects.clone(), rt.handle()).unwrap();
    let data = common::random_bytes(3 << 20, 9);
    let id = BlobId::of(&data);
    let (mut f, p) = bs.new_staging().unwrap();
    std::io::Write::write_all(&mut f, &data).unwrap();
    bs.adopt(&p, &id).unwrap();
    server.stop();
    bs.enqueue_upload(id);
    std::thread::sleep(Duration::from_secs(2));
    assert!(bs.upload_stats().failures.load(Ordering::Relaxed) >= 1, "uploads failed while the server was down");
    assert_eq!(bs.upload_stats().pending.load(Ordering::Relaxed), 1);
    server.restart();
    assert!(bs.drain(Duration::from_secs(90)), "queue drained after the restart");
    assert!(rt.block_on(objects.has_blob(&id)).unwrap());
    // and the bytes in the bucket are the blob's
    bs.flat().remove(&id).unwrap();
    assert_eq!(bs.get(&id).unwrap(), data);
}

#[test]
fn cold_blobs_stream_verified_chunks_and_never_a_corrupt_one() {
    use std::os::unix::fs::FileExt;
    use wombatfs::proof::CHUNK;
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(store(&ep, &unique_prefix("stream")));
    let bs = BlobStore::open(dir.path(), objects.clone(), rt.handle()).unwrap();
    let data = common::random_bytes((20 << 20) + 333, 5);
    let id = BlobId::of(&data);
    // a good blob: every chunk arrives verified, then the blob is promoted into the flat tier
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    rt.block_on(objects.put_blob(&id, &src)).unwrap();
    let r = bs.open_reader(&id, data.len() as u64).unwrap();
    r.wait(0, data.len() as u64).unwrap();
    let mut back = vec![0u8; data.len()];
    r.file().read_exact_at(&mut back, 0).unwrap();
    assert!(back == data);
    let t = std::time::Instant::now();
    while !bs.flat().contains(&id) {
        assert!(t.elapsed().as_secs() < 10, "promoted into the flat tier");
        std::thread::sleep(Duration::from_millis(10));
    }
    // a blob with one corrupted byte in chunk 5: chunks before it are served, chunk 5 never
    let other = common::random_bytes((20 << 20) + 333, 6);
    let oid = BlobId::of(&other);
    let mut env = codec::encode(&other, Compression::None);
    let payload_at = env.len() - other.len();
    env[payload_at + 5 * CHUNK as usize + 17] ^= 0x40;
    rt.block_on(objects.put_raw(&objects.key(&oid), &env)).unwrap();
    let r = bs.open_reader(&oid, other.len() as u64).unwrap();
    r.wait(0, CHUNK).unwrap();
    let mut first = vec![0u8; CHUNK as usize];
    r.file().read_exact_at(&mut first, 0).unwrap();
    assert!(first[..] == other[..CHUNK as usize]);
    assert!(r.wait(5 * CHUNK, 1).is_err(), "the corrupted chunk is never readable");
    assert!(!bs.flat().contains(&oid));
}

/// Regression (issue 13.1): the whole-blob download accepted only envelope version 1, so a
/// copy-on-write or library `get` of a raw blob over 1 MiB (version 2) failed with EIO. Every
/// read path, over random and compressible data of every boundary size.
#[test]
fn every_read_path_decodes_every_envelope_at_every_boundary_size() {
    use std::os::unix::fs::FileExt;
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(store(&ep, &unique_prefix("paths")));
    let foyer = rt.block_on(wombatfs::tiers::foyer::FoyerTier::open(&dir.path().join("foyer"), 16 << 20, 512 << 20)).unwrap();
    let opts = wombatfs::store::StoreOptions { foyer: Some(Arc::new(foyer)), ..Default::default() };
    let bs = BlobStore::open_with(dir.path(), objects.clone(), rt.handle(), opts).unwrap();
    for (name, data) in common::boundary_blobs() {
        let id = BlobId::of(&data);
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        rt.block_on(objects.put_blob(&id, &src)).unwrap();
        // the whole-blob download (copy-on-write and library reads of a flat miss)
        let whole = dir.path().join("whole");
        let _ = std::fs::remove_file(&whole);
        assert_eq!(rt.block_on(objects.get_blob(&id, &whole)).unwrap(), data.len() as u64, "{name}: get_blob");
        assert!(std::fs::read(&whole).unwrap() == data, "{name}: get_blob bytes");
        // the library API: a flat miss goes to the object store and is promoted
        assert!(bs.get(&id).unwrap() == data, "{name}: library get");
        assert_eq!(bs.tier_of(&id), "flat", "{name}: promoted");
        // the streamed cold read (a FUSE read of a flat miss)
        bs.flat().remove(&id).unwrap();
        let r = bs.open_reader(&id, data.len() as u64).unwrap();
        r.wait(0, data.len() as u64).unwrap();
        let mut back = vec![0u8; data.len()];
        r.file().read_exact_at(&mut back, 0).unwrap();
        assert!(back == data, "{name}: streamed read");
        drop(r);
        // foyer is the flat tier's victim cache: a fetch is only promoted into the flat tier,
        // and an eviction copies the blob into foyer; a flat miss is then served from foyer
        let t = std::time::Instant::now();
        while !bs.flat().contains(&id) {
            assert!(t.elapsed().as_secs() < 20, "{name}: promoted");
            std::thread::sleep(Duration::from_millis(10));
        }
        if !data.is_empty() {
            assert!(!bs.foyer().unwrap().contains(&id), "{name}: not admitted into foyer on a fetch");
            bs.flat().set_limit(0);
            assert!(bs.eviction().evict_now() >= 1, "{name}: evicted");
            bs.flat().set_limit(u64::MAX);
            assert!(!bs.flat().contains(&id) && bs.foyer().unwrap().contains(&id), "{name}: evicted into foyer");
        }
        let _ = bs.flat().remove(&id);
        let gets = bs.read_path().object_gets.load(Ordering::Relaxed);
        assert!(bs.get(&id).unwrap() == data, "{name}: read back from foyer");
        assert_eq!(bs.read_path().object_gets.load(Ordering::Relaxed), gets, "{name}: served by foyer");
    }
}

/// The same through the filesystem core on two nodes: a fresh node (empty cache dir) learns
/// another node's files from the bucket, reads them (flat miss) and rewrites 1 KiB in the
/// middle of each in place (copy-on-write of a blob that is only in the bucket).
#[test]
fn a_fresh_node_reads_and_rewrites_in_place_what_another_node_wrote() {
    let Some(ep) = endpoint() else { return };
    let objects: Arc<dyn ObjectStore> = Arc::new(store(&ep, &unique_prefix("cow")));
    let a = common::Fixture::node(objects.clone());
    a.mkdir_p("ns");
    let blobs = common::boundary_blobs();
    for (name, data) in &blobs {
        a.write_file(&format!("ns/{name}"), data).unwrap();
    }
    a.publish();
    let reader = common::Fixture::node(objects.clone());
    reader.poll();
    let writer = common::Fixture::node(objects.clone());
    writer.poll();
    for (name, data) in &blobs {
        let path = format!("ns/{name}");
        assert!(reader.read_file(&path).unwrap() == *data, "{name}: flat-miss read on a fresh node");
        let patch = common::random_bytes(1024, 99);
        let at = data.len() / 2;
        writer.pwrite(&path, at as u64, &patch).unwrap_or_else(|e| panic!("{name}: in-place write failed with errno {e}"));
        let mut want = data.clone();
        want.resize(want.len().max(at + patch.len()), 0);
        want[at..at + patch.len()].copy_from_slice(&patch);
        assert!(writer.read_file(&path).unwrap() == want, "{name}: rewritten bytes");
    }
}

/// Errors keep their kind from the real server: a refusal (SeaweedFS answers a PUT into a
/// bucket that does not exist with 403 AccessDenied) is not retried; a connection failure
/// is, a bounded number of times.
#[test]
fn refusals_are_not_retried_and_network_failures_are() {
    use std::sync::atomic::Ordering;
    use wombatfs::tiers::RemoteKind;
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob");
    let data = common::random_bytes(100 << 10, 9);
    std::fs::write(&src, &data).unwrap();
    let id = wombatfs::blob::BlobId::of(&data);
    let mut cfg = config(&ep, "kinds");
    cfg.bucket = "no-such-bucket-wombat".into();
    let missing = S3Store::new(&cfg).unwrap();
    let err = rt.block_on(missing.put_blob(&id, &src)).unwrap_err();
    assert_eq!(err.remote_kind(), Some(RemoteKind::Auth), "{err}");
    assert!(!err.is_transient());
    assert_eq!(missing.puts.load(Ordering::Relaxed), 1, "not retried: {err}");
    let dead = S3Store::new(&config("http://127.0.0.1:9", "kinds")).unwrap();
    let err = rt.block_on(dead.put_meta("x", b"y".to_vec())).unwrap_err();
    assert_eq!(err.remote_kind(), Some(RemoteKind::Network), "{err}");
    assert!(err.is_transient());
    assert_eq!(dead.puts.load(Ordering::Relaxed), 4, "retried: {err}");
    // a missing object is not-found, from every read call
    let good = store(&ep, &unique_prefix("kinds"));
    assert!(rt.block_on(good.get_blob(&id, &dir.path().join("out"))).unwrap_err().is_missing());
    assert!(rt.block_on(good.get_meta("nodes/none")).unwrap_err().is_missing());
}
