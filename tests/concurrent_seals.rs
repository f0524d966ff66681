//! Seals racing each other through the core (no kernel): several threads write, rewrite,
//! unlink, rename and hard-link files whose bytes come from one small pool, so their seals
//! keep adopting, sharing and releasing the same blobs at once. A seal names its blob in the
//! flat tier and the local store before it takes the tree lock, with the blob pinned so that
//! another thread dropping the last name of the same bytes meanwhile does not delete them
//! (without the pin this test loses objects in every run). Each thread owns its names, so
//! what each name must hold is known exactly; at the end every name reads back its bytes,
//! and the flat tier and the local store hold exactly the blobs still named, before and
//! after a clean remount and a crash. A file unlinked during its own seal is
//! tests/failpoints.rs's (`seal-adopted`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{compressible_bytes, random_bytes, Fixture};
use wombatfs::blob::BlobId;
use wombatfs::tiers::faulty::{Fault, FaultyStore, Op};
use wombatfs::tiers::memory::MemoryStore;

const THREADS: usize = 4;
const OPS: usize = 2000;
const NAMES: usize = 6;

/// xorshift64*: a seeded sequence per thread, so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Bytes the threads share: small and large (more than one 1 MiB proof piece), random and
/// compressible, so every seal dedups against the other threads' files most of the time.
fn pool() -> Vec<Arc<Vec<u8>>> {
    [random_bytes(4096, 1), random_bytes(4096, 2), compressible_bytes(65536, 3), random_bytes((1 << 20) + 4097, 4), compressible_bytes(300_000, 5)]
        .into_iter()
        .map(Arc::new)
        .collect()
}

/// One thread's run over its own names `ns/t{t}-{i}`; returns what each name holds. Hard
/// links share an inode, so the model keeps inodes (what a rewrite changes) apart from names.
fn run(f: &Fixture, t: usize, pool: &[Arc<Vec<u8>>]) -> BTreeMap<String, Arc<Vec<u8>>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) * 0x1000_0001));
    let name = |i: usize| format!("ns/t{t}-{i}");
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut inodes: Vec<Arc<Vec<u8>>> = Vec::new();
    for op in 0..OPS {
        let (a, b) = (name(rng.below(NAMES)), name(rng.below(NAMES)));
        let held = names.get(&a).copied();
        let ctx = format!("thread {t} op {op}");
        match rng.below(10) {
            0..=2 => {
                // create, or truncate and write an existing inode (every link of it)
                let data = pool[rng.below(pool.len())].clone();
                f.write_file(&a, &data).unwrap_or_else(|e| panic!("{ctx}: write {a}: errno {e}"));
                match held {
                    Some(ino) => inodes[ino] = data,
                    None => {
                        names.insert(a, inodes.len());
                        inodes.push(data);
                    }
                }
            }
            3 => {
                // a rewrite in place of the first bytes: its seal copies the old blob's bytes
                let Some(ino) = held else { continue };
                let patch = &pool[rng.below(pool.len())][..1000];
                f.pwrite(&a, 0, patch).unwrap_or_else(|e| panic!("{ctx}: pwrite {a}: errno {e}"));
                let mut now = inodes[ino].to_vec();
                now[..patch.len()].copy_from_slice(patch);
                inodes[ino] = Arc::new(now);
            }
            4 => {
                let want = if held.is_some() { Ok(()) } else { Err(libc::ENOENT) };
                assert_eq!(f.unlink(&a), want, "{ctx}: unlink {a}");
                names.remove(&a);
            }
            5 => {
                let want = if held.is_some() { Ok(()) } else { Err(libc::ENOENT) };
                assert_eq!(f.rename(&a, &b, 0), want, "{ctx}: rename {a} -> {b}");
                // onto a link of the same inode (or itself) a rename does nothing (POSIX)
                if let Some(ino) = held.filter(|&ino| names.get(&b) != Some(&ino)) {
                    names.remove(&a);
                    names.insert(b, ino);
                }
            }
            6 => {
                let want = match (held, names.contains_key(&b)) {
                    (None, _) => Err(libc::ENOENT),
                    (Some(_), true) => Err(libc::EEXIST),
                    (Some(ino), false) => {
                        names.insert(b.clone(), ino);
                        Ok(())
                    }
                };
                assert_eq!(f.link(&a, &b), want, "{ctx}: link {a} -> {b}");
            }
            7 => {
                // a reader keeps reading what it opened while the name goes away
                let Some(ino) = held else { continue };
                let fh = f.core().open(f.resolve(&a).unwrap(), libc::O_RDONLY).unwrap().fh;
                f.unlink(&a).unwrap();
                names.remove(&a);
                assert!(f.read_fh(fh) == *inodes[ino], "{ctx}: an open handle of unlinked {a} reads its bytes");
                f.core().release(fh);
            }
            _ => match held {
                Some(ino) => assert!(f.read_file(&a).unwrap() == *inodes[ino], "{ctx}: {a} reads back what was written"),
                None => assert_eq!(f.read_file(&a).map(|_| ()), Err(libc::ENOENT), "{ctx}: {a} is absent"),
            },
        }
    }
    names.into_iter().map(|(n, ino)| (n, inodes[ino].clone())).collect()
}

