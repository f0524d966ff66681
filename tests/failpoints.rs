//! Crash windows driven by failpoints (the `fail` crate; the tests build the library with its
//! `failpoints` feature). One test binary of its own: failpoints are process-wide.

mod common;

use common::Fixture;

/// A commit that fails must not have deleted anything it would have made unreferenced: the
/// unlink of a file's only name fails, and after a crash the file reads back whole (before the
/// fix the blob's flat file and, with the local store, its only object were removed first).
#[test]
fn a_failed_commit_deletes_no_blob() {
    let scenario = fail::FailScenario::setup();
    let mut f = Fixture::new();
    f.mkdir_p("ns");
    let data = common::random_bytes(3 << 20, 11);
    f.write_file("ns/a", &data).unwrap();
    f.write_file("ns/b", b"other").unwrap();
    fail::cfg("tree-commit", "return").unwrap();
    assert_eq!(f.unlink("ns/a").unwrap_err(), libc::EIO, "the commit failed");
    fail::remove("tree-commit");
    f.crash();
    assert!(f.read_file("ns/a").unwrap() == data, "the old content, not EIO");
    assert_eq!(f.read_file("ns/b").unwrap(), b"other");
    // and a commit that succeeds does reclaim it
    f.unlink("ns/a").unwrap();
    f.remount();
    assert_eq!(f.flat_count(), 2, "the empty blob and b's");
    scenario.teardown();
}

/// Run `step` with the failpoint `point` set to panic (a crash at that instruction: nothing
/// after it runs), then crash the node for real (drop everything without shutdown work).
fn crash_at(f: &mut Fixture, point: &'static str, step: impl FnOnce(&Fixture)) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let h = hits.clone();
    fail::cfg_callback(point, move || {
        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("crash at {point}");
    })
    .unwrap();
    // the panic ends the step (or, for background work, the task that reached the point)
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(f)));
    fail::remove(point);
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the step never reached {point}");
    f.crash();
}

/// Old or new, never an error.
fn old_or_new(f: &Fixture, path: &str, old: &[u8], new: &[u8], point: &str) {
    match f.read_file(path) {
        Ok(got) => assert!(got == old || got == new, "{point}: {path} is neither its old nor its new content ({} bytes)", got.len()),
        Err(e) => panic!("{point}: {path} reads back as errno {e}"),
    }
}

/// A crash at each point of a rewrite — after the seal put the new blob in the flat tier but
/// before its commit, and after the commit but before the old blob was reclaimed — leaves
/// every file reading back as its old or its new content; the rewrite then works.
#[test]
fn crashes_inside_a_rewrite_leave_old_or_new_content() {
    let scenario = fail::FailScenario::setup();
    for (i, point) in ["seal-before-commit", "reclaim-after-commit"].into_iter().enumerate() {
        let mut f = Fixture::new();
        f.mkdir_p("ns");
        let old = common::random_bytes(3 << 20, 20 + i as u64);
        let new = common::compressible_bytes(2 << 20, 30 + i as u64);
        f.write_file("ns/a", &old).unwrap();
        f.write_file("ns/other", b"untouched").unwrap();
        crash_at(&mut f, point, |f| {
            let _ = f.write_file("ns/a", &new);
        });
        old_or_new(&f, "ns/a", &old, &new, point);
        assert_eq!(f.read_file("ns/other").unwrap(), b"untouched", "{point}");
        f.write_file("ns/a", &new).unwrap();
        f.remount();
        assert!(f.read_file("ns/a").unwrap() == new, "{point}: the rewrite after the crash");
    }
    scenario.teardown();
}

/// A crash after an upload, a journal PUT or a snapshot PUT reached the bucket but before the
/// node recorded it: after restart the node catches up, and a fresh node reading the bucket
/// sees every closed file byte-exact (nothing lost, nothing applied twice).
#[test]
fn crashes_after_a_bucket_write_lose_nothing_on_any_node() {
    let scenario = fail::FailScenario::setup();
    for point in ["upload-after-put", "publish-after-put", "snapshot-after-put"] {
        let bucket: std::sync::Arc<dyn wombatfs::tiers::ObjectStore> = std::sync::Arc::new(wombatfs::tiers::memory::MemoryStore::new());
        let mut a = Fixture::node(bucket.clone());
        a.mkdir_p("ns");
        let data = common::random_bytes(2 << 20, 40);
        a.write_file("ns/first", b"published before").unwrap();
        a.publish();
        crash_at(&mut a, point, |a| {
            // written once the point is set: its upload is queued at the close and may reach
            // the point before the step starts
            a.write_file("ns/f", &data).unwrap();
            match point {
                "upload-after-put" => a.drain(),
                "publish-after-put" => {
                    a.publish();
                }
                _ => {
                    a.core().write_snapshot(&a.core().node_id()).unwrap();
                }
            }
        });
        assert!(a.block_on(a.core().start_publishing(&Default::default())), "{point}");
        a.publish();
        assert!(a.read_file("ns/f").unwrap() == data, "{point}: the writer node");
        let b = Fixture::node(bucket.clone());
        b.poll();
        assert!(b.read_file("ns/f").unwrap() == data, "{point}: a fresh node");
        assert_eq!(b.read_file("ns/first").unwrap(), b"published before", "{point}");
        assert_eq!(b.list("ns").unwrap().len(), 2, "{point}: applied once");
    }
    scenario.teardown();
}

