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

fn incompressible(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 17) as u8).collect()
}

#[test]
fn put_get_has_delete_small_large_and_compressible() {
    let Some(ep) = endpoint() else { return };
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let s = store(&ep, &unique_prefix("rt"));
    rt.block_on(async {
        s.check().await.unwrap();
        for (i, data) in [b"tiny".to_vec(), vec![7u8; 5 << 20], incompressible(40 << 20, 1)].into_iter().enumerate() {
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
        for (i, data) in [incompressible(100_000, 2), incompressible(20 << 20, 3), vec![1u8; 100_000]].into_iter().enumerate() {
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
    let remote = Arc::new(store(&server.endpoint, "outage"));
    let bs = BlobStore::open(dir.path(), remote.clone(), rt.handle()).unwrap();
    let data = incompressible(3 << 20, 9);
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
    assert!(rt.block_on(remote.has_blob(&id)).unwrap());
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
    let remote = Arc::new(store(&ep, &unique_prefix("stream")));
    let bs = BlobStore::open(dir.path(), remote.clone(), rt.handle()).unwrap();
    let data = incompressible((20 << 20) + 333, 5);
    let id = BlobId::of(&data);
    // a good blob: every chunk arrives verified, then the blob is promoted into the flat tier
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    rt.block_on(remote.put_blob(&id, &src)).unwrap();
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
    let other = incompressible((20 << 20) + 333, 6);
    let oid = BlobId::of(&other);
    let mut env = codec::encode(&other, Compression::None);
    let payload_at = env.len() - other.len();
    env[payload_at + 5 * CHUNK as usize + 17] ^= 0x40;
    rt.block_on(remote.put_raw(&remote.key(&oid), &env)).unwrap();
    let r = bs.open_reader(&oid, other.len() as u64).unwrap();
    r.wait(0, CHUNK).unwrap();
    let mut first = vec![0u8; CHUNK as usize];
    r.file().read_exact_at(&mut first, 0).unwrap();
    assert!(first[..] == other[..CHUNK as usize]);
    assert!(r.wait(5 * CHUNK, 1).is_err(), "the corrupted chunk is never readable");
    assert!(!bs.flat().contains(&oid));
}