/// Every name holds its bytes and nothing else is listed.
fn check_names(f: &Fixture, model: &BTreeMap<String, Arc<Vec<u8>>>, when: &str) {
    for (name, data) in model {
        assert!(f.read_file(name).unwrap() == **data, "{when}: {name} reads back its bytes");
    }
    let listed: BTreeSet<String> = f.list("ns").unwrap().into_iter().map(|(n, _)| format!("ns/{n}")).collect();
    assert_eq!(listed, model.keys().cloned().collect::<BTreeSet<_>>(), "{when}: the listing is the names written");
}

/// The blobs still named, plus the empty blob every new file starts bound to.
fn named_blobs(model: &BTreeMap<String, Arc<Vec<u8>>>) -> usize {
    let mut blobs: BTreeSet<BlobId> = model.values().map(|d| BlobId::of(d)).collect();
    blobs.insert(BlobId::of(b""));
    blobs.len()
}

/// `check_names`, and once uploads are done the flat tier and the local store hold exactly
/// the named blobs.
fn check(f: &Fixture, model: &BTreeMap<String, Arc<Vec<u8>>>, when: &str) {
    check_names(f, model, when);
    f.drain();
    assert_eq!(f.flat_count(), named_blobs(model), "{when}: flat files are the named blobs");
    assert_eq!(f.object_count(), named_blobs(model), "{when}: local-store objects are the named blobs");
}

/// The threads' runs on `f`, merged (each thread owns its names).
fn race(f: &Fixture) -> BTreeMap<String, Arc<Vec<u8>>> {
    let pool = pool();
    let models: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS).map(|t| s.spawn({
            let pool = &pool;
            move || run(f, t, pool)
        })).collect();
        threads.into_iter().map(|h| h.join().expect("a thread failed")).collect()
    });
    let model: BTreeMap<_, _> = models.into_iter().flatten().collect();
    assert!(model.len() >= THREADS, "the runs left names to check ({})", model.len());
    model
}

#[test]
fn concurrent_seals_of_shared_bytes_keep_every_name_and_leak_no_blob() {
    let mut f = Fixture::new();
    f.mkdir("ns").unwrap();
    let model = race(&f);
    check(&f, &model, "after the run");
    f.remount();
    check(&f, &model, "after a clean remount");
    f.crash();
    check(&f, &model, "after a crash");
}

/// Over a shared bucket a blob's reclaim waits for its queued upload, and a seal of the same
/// bytes meanwhile cancels it: the same race, with each upload held 2 ms so that reclaims
/// wait often, then a node that starts from the bucket alone must read every name back.
#[test]
fn concurrent_seals_over_a_bucket_publish_every_name_with_its_bytes() {
    let bucket = Arc::new(MemoryStore::new());
    let slow = FaultyStore::new(bucket.clone());
    slow.set(Op::PutBlob, Fault::Slow(Duration::from_millis(2)), None);
    let f = Fixture::node(Arc::new(slow));
    f.mkdir("ns").unwrap();
    let model = race(&f);
    check_names(&f, &model, "after the run");
    f.publish();
    assert_eq!(f.flat_count(), named_blobs(&model), "flat files are the named blobs once uploads are done");
    let fresh = Fixture::node(bucket);
    fresh.poll();
    check_names(&fresh, &model, "on a node started from the bucket");
}
