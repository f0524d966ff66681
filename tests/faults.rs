//! Every object-store call under injected faults (`tiers::faulty::FaultyStore`): errors of each
//! kind, hangs, slow answers and truncated bodies, through the nodes' real code paths. Random
//! (incompressible) and compressible data both.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{compressible_bytes, random_bytes, Fixture};
use wombatfs::store::StoreOptions;
use wombatfs::tiers::faulty::{Fault, FaultyStore, Op};
use wombatfs::tiers::memory::MemoryStore;
use wombatfs::blob::BlobId;
use wombatfs::tiers::{ObjectStore, RemoteKind, StoreError};

fn faulty() -> (Arc<MemoryStore>, Arc<FaultyStore>) {
    let mem = Arc::new(MemoryStore::new());
    let f = Arc::new(FaultyStore::new(mem.clone() as Arc<dyn ObjectStore>));
    (mem, f)
}

/// A `--upload sync` node on `s` with its publisher running, as the daemon runs it (a sync
/// close waits for its change in the journal); set the flag to stop the publisher.
fn sync_node(s: &Arc<FaultyStore>, timeout_secs: u64) -> (Fixture, Arc<std::sync::atomic::AtomicBool>) {
    let a = Fixture::node_with(s.clone(), StoreOptions { sync_uploads: true, ..bounded(timeout_secs) });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    a.block_on(async {
        tokio::spawn(a.core().namespace().clone().publish_loop(stop.clone()));
    });
    (a, stop)
}

fn bounded(secs: u64) -> StoreOptions {
    StoreOptions { store_timeout: Some(Duration::from_secs(secs)), ..Default::default() }
}

#[test]
fn transient_upload_failures_are_retried_until_the_blob_lands() {
    let (mem, s) = faulty();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    s.set(Op::PutBlob, Fault::Fail(RemoteKind::Server), Some(3));
    let data = random_bytes(3 << 20, 1);
    a.write_file("ns/f", &data).unwrap(); // async: the close does not wait for the store
    a.publish();
    // the queue holds the created (empty) blob, then the written one: the first one fails
    // three times and is retried, then both are stored
    assert_eq!(s.calls(Op::PutBlob), 5, "three failures, the retry that stored it, the next blob");
    assert_eq!(mem.len(), 2);
    let b = Fixture::node(s.clone());
    b.poll();
    assert!(b.read_file("ns/f").unwrap() == data);
}