/// The flat tier's bound holds for a blob adopted while an eviction runs: that adoption finds
/// the eviction running and leaves its own to it, so the running one goes round again (it
/// stopped after its first round before, leaving the tier over its bound until the next
/// adoption).
#[test]
fn a_blob_adopted_while_an_eviction_runs_is_evicted_by_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use wombatfs::blob::BlobId;
    let scenario = fail::FailScenario::setup();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(wombatfs::tiers::local::LocalStore::open(&dir.path().join("objects"), wombatfs::codec::Compression::None).unwrap());
    let bs = Arc::new(wombatfs::store::BlobStore::open(&dir.path().join("cache"), objects, rt.handle()).unwrap());
    const MIB: usize = 1 << 20;
    // adopted into the flat tier and stored in the (local) object store: evictable (the pin
    // ends after the put; its end starts an eviction if the tier is over its bound)
    let put = |bs: &wombatfs::store::BlobStore, seed: u64| {
        let data = common::random_bytes(3 * MIB, seed);
        let id = BlobId::of(&data);
        let pinned = bs.adopt_bytes(&id, &data).unwrap();
        assert!(bs.put_now(&id), "stored");
        drop(pinned);
    };
    // the bound is lowered only once the three are in: no eviction starts before the test's
    bs.flat().set_limit(16 * MIB as u64);
    for seed in 1..=3 {
        put(&bs, seed);
    }
    bs.flat().set_limit(8 * MIB as u64);
    assert!(bs.flat().bytes() > bs.flat().limit(), "9 MiB over an 8 MiB bound");
    let once = Arc::new(AtomicBool::new(false));
    let (b, o) = (bs.clone(), once.clone());
    fail::cfg_callback("evict-victims-chosen", move || {
        if !o.swap(true, Ordering::SeqCst) {
            // a promotion while the victims of the first round are being removed
            put(&b, 4);
            b.maybe_evict();
        }
    })
    .unwrap();
    bs.maybe_evict();
    let t = std::time::Instant::now();
    while bs.flat().bytes() > bs.flat().limit() {
        assert!(t.elapsed().as_secs() < 10, "the flat tier stays over its bound: {} bytes", bs.flat().bytes());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(once.load(Ordering::SeqCst), "the adoption happened during the eviction");
    fail::remove("evict-victims-chosen");
    scenario.teardown();
}

/// Run `f` once, the first time the seal reaches the point between its adoption of a blob
/// (rename into the flat tier, link into the local store) and the tree lock.
fn between_adoption_and_lock(f: impl FnOnce() + Send + 'static) {
    let once = std::sync::Mutex::new(Some(f));
    fail::cfg_callback("seal-adopted", move || {
        // taken first: `f` may seal another file, which passes this point again
        let f = once.lock().unwrap().take();
        if let Some(f) = f {
            f();
        }
    })
    .unwrap();
}

