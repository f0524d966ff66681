//! The foyer hybrid tier (RAM + SSD) between the flat tier and the object store.
//!
//! Blobs are stored as 1 MiB pieces (read back concurrently) keyed by (blob id, piece index), because foyer silently
//! drops entries larger than its block size or its flush buffer. A blob of more than one piece
//! also has its proof table (the chaining value of each piece, `proof.rs`): a read checks the
//! table against the blob id first and then each piece as it arrives, so a download waiting
//! on foyer serves each piece at once instead of after the whole blob. Without a table (entries
//! from before it was kept) the whole blob is verified at the end. A corrupted or partially
//! evicted blob is a miss, never data. Pieces are written to the disk engine on insertion (`WriteOnInsertion`), so what is
//! in foyer survives a daemon restart (recovery with a tombstone log, so removed blobs do not
//! come back).
//!
//! **Admission waits instead of dropping.** foyer's disk engine drops an entry, silently, when
//! its submit queue or a flusher's buffer is full — under a burst of promotions that lost 19
//! of 24 blobs of a working set that fit (see the `admission` test). So insertions are
//! serialized and, after at most one disk block of pieces, wait for the flushers to write
//! what they were given: a blob that is admitted is on the disk (or in RAM) afterwards, and
//! admission is as fast as the disk, never faster.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy, RecoverMode};

use crate::blob::BlobId;
use crate::proof;
use crate::tiers::fetch::Fetch;
use crate::tiers::StoreError;

/// Bytes per piece: one blake3 chunk of the proofs (`proof::CHUNK`).
pub const PIECE: u64 = proof::CHUNK;
/// foyer's disk block (largest entry it can write).
const BLOCK: usize = 16 << 20;

type Key = ([u8; 32], u32);
/// Piece index of the record holding a blob's length.
const LEN: u32 = u32::MAX;
/// Piece index of the record holding a blob's proof table (blobs of more than one piece).
const PROOFS: u32 = u32::MAX - 1;