#[test]
fn a_refused_sync_upload_fails_the_close_at_once_and_keeps_the_bytes() {
    let (mem, s) = faulty();
    let (a, stop) = sync_node(&s, 5);
    a.mkdir_p("ns");
    s.set(Op::PutBlob, Fault::Fail(RemoteKind::Auth), None);
    let data = compressible_bytes(1 << 20, 2);
    let fh = a.open_write("ns/f", true).unwrap();
    a.core().write(fh, 0, &data).unwrap();
    let t = Instant::now();
    assert_eq!(a.core().flush(fh).map_err(common::e), Err(libc::EIO));
    assert!(t.elapsed() < Duration::from_secs(2), "a refusal is not waited out: {:?}", t.elapsed());
    assert_eq!(mem.len(), 0);
    // credentials fixed: the same close succeeds from the kept staging file
    s.clear(Op::PutBlob);
    a.core().flush(fh).unwrap();
    a.core().release(fh);
    assert!(!mem.is_empty());
    assert!(a.read_file("ns/f").unwrap() == data);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// A cold read whose download never answers fails with EIO within the store timeout and is
/// counted; local files, lookups and creates go on; after the fault clears the read works.
#[test]
fn a_hung_download_fails_the_read_in_time_and_local_work_goes_on() {
    let (_mem, s) = faulty();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    let cold = random_bytes(5 << 20, 3);
    a.write_file("ns/cold", &cold).unwrap();
    a.publish();
    let b = Fixture::node_with(s.clone(), bounded(1));
    b.poll();
    b.write_file("ns/local", b"local").unwrap();
    s.set(Op::FetchInto, Fault::Hang, None);
    let t = Instant::now();
    assert_eq!(b.try_read_file("ns/cold").err(), Some(libc::EIO));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(8), "bounded: {took:?}");
    assert_eq!(b.read_file("ns/local").unwrap(), b"local");
    b.write_file("ns/new", b"created during the outage").unwrap();
    assert!(b.core().store().read_path().store_timeouts.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    s.clear(Op::FetchInto);
    assert!(b.read_file("ns/cold").unwrap() == cold);
}

#[test]
fn slow_answers_are_waited_for_not_failed() {
    let (_mem, s) = faulty();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    let data = random_bytes(2 << 20, 4);
    a.write_file("ns/f", &data).unwrap();
    a.publish();
    let b = Fixture::node_with(s.clone(), bounded(2));
    s.set(Op::ListMeta, Fault::Slow(Duration::from_millis(300)), None);
    s.set(Op::GetMeta, Fault::Slow(Duration::from_millis(300)), None);
    b.poll();
    s.set(Op::FetchInto, Fault::Slow(Duration::from_millis(500)), None);
    assert!(b.read_file("ns/f").unwrap() == data);
}

/// A corrupt or short body is never served: the read fails, nothing lands in the flat tier,
/// and the next read (body good again) succeeds.
#[test]
fn a_truncated_body_is_an_error_never_data() {
    let (_mem, s) = faulty();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    let big = random_bytes(3 << 20, 5);
    let small = compressible_bytes(100 << 10, 5);
    a.write_file("ns/big", &big).unwrap();
    a.write_file("ns/small", &small).unwrap();
    a.publish();
    let b = Fixture::node_with(s.clone(), bounded(2));
    b.poll();
    s.set(Op::FetchInto, Fault::Truncate(1000), Some(2));
    assert_eq!(b.try_read_file("ns/big").err(), Some(libc::EIO));
    assert_eq!(b.try_read_file("ns/small").err(), Some(libc::EIO));
    assert_eq!(b.flat_count(), 0, "nothing half-fetched was adopted");
    assert!(b.read_file("ns/big").unwrap() == big);
    assert!(b.read_file("ns/small").unwrap() == small);
    // copy-on-write (whole-blob GET) the same way
    let c = Fixture::node_with(s.clone(), bounded(2));
    c.poll();
    s.set(Op::GetBlob, Fault::Truncate(10), Some(1));
    assert_eq!(c.pwrite("ns/big", 10, b"x").err(), Some(libc::EIO));
    c.pwrite("ns/big", 10, b"x").unwrap();
    let mut want = big.clone();
    want[10] = b'x';
    assert!(c.read_file("ns/big").unwrap() == want);
}

/// A truncated or failing change-journal read applies nothing; the next poll applies it all.
#[test]
fn a_damaged_journal_read_applies_nothing_and_is_retried() {
    let (_mem, s) = faulty();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/f", b"first").unwrap();
    a.write_file("ns/g", b"second").unwrap();
    a.publish();
    s.set(Op::GetMeta, Fault::Truncate(20), None);
    assert!(b.block_on(b.core().poll_once()).is_err(), "a short batch is rejected");
    assert!(b.stat("ns/f").is_err() && b.stat("ns/g").is_err(), "nothing half-applied");
    s.set(Op::GetMeta, Fault::Fail(RemoteKind::Network), Some(1));
    assert!(b.block_on(b.core().poll_once()).is_err());
    s.clear(Op::GetMeta);
    b.poll();
    assert_eq!(b.read_file("ns/f").unwrap(), b"first");
    assert_eq!(b.read_file("ns/g").unwrap(), b"second");
}

/// The collector never deletes on partial knowledge: a failed listing or a failed read of
/// its own state ends the run with an error and deletes nothing.
#[test]
fn gc_with_a_failing_store_deletes_nothing() {
    let (mem, s) = faulty();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/f", b"kept").unwrap();
    a.write_file("ns/g", b"dropped").unwrap();
    a.publish();
    a.unlink("ns/g").unwrap();
    a.publish();
    let before = mem.len();
    for op in [Op::ListBlobs, Op::ListMeta, Op::GetMeta] {
        s.set(op, Fault::Fail(RemoteKind::Server), None);
        let r = a.block_on(wombatfs::sync::gc::collect(s.as_ref(), &policy(Duration::ZERO)));
        assert!(r.is_err(), "{op:?} failing must fail the run");
        s.clear(op);
        assert_eq!(mem.len(), before, "{op:?}: nothing deleted");
    }
    let r = a.block_on(wombatfs::sync::gc::collect(s.as_ref(), &policy(Duration::ZERO))).unwrap();
    assert_eq!(r.deleted.len(), 1, "{r:?}");
    assert_eq!(a.read_file("ns/f").unwrap(), b"kept");
}

/// A blob a change still to be published names must reach the bucket even when no local name
/// refers to it any more: block replaced twice (temporary name renamed over it, as engines
/// do) while uploads are failing. Before, the replaced version's flat file was reclaimed at
/// once, its queued upload skipped, and the journal then published "f = v1" with v1 missing
/// from the bucket: a node applying the journal up to there read EIO (found by scripts/soak).
#[test]
fn a_replaced_block_still_named_by_the_journal_reaches_the_bucket() {
    let (mem, s) = faulty();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.publish();
    let (v1, v2) = (random_bytes(1 << 20, 61), compressible_bytes(1 << 20, 62));
    // the upload queue stalls on its first blob for a few retries
    s.set(Op::PutBlob, Fault::Fail(RemoteKind::Server), Some(4));
    for v in [&v1, &v2] {
        a.write_file("ns/f.tmp", v).unwrap();
        a.rename("ns/f.tmp", "ns/f", 0).unwrap();
    }
    a.publish();
    let v1_id = wombatfs::blob::BlobId::of(&v1);
    assert!(a.block_on(mem.has_blob(&v1_id)).unwrap(), "the replaced version is in the bucket");
    assert!(!a.core().store().flat().contains(&v1_id), "and no longer in the flat tier");
    let b = Fixture::node(s.clone());
    b.poll();
    assert!(b.read_file("ns/f").unwrap() == v2);
}

/// A store whose PUTs take 100 ms and that records how many ran at once.
struct Overlap {
    inner: Arc<dyn ObjectStore>,
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ObjectStore for Overlap {
    fn describe(&self) -> String {
        "overlap".into()
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
    async fn put_blob(&self, id: &BlobId, src: &std::path::Path) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = self.inner.put_blob(id, src).await;
        self.now.fetch_sub(1, SeqCst);
        r
    }
    async fn get_blob(&self, id: &BlobId, dst: &std::path::Path) -> Result<u64, StoreError> {
        self.inner.get_blob(id, dst).await
    }
    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError> {
        self.inner.has_blob(id).await
    }
    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        self.inner.delete_blob(id).await
    }
    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        self.inner.list_blobs().await
    }
    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put_meta(name, bytes).await
    }
    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get_meta(name).await
    }
    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete_meta(name).await
    }
    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_meta(dir).await
    }
}