/// A seal adopts its blob before it takes the tree lock. The last name of the same content
/// deleted in between must not take the blob's files with it: the reclaim leaves a pinned
/// blob alone, and the seal names it again. (Reclaiming it anyway lost the file: flat file
/// and local object both deleted, the new name reading back EIO.)
#[test]
fn a_delete_of_the_same_content_while_a_seal_waits_for_the_lock_loses_nothing() {
    let scenario = fail::FailScenario::setup();
    let mut f = Fixture::new();
    f.mkdir_p("ns");
    let data = common::random_bytes(300_000, 21);
    f.write_file("ns/old", &data).unwrap();
    let (core, ns) = (f.core_arc(), f.resolve("ns").unwrap());
    between_adoption_and_lock(move || core.unlink(ns, b"old").unwrap());
    f.write_file("ns/new", &data).unwrap();
    fail::remove("seal-adopted");
    assert_eq!(f.resolve("ns/old"), Err(libc::ENOENT), "the delete ran inside the seal");
    assert!(f.read_file("ns/new").unwrap() == data);
    f.remount();
    assert!(f.read_file("ns/new").unwrap() == data, "after a clean remount");
    f.crash();
    assert!(f.read_file("ns/new").unwrap() == data, "after a crash");
    // its flat copy lost, the file comes back from the local store: both names were kept
    let id = wombatfs::blob::BlobId::of(&data);
    std::fs::remove_file(f.cache().join("flat").join(id.fanout()).join(id.to_hex())).unwrap();
    f.remount();
    assert!(f.read_file("ns/new").unwrap() == data, "from the local store");
    scenario.teardown();
}

/// `ns/doomed` open for writing with random bytes, and, set for its seal, between the adoption
/// and the lock: its unlink, and the same bytes sealed under `ns/twin`, which finds the adopted
/// flat file (the unlinked file's staging file) and names it. Returns the bytes and the handle.
fn doomed_and_its_twin(f: &Fixture, seed: u64) -> (Vec<u8>, u64) {
    f.mkdir_p("ns");
    let data = common::random_bytes(200_000, seed);
    let fh = f.open_write("ns/doomed", true).unwrap();
    f.core().write(fh, 0, &data).unwrap();
    let (core, ns, twin) = (f.core_arc(), f.resolve("ns").unwrap(), data.clone());
    between_adoption_and_lock(move || {
        core.unlink(ns, b"doomed").unwrap();
        let caller = wombatfs::fs::Caller { uid: 0, gid: 0 };
        let (_, o) = core.create(caller, ns, b"twin", 0o644, 0, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
        core.write(o.fh, 0, &twin).unwrap();
        core.flush(o.fh).unwrap();
        core.release(o.fh);
    });
    (data, fh)
}

/// A file unlinked while its seal is between the adoption and the lock is not published, and
/// its staging file — renamed into the flat tier by then — must not stay its writers' file:
/// they get a copy, and another name sealed with the same content meanwhile keeps the flat
/// file. (Without the copy the unlinked file's next write changed the other name's blob.)
#[test]
fn a_file_unlinked_while_its_seal_waits_for_the_lock_writes_on_a_copy_of_its_own() {
    let scenario = fail::FailScenario::setup();
    let mut f = Fixture::new();
    let (data, fh) = doomed_and_its_twin(&f, 22);
    f.core().flush(fh).unwrap();
    fail::remove("seal-adopted");
    // the unlinked file's writer goes on: its bytes change, the twin's do not
    f.core().write(fh, 0, b"OVERWRITTEN").unwrap();
    let mut want = data.clone();
    want[..11].copy_from_slice(b"OVERWRITTEN");
    assert!(f.core().read(fh, 0, data.len() as u32).unwrap() == want, "the writer reads its own bytes");
    f.core().flush(fh).unwrap();
    f.core().release(fh);
    assert!(f.read_file("ns/twin").unwrap() == data, "the twin is untouched");
    f.remount();
    assert!(f.read_file("ns/twin").unwrap() == data, "after a remount");
    assert_eq!(f.resolve("ns/doomed"), Err(libc::ENOENT));
    scenario.teardown();
}

/// As above, with no room for that copy: the close reports the error, and the unlinked file,
/// still readable, takes no more writes (they would change the other name's blob).
#[test]
fn without_room_for_that_copy_the_unlinked_file_takes_no_more_writes() {
    let scenario = fail::FailScenario::setup();
    let mut f = Fixture::new();
    let (data, fh) = doomed_and_its_twin(&f, 23);
    fail::cfg("seal-unlinked-copy", "return").unwrap();
    assert_eq!(f.core().flush(fh).unwrap_err().errno(), libc::EIO, "the close reports the failed copy");
    fail::remove("seal-adopted");
    fail::remove("seal-unlinked-copy");
    assert_eq!(f.core().write(fh, 0, b"OVERWRITTEN").unwrap_err().errno(), libc::EIO, "no more writes");
    assert!(f.core().read(fh, 0, data.len() as u32).unwrap() == data, "still readable");
    f.core().release(fh);
    assert!(f.read_file("ns/twin").unwrap() == data, "the twin is untouched");
    f.remount();
    assert!(f.read_file("ns/twin").unwrap() == data, "after a remount");
    scenario.teardown();
}