/// Whether files in `dir` open with `O_DIRECT` (not every filesystem has it).
fn direct_io_works(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".direct-io-probe");
    let ok = std::fs::OpenOptions::new().create(true).truncate(true).write(true).custom_flags(libc::O_DIRECT).open(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn pieces(len: u64) -> u32 {
    len.div_ceil(PIECE) as u32
}

/// Counters of the tier.
#[derive(Debug, Default)]
pub struct FoyerStats {
    /// blobs served from foyer
    pub hits: AtomicU64,
    /// blobs looked up and not (wholly) found
    pub misses: AtomicU64,
    /// blobs inserted
    pub inserts: AtomicU64,
}

/// RAM + SSD cache of blob pieces.
pub struct FoyerTier {
    cache: HybridCache<Key, Bytes>,
    /// counters
    pub stats: FoyerStats,
    memory: u64,
    disk: u64,
    /// bytes of pieces handed to foyer between two waits for its flushers (0: RAM only)
    batch: u64,
    /// one admission at a time, so batches of concurrent inserters do not add up
    admitting: std::sync::Mutex<()>,
    rt: tokio::runtime::Handle,
}

impl FoyerTier {
    /// Open (recovering what a previous run left on disk) with `memory` bytes of RAM and
    /// `disk` bytes in `dir` (0: RAM only).
    pub async fn open(dir: &Path, memory: u64, disk: u64) -> Result<Self, StoreError> {
        let err = |e: foyer::Error| StoreError::io(format!("foyer cache in {}", dir.display()), std::io::Error::other(e.to_string()));
        let builder = HybridCacheBuilder::new()
            .with_name("wombatfs")
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .memory(memory as usize)
            .with_weighter(|_: &Key, v: &Bytes| v.len())
            .storage();
        let mut batch = 0;
        let cache = if disk == 0 {
            builder.build().await.map_err(err)?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
            // direct I/O where the filesystem has it: foyer's blocks then go between the disk
            // and foyer's own buffers, not through the page cache as well (a copy on every
            // read, and a second cache of what foyer holds, pushing out the flat tier's pages)
            let direct = direct_io_works(dir);
            if !direct {
                tracing::info!(dir = %dir.display(), "the foyer dir's filesystem has no direct I/O; foyer's disk goes through the page cache");
            }
            let device = FsDeviceBuilder::new(dir).with_capacity(disk as usize).with_direct(direct).build().map_err(err)?;
            // every flusher holds a block while it fills it and reclaim needs free ones: with
            // too few blocks per flusher foyer stalls (its close then never returns), so a
            // small disk gets smaller blocks and fewer flushers
            let block = if disk >= 512 << 20 { BLOCK } else { 4 << 20 };
            let flushers = ((disk as usize / block) / 8).clamp(1, 4);
            // each flusher buffers 2 blocks; a batch of one block fits in any one of them
            // even if every piece of it hashes to the same flusher
            batch = block as u64;
            let engine = BlockEngineConfig::new(device)
                .with_block_size(block)
                // a burst larger than the flush buffers is dropped from the disk (not an
                // error: a later read misses and goes to the object store)
                .with_flushers(flushers)
                .with_buffer_pool_size(flushers * 2 * block)
                .with_submit_queue_size_threshold(2 * block)
                .with_tombstone_log(true);
            builder.with_engine_config(engine).with_recover_mode(RecoverMode::Quiet).build().await.map_err(err)?
        };
        let rt = tokio::runtime::Handle::current();
        Ok(FoyerTier { cache, stats: FoyerStats::default(), memory, disk, batch, admitting: Default::default(), rt })
    }

    /// Configured RAM and disk capacities.
    pub fn capacity(&self) -> (u64, u64) {
        (self.memory, self.disk)
    }

    /// Whether the blob may be in the tier (its length record is; may be a false positive).
    pub fn contains(&self, id: &BlobId) -> bool {
        self.cache.contains(&(id.0, LEN))
    }

    /// Insert a blob from a file holding its verified bytes; returns once foyer's disk engine
    /// has written it (see the module doc). Blocking: call it from a blocking thread, never
    /// from inside the runtime.
    pub fn insert_file(&self, id: &BlobId, file: &File, len: u64) -> Result<(), StoreError> {
        if len == 0 {
            return Ok(());
        }
        let _one = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        let mut handed = 0;
        let mut cvs = Vec::new();
        // pieces first, the length record last: a reader finds the blob only once all of it
        // was handed over
        for i in 0..pieces(len) {
            let off = i as u64 * PIECE;
            let n = PIECE.min(len - off);
            if self.batch > 0 && handed + n > self.batch {
                self.settle();
                handed = 0;
            }
            let mut buf = vec![0u8; n as usize];
            file.read_exact_at(&mut buf, off).map_err(|e| StoreError::io("read blob for foyer", e))?;
            if len > PIECE {
                cvs.push(proof::chunk_cv(off, &buf));
            }
            self.cache.insert((id.0, i), Bytes::from(buf));
            handed += n;
        }
        if len > PIECE {
            self.cache.insert((id.0, PROOFS), Bytes::from(cvs.concat()));
        }
        self.cache.insert((id.0, LEN), Bytes::copy_from_slice(&len.to_le_bytes()));
        if self.batch > 0 {
            self.settle();
        }
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Wait until the disk engine's flushers have written everything handed to them.
    fn settle(&self) {
        self.rt.block_on(self.cache.storage().wait());
    }

    /// Write the blob's pieces into `file` and verify them against the blob id (each 1 MiB
    /// piece is a blake3 chunk). With the blob's proof table each piece is checked against it
    /// as it arrives and marked readable in `fetch` at once; without one, the pieces' chaining
    /// values are merged into the root at the end. Its length, or `None` when a piece is
    /// missing, the length is not `fetch`'s or the bytes do not hash to the id (then the blob
    /// is dropped from foyer; pieces already marked were verified); with it, where the pieces
    /// came from: `foyer_memory`, or `foyer_disk` when any piece was read from the disk.
    pub async fn read_into(&self, id: &BlobId, file: &File, fetch: Option<&Fetch>) -> Result<Option<(u64, &'static str)>, StoreError> {
        let len = match self.cache.get(&(id.0, LEN)).await {
            Ok(Some(e)) => e.value().as_ref().try_into().ok().map(u64::from_le_bytes),
            _ => None,
        };
        let Some(len) = len else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        if fetch.is_some_and(|x| x.len != len) {
            self.remove(id, len);
            return Ok(None);
        }
        let n = pieces(len);
        let table = match self.cache.get(&(id.0, PROOFS)).await {
            Ok(Some(e)) if n > 1 => Some(e.value().chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect::<Vec<[u8; 32]>>()),
            _ => None,
        };
        if table.as_ref().is_some_and(|t| proof::root(t, len) != Some(*id)) {
            tracing::warn!(%id, "a blob's proof table in foyer does not match its id; dropped");
            self.remove(id, len);
            return Ok(None);
        }
        // pieces are read concurrently: the disk engine serves them in parallel
        let mut cvs = vec![[0u8; 32]; n as usize];
        let mut single = None;
        let mut from_disk = false;
        let gets = (0..n).map(|i| async move { (i, self.cache.get(&(id.0, i)).await) });
        let mut stream = futures::stream::iter(gets).buffer_unordered(8);
        while let Some((i, got)) = stream.next().await {
            let piece = match got {
                Ok(Some(e)) => {
                    from_disk |= e.source() == foyer::Source::Disk;
                    e.value().clone()
                }
                Ok(None) => {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(%id, piece = i, error = %e, "foyer read failed; treating as a miss");
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
            };
            let off = i as u64 * PIECE;
            if piece.len() as u64 != PIECE.min(len - off) {
                drop(stream);
                self.remove(id, len);
                return Ok(None);
            }
            if n == 1 {
                single = Some(BlobId::of(&piece));
            } else {
                cvs[i as usize] = proof::chunk_cv(off, &piece);
            }
            if table.as_ref().is_some_and(|t| t[i as usize] != cvs[i as usize]) {
                drop(stream);
                tracing::warn!(%id, piece = i, "a piece in foyer failed verification; the blob is dropped");
                self.remove(id, len);
                return Ok(None);
            }
            file.write_all_at(&piece, off).map_err(|e| StoreError::io("write blob from foyer", e))?;
            if let (Some(x), Some(_)) = (fetch, &table) {
                x.mark(i as usize);
            }
        }
        let got = if n == 1 { single } else { proof::root(&cvs, len) };
        if got != Some(*id) {
            tracing::warn!(%id, "a blob in foyer failed verification; dropped");
            self.remove(id, len);
            return Ok(None);
        }
        Ok(Some((len, if from_disk { "foyer_disk" } else { "foyer_memory" })))
    }

    /// Drop a blob's pieces.
    pub fn remove(&self, id: &BlobId, len: u64) {
        self.cache.remove(&(id.0, LEN));
        self.cache.remove(&(id.0, PROOFS));
        for i in 0..pieces(len) {
            self.cache.remove(&(id.0, i));
        }
    }

    /// Flush to disk. Bounded as a guard: foyer 0.22's close waits forever when its flushers
    /// starve for free blocks (seen with 4 flushers on 4 blocks; the block and flusher sizing
    /// above prevents it); a timed-out close loses at most the newest entries (later misses).
    pub async fn close(&self) {
        match tokio::time::timeout(std::time::Duration::from_secs(5), self.cache.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "closing the foyer cache failed"),
            Err(_) => tracing::warn!("closing the foyer cache timed out after 5 s; its newest entries may be missing after restart"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &Path, name: &str, data: &[u8]) -> File {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        File::open(p).unwrap()
    }

    #[test]
    fn each_piece_is_readable_once_verified_and_a_bad_piece_drops_the_blob() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(4 * PIECE + 5)).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        let id = BlobId::of(&data);
        let f = rt.block_on(FoyerTier::open(&dir.path().join("foyer"), 64 << 20, 0)).unwrap();
        let fetch_file = |name: &str| {
            let p = dir.path().join(name);
            let file = std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&p).unwrap();
            Fetch::create(id, data.len() as u64, file, p, None).unwrap()
        };
        f.insert_file(&id, &file_with(dir.path(), "a", &data), data.len() as u64).unwrap();
        let whole = fetch_file("whole");
        assert_eq!(rt.block_on(f.read_into(&id, &whole.file, Some(&whole))).unwrap().map(|g| g.0), Some(data.len() as u64));
        assert!(whole.complete(), "every piece was marked readable as it was verified");
        assert_eq!(std::fs::read(&whole.path).unwrap(), data);
        // piece 2 damaged in the cache: the pieces before it may be readable (verified), it is not
        f.cache.insert((id.0, 2), Bytes::from(vec![0xAB; PIECE as usize]));
        let bad = fetch_file("bad");
        assert_eq!(rt.block_on(f.read_into(&id, &bad.file, Some(&bad))).unwrap(), None);
        assert!(!bad.ready(2 * PIECE, 1), "an unverified piece is never readable");
        let mut there = vec![0u8; PIECE as usize];
        let n = bad.file.read_at(&mut there, 2 * PIECE).unwrap();
        assert!(n > 0 && !there[..n].iter().all(|&b| b == 0xAB), "a piece that fails its check is never written");
        assert!(!f.contains(&id), "the blob is dropped");
        // a proof table that does not hash to the id: nothing is marked
        f.insert_file(&id, &file_with(dir.path(), "b", &data), data.len() as u64).unwrap();
        f.cache.insert((id.0, PROOFS), Bytes::from(vec![1u8; 32 * 5]));
        let forged = fetch_file("forged");
        assert_eq!(rt.block_on(f.read_into(&id, &forged.file, Some(&forged))).unwrap(), None);
        assert!(!forged.ready(0, 1));
        // a blob of another length than the reader expects is no hit
        f.insert_file(&id, &file_with(dir.path(), "c", &data), data.len() as u64).unwrap();
        let p = dir.path().join("short");
        let file = std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&p).unwrap();
        let short = Fetch::create(id, PIECE, file, p, None).unwrap();
        assert_eq!(rt.block_on(f.read_into(&id, &short.file, Some(&short))).unwrap(), None);
    }

    #[test]
    fn direct_io_is_probed_and_the_probe_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // whatever the test filesystem offers, the probe answers without error and cleans up
        let _ = direct_io_works(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!direct_io_works(&dir.path().join("missing")), "a dir that does not exist cannot be probed");
    }

    #[test]
    fn pieces_round_trip_are_verified_and_survive_a_restart() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("foyer");
        let data: Vec<u8> = (0..(3 * PIECE + 777)).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
        let small = b"one small blob".to_vec();
        let (id, sid) = (BlobId::of(&data), BlobId::of(&small));
        let f = rt.block_on(FoyerTier::open(&cache, 8 << 20, 64 << 20)).unwrap();
        f.insert_file(&id, &file_with(dir.path(), "a", &data), data.len() as u64).unwrap();
        f.insert_file(&sid, &file_with(dir.path(), "s", &small), small.len() as u64).unwrap();
        // content filed under the wrong id is never served
        let wrong = BlobId::of(b"something else");
        f.insert_file(&wrong, &file_with(dir.path(), "w", &data), data.len() as u64).unwrap();
        rt.block_on(async {
            let out = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.path().join("out")).unwrap();
            assert_eq!(f.read_into(&wrong, &out, None).await.unwrap(), None);
            // (`contains` may be a false positive; a read is the real test)
            assert_eq!(f.read_into(&wrong, &out, None).await.unwrap(), None, "a blob failing verification is dropped");
            f.close().await;
        });
        drop(f);
        // a new process (same dir): what was inserted is still there, verified
        rt.block_on(async {
            let f = FoyerTier::open(&cache, 8 << 20, 64 << 20).await.unwrap();
            for (id, want) in [(id, &data), (sid, &small)] {
                let out = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.path().join("out2")).unwrap();
                assert_eq!(f.read_into(&id, &out, None).await.unwrap().map(|g| g.0), Some(want.len() as u64));
                assert_eq!(&std::fs::read(dir.path().join("out2")).unwrap()[..want.len()], &want[..]);
            }
            f.remove(&id, data.len() as u64);
            let out = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.path().join("out3")).unwrap();
            assert_eq!(f.read_into(&id, &out, None).await.unwrap(), None, "removed");
            f.close().await;
        });
    }
}

