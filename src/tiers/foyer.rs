//! The foyer hybrid tier (RAM + SSD) between the flat tier and the object store.
//!
//! Blobs are stored as 4 MiB pieces keyed by (blob id, piece index), because foyer silently
//! drops entries larger than its block size or its flush buffer; the whole blob is verified
//! against its id when it is read back (a corrupted or partially evicted blob is a miss, never
//! data). Pieces are written to the disk engine on insertion (`WriteOnInsertion`), so what is
//! in foyer survives a daemon restart (recovery with a tombstone log, so removed blobs do not
//! come back).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy, RecoverMode};

use crate::blob::BlobId;
use crate::tiers::StoreError;

/// Bytes per piece.
pub const PIECE: u64 = 4 << 20;
/// foyer's disk block (largest entry it can write).
const BLOCK: usize = 16 << 20;

type Key = ([u8; 32], u32);
/// Piece index of the record holding a blob's length.
const LEN: u32 = u32::MAX;

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
        let cache = if disk == 0 {
            builder.build().await.map_err(err)?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
            let device = FsDeviceBuilder::new(dir).with_capacity(disk as usize).build().map_err(err)?;
            let engine = BlockEngineConfig::new(device)
                .with_block_size(BLOCK)
                .with_flushers(2)
                .with_buffer_pool_size(4 * BLOCK)
                .with_tombstone_log(true);
            builder.with_engine_config(engine).with_recover_mode(RecoverMode::Quiet).build().await.map_err(err)?
        };
        Ok(FoyerTier { cache, stats: FoyerStats::default(), memory, disk })
    }

    /// Configured RAM and disk capacities.
    pub fn capacity(&self) -> (u64, u64) {
        (self.memory, self.disk)
    }

    /// Whether the blob may be in the tier (its length record is; may be a false positive).
    pub fn contains(&self, id: &BlobId) -> bool {
        self.cache.contains(&(id.0, LEN))
    }

    /// Insert a blob from a file holding its verified bytes.
    pub fn insert_file(&self, id: &BlobId, file: &File, len: u64) -> Result<(), StoreError> {
        if len == 0 {
            return Ok(());
        }
        self.cache.insert((id.0, LEN), Bytes::copy_from_slice(&len.to_le_bytes()));
        for i in 0..pieces(len) {
            let off = i as u64 * PIECE;
            let mut buf = vec![0u8; PIECE.min(len - off) as usize];
            file.read_exact_at(&mut buf, off).map_err(|e| StoreError::io("read blob for foyer", e))?;
            self.cache.insert((id.0, i), Bytes::from(buf));
        }
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Write the blob's pieces into `file`; its length, or `None` when any piece is missing.
    /// The caller verifies the result against the blob id.
    pub async fn read_into(&self, id: &BlobId, file: &File) -> Result<Option<u64>, StoreError> {
        let len = match self.cache.get(&(id.0, LEN)).await {
            Ok(Some(e)) => e.value().as_ref().try_into().ok().map(u64::from_le_bytes),
            _ => None,
        };
        let Some(len) = len else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        for i in 0..pieces(len) {
            let piece = match self.cache.get(&(id.0, i)).await {
                Ok(Some(e)) => e.value().clone(),
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
                self.remove(id, len);
                return Ok(None);
            }
            file.write_all_at(&piece, off).map_err(|e| StoreError::io("write blob from foyer", e))?;
        }
        Ok(Some(len))
    }

    /// Drop a blob's pieces.
    pub fn remove(&self, id: &BlobId, len: u64) {
        self.cache.remove(&(id.0, LEN));
        for i in 0..pieces(len) {
            self.cache.remove(&(id.0, i));
        }
    }

    /// Flush to disk.
    pub async fn close(&self) {
        if let Err(e) = self.cache.close().await {
            tracing::warn!(error = %e, "closing the foyer cache failed");
        }
    }
}