#[test]
fn a_slow_store_gets_several_uploads_at_once_and_never_more_than_the_bound() {
    let store = Arc::new(Overlap { inner: Arc::new(MemoryStore::new()), now: Default::default(), most: Default::default() });
    let a = Fixture::node(store.clone());
    a.mkdir_p("ns");
    let files: Vec<Vec<u8>> = (0..24).map(|i| if i % 2 == 0 { random_bytes(64 << 10, i) } else { compressible_bytes(64 << 10, i) }).collect();
    for (i, d) in files.iter().enumerate() {
        a.write_file(&format!("ns/f{i}"), d).unwrap(); // async: closes do not wait
    }
    a.drain();
    let most = store.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most >= 2, "several uploads at once against a slow store (saw {most})");
    assert!(most <= wombatfs::store::upload::PARALLEL, "at most the bound (saw {most})");
    a.publish();
    let b = Fixture::node(store.clone());
    b.poll();
    for (i, d) in files.iter().enumerate() {
        assert!(b.read_file(&format!("ns/f{i}")).unwrap() == *d, "f{i} on another node");
    }
}

/// A collection with this grace period and the default node lease.
fn policy(grace: std::time::Duration) -> wombatfs::sync::gc::Policy {
    wombatfs::sync::gc::Policy { grace, lease: std::time::Duration::from_secs(wombatfs::config::defaults::GC_NODE_LEASE_SECS), dry_run: false }
}