#[cfg(test)]
mod sizing {
    use super::*;

    /// Regression: with 4 flushers on a 64 MiB disk of 16 MiB blocks foyer stalled and its
    /// close never returned (and nothing reached the disk).
    #[test]
    fn the_smallest_disk_flushes_and_closes_promptly() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 3 << 20];
        let p = dir.path().join("a");
        std::fs::write(&p, &data).unwrap();
        let id = BlobId::of(&data);
        let f = rt.block_on(FoyerTier::open(&dir.path().join("c"), 8 << 20, 64 << 20)).unwrap();
        f.insert_file(&id, &File::open(&p).unwrap(), data.len() as u64).unwrap();
        rt.block_on(async {
            let closed = tokio::time::timeout(std::time::Duration::from_secs(3), f.cache.close()).await;
            assert!(closed.is_ok(), "close stalled");
        });
        rt.block_on(async {
            let f = FoyerTier::open(&dir.path().join("c"), 8 << 20, 64 << 20).await.unwrap();
            let out = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.path().join("o")).unwrap();
            assert_eq!(f.read_into(&id, &out, None).await.unwrap().map(|g| g.0), Some(data.len() as u64), "flushed to disk before close");
        });
    }
}

#[cfg(test)]
mod admission {
    use super::*;
    use std::sync::Arc;