/// `--upload sync`: a small file's close waits for one PUT, the journal batch that carries
/// its bytes — not for its blob's own upload, which follows from the queue. Another node
/// reads it from the carried bytes while the blob is not in the bucket yet. A file too large
/// to be carried still waits for its blob.
#[test]
fn a_small_sync_close_travels_in_its_journal_batch() {
    let (mem, s) = faulty();
    let (a, stop) = sync_node(&s, 2);
    a.mkdir_p("ns");
    // blob uploads fail (the queue retries them); journal PUTs work
    s.set(Op::PutBlob, Fault::Fail(RemoteKind::Server), None);
    let small = [random_bytes(4096, 71), compressible_bytes(64 << 10, 72), Vec::new()];
    for (i, data) in small.iter().enumerate() {
        let t = Instant::now();
        a.write_file(&format!("ns/f{i}"), data).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "the close did not wait for the blob's upload: {:?}", t.elapsed());
    }
    let id = BlobId::of(&small[0]);
    assert!(!a.block_on(mem.has_blob(&id)).unwrap(), "the blob itself is not uploaded yet");
    // a reader that could not fetch anything from the bucket still reads them
    s.set(Op::FetchInto, Fault::Fail(RemoteKind::Server), None);
    s.set(Op::GetBlob, Fault::Fail(RemoteKind::Server), None);
    let b = Fixture::node(s.clone());
    b.poll();
    for (i, data) in small.iter().enumerate() {
        assert!(b.read_file(&format!("ns/f{i}")).unwrap() == *data, "f{i} from the carried bytes");
    }
    // too large to carry: the close waits for the blob, and fails when it cannot land
    let big = random_bytes((64 << 10) + 1, 73);
    let fh = a.open_write("ns/big", true).unwrap();
    a.core().write(fh, 0, &big).unwrap();
    assert_eq!(a.core().flush(fh).map_err(common::e), Err(libc::EIO), "a large blob is not carried");
    // uploads come back: the carried blobs become objects of their own, the large one lands
    s.clear(Op::PutBlob);
    a.core().flush(fh).unwrap();
    a.core().release(fh);
    a.drain();
    for data in &small {
        assert!(a.block_on(mem.has_blob(&BlobId::of(data))).unwrap(), "uploaded after the batch");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// A node that leaves for good before its queued uploads are done leaves its small blobs only
/// inside its journal batches: the collector uploads them from there before it deletes the
/// batches, so a fresh node restoring the tree still reads them.
#[test]
fn gc_keeps_the_blobs_a_gone_node_carried_in_its_journal() {
    let (mem, s) = faulty();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.publish();
    s.set(Op::PutBlob, Fault::Fail(RemoteKind::Server), None);
    let data = random_bytes(10_000, 81);
    a.write_file("ns/f", &data).unwrap();
    // async: the publisher does not wait for the upload of a blob it can carry
    assert_eq!(a.block_on(a.core().publish_ready()).unwrap(), 1);
    let id = BlobId::of(&data);
    assert!(!a.block_on(mem.has_blob(&id)).unwrap());
    // b follows straight from the bucket (no faults), snapshots, and a never comes back
    let b = Fixture::node(mem.clone());
    b.poll();
    b.publish();
    b.core().write_snapshot(&b.core().node_id()).unwrap();
    let gone = a.core().node_id();
    drop(a);
    b.block_on(wombatfs::sync::gc::forget_node(mem.as_ref(), &gone)).unwrap();
    let r = b.block_on(wombatfs::sync::gc::collect(mem.as_ref(), &policy(Duration::ZERO))).unwrap();
    assert_eq!(r.nodes_removed, vec![gone], "{r:?}");
    assert!(r.deleted.is_empty(), "{r:?}");
    assert!(b.block_on(mem.has_blob(&id)).unwrap(), "the carried blob became an object before its batch went");
    let c = Fixture::node(mem.clone());
    c.poll();
    assert!(c.read_file("ns/f").unwrap() == data, "a fresh node restores it from the bucket");
}