    /// Incompressible bytes (xorshift), different per seed.
    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len / 8).flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        }).collect()
    }

    /// A burst of insertions larger than foyer's flush buffers: foyer drops what its queue
    /// cannot take, so every blob of a working set that fits must still be readable after.
    #[test]
    fn a_burst_that_fits_is_all_kept() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<(BlobId, std::path::PathBuf, u64)> = (0..24u32)
            .map(|i| {
                let data = random(8 << 20, i as u64);
                let p = dir.path().join(format!("b{i}"));
                std::fs::write(&p, &data).unwrap();
                (BlobId::of(&data), p, data.len() as u64)
            })
            .collect();
        let f = Arc::new(rt.block_on(FoyerTier::open(&dir.path().join("c"), 4 << 20, 512 << 20)).unwrap());
        // three inserters at once, as promotions and evictions do
        let _g = rt.enter();
        std::thread::scope(|s| {
            for part in blobs.chunks(8) {
                let f = f.clone();
                s.spawn(move || {
                    for (id, p, len) in part {
                        f.insert_file(id, &File::open(p).unwrap(), *len).unwrap();
                    }
                });
            }
        });
        let missing: Vec<usize> = blobs
            .iter()
            .enumerate()
            .filter(|(_, (id, _, len))| {
                let out = tempfile::tempfile_in(dir.path()).unwrap();
                rt.block_on(f.read_into(id, &out, None)).unwrap().map(|g| g.0) != Some(*len)
            })
            .map(|(i, _)| i)
            .collect();
        assert!(missing.is_empty(), "foyer lost {} of {} blobs: {missing:?}", missing.len(), blobs.len());
        rt.block_on(f.close());
    }
}
