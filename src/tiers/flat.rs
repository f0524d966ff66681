//! The flat tier: one plain, uncompressed file per blob at `<dir>/<aa>/<blake3-hex>`,
//! bounded by bytes (`--flat-size`) and evicted least recently used first (recency survives
//! restarts through the files' access times).
//!
//! Files enter by `rename` from the staging directory (same filesystem), so a blob file is
//! either absent or complete. Backing files are opened with `O_NOFOLLOW`; names are hashes,
//! never user-supplied.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::blob::BlobId;
use crate::tiers::lru::Lru;
use crate::tiers::recency;
use crate::tiers::StoreError;

fn cpath(p: &Path) -> Result<std::ffi::CString, StoreError> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| StoreError::Config(format!("path with NUL: {}", p.display())))
}

/// The flat local tier, bounded by bytes and evicted least recently used first.
#[derive(Debug)]
pub struct FlatTier {
    dir: PathBuf,
    lru: Mutex<Lru>,
    limit: AtomicU64,
}

impl FlatTier {
    /// Open (creating the fan-out directories) the flat tier in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for i in 0..=255u8 {
            let sub = dir.join(hex::encode([i]));
            fs::create_dir_all(&sub).map_err(|e| StoreError::io(format!("create {}", sub.display()), e))?;
        }
        let tier = FlatTier { dir: dir.to_path_buf(), lru: Mutex::new(Lru::default()), limit: AtomicU64::new(u64::MAX) };
        // after a clean shutdown the recency order is in one file (a million blobs: one read
        // instead of a million stats); otherwise the files' access times, oldest first, and a
        // file whose name is no blob id (a leftover of a crashed tool) is removed in the same pass
        let found = match recency::take(dir) {
            Some(found) => found,
            None => tier.scan_times()?,
        };
        let mut lru = tier.lock();
        lru.reserve(found.len());
        for (id, size) in found {
            lru.touch(id, Some(size));
        }
        drop(lru);
        Ok(tier)
    }

    /// Write the recency order for the next open (at a clean shutdown, when nothing changes the
    /// tier any more). A later change to the tier by hand only misstates its byte count until
    /// eviction or a read meets the blob: membership is always read from the files themselves.
    pub fn save_recency(&self) -> Result<(), StoreError> {
        let entries: Vec<(BlobId, u64)> = self.lock().oldest_first().map(|(id, size)| (*id, size)).collect();
        recency::save(&self.dir, &entries).map_err(|e| StoreError::io("write the flat tier's recency file", e))
    }

    /// Every blob file with its size, least recently used first (by access or modification
    /// time); other files are removed.
    fn scan_times(&self) -> Result<Vec<(BlobId, u64)>, StoreError> {
        let mut found = Vec::new();
        for (id, path) in self.scan()? {
            match id {
                Some(id) => {
                    if let Ok(m) = fs::metadata(&path) {
                        found.push((m.atime().max(m.mtime()), id, m.len()));
                    }
                }
                None => {
                    tracing::debug!(path = %path.display(), "removing stray flat file");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, id, size)| (id, size)).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bound the tier to `bytes`.
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// The bound (`u64::MAX` when unbounded).
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes of blobs in the tier.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes()
    }

    /// Blobs in the tier.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the tier holds no blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the blobs `f` selects.
    pub fn bytes_where(&self, f: impl Fn(&BlobId) -> bool) -> u64 {
        self.lock().oldest_first().filter(|(id, _)| f(id)).map(|(_, size)| size).sum()
    }

    /// A read of the blob (recency for eviction).
    pub fn touch(&self, id: &BlobId) {
        self.lock().touch(*id, None);
    }

    /// Least recently used blobs to evict so that the tier fits its bound with 5 % headroom,
    /// skipping those `keep` says must stay (e.g. not yet durable in the object store).
    pub fn victims(&self, keep: impl Fn(&BlobId) -> bool) -> Vec<BlobId> {
        let lru = self.lock();
        let limit = self.limit();
        if lru.bytes() <= limit {
            return Vec::new();
        }
        let target = limit - limit / 20;
        let mut excess = lru.bytes() - target;
        let mut out = Vec::new();
        for (id, size) in lru.oldest_first() {
            if excess == 0 {
                break;
            }
            // empty blobs free nothing (and every new file starts bound to the empty blob)
            if size == 0 || keep(id) {
                continue;
            }
            excess = excess.saturating_sub(size);
            out.push(*id);
        }
        out
    }

    /// Path of a blob's file (which may not exist).
    pub fn path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(id.fanout()).join(id.to_hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.path(id).exists()
    }

    /// Open a blob read-only.
    pub fn open_blob(&self, id: &BlobId) -> Result<File, StoreError> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path(id))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StoreError::NotFound(*id),
                _ => StoreError::io(format!("open flat blob {id}"), e),
            })?;
        let mut lru = self.lock();
        if !lru.contains(id) {
            // present but untracked (relinked by the local store): count it now
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            lru.touch(*id, Some(size));
        } else {
            lru.touch(*id, None);
        }
        Ok(f)
    }

    /// Move a fully written file (already hashed to `id`) into the tier. If the blob is already
    /// present the file is removed instead: identical content is stored once.
    pub fn adopt(&self, src: &Path, id: &BlobId) -> Result<(), StoreError> {
        let dst = self.path(id);
        let size = fs::metadata(src).map(|m| m.len()).unwrap_or(0);
        let (a, b) = (cpath(src)?, cpath(&dst)?);
        // SAFETY: renameat2 with two valid C strings.
        let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_NOREPLACE) };
        if rc == 0 {
            self.lock().touch(*id, Some(size));
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EEXIST) {
            let _ = fs::remove_file(src);
            self.lock().touch(*id, Some(size));
            return Ok(());
        }
        Err(StoreError::io(format!("adopt blob {id}"), err))
    }

    /// fsync a blob's file and its fan-out directory.
    pub fn sync(&self, id: &BlobId) -> Result<(), StoreError> {
        let p = self.path(id);
        let f = File::open(&p).map_err(|e| StoreError::io(format!("open {}", p.display()), e))?;
        f.sync_all().map_err(|e| StoreError::io("fsync blob", e))?;
        if let Some(parent) = p.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io("fsync flat dir", e))?;
        }
        Ok(())
    }

    /// Remove a blob's file (absent is fine).
    pub fn remove(&self, id: &BlobId) -> Result<(), StoreError> {
        self.lock().forget(id);
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("remove flat blob {id}"), e)),
        }
    }

    /// The blobs in the tier for which `f` holds.
    pub fn ids_where(&self, f: impl Fn(&BlobId) -> bool) -> Vec<BlobId> {
        self.lock().oldest_first().map(|(id, _)| id).filter(|id| f(id)).copied().collect()
    }

    /// Every file in the tier: `Some(id)` for well-formed blob names, `None` (with its path) for
    /// anything else, which [`FlatTier::open`] removes.
    fn scan(&self) -> Result<Vec<(Option<BlobId>, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for i in 0..=255u8 {
            let sub = self.dir.join(hex::encode([i]));
            let rd = match fs::read_dir(&sub) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("list {}", sub.display()), e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| StoreError::io("list flat tier", e))?;
                let name = entry.file_name();
                let id = name.to_str().and_then(BlobId::from_hex).filter(|id| id.fanout() == hex::encode([i]));
                out.push((id, entry.path()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(tier: &FlatTier, dir: &Path, bytes: &[u8]) -> BlobId {
        let id = BlobId::of(bytes);
        let src = dir.join("incoming");
        fs::write(&src, bytes).unwrap();
        tier.adopt(&src, &id).unwrap();
        id
    }

    fn order(tier: &FlatTier) -> Vec<BlobId> {
        tier.ids_where(|_| true)
    }

    #[test]
    fn a_clean_reopen_keeps_the_recency_order_and_a_crashed_one_scans() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("flat");
        let tier = FlatTier::open(&dir).unwrap();
        let ids: Vec<BlobId> = (0..5u8).map(|i| put(&tier, d.path(), &vec![i; 100 + i as usize])).collect();
        tier.touch(&ids[0]); // now the most recent
        let want = order(&tier);
        assert_eq!(want.last(), Some(&ids[0]));
        let bytes = tier.bytes();
        tier.save_recency().unwrap();
        drop(tier);
        // a stray file is not looked for on a clean reopen (only a crash leaves one)
        fs::write(dir.join("00").join("not-a-blob"), b"x").unwrap();
        let tier = FlatTier::open(&dir).unwrap();
        assert_eq!(order(&tier), want, "the saved order, not the files' times");
        assert_eq!(tier.bytes(), bytes);
        assert!(!dir.join("recency").exists(), "the file is used once");
        // a blob the file does not know is still found, and counted when read
        let late = put(&FlatTier { dir: dir.clone(), lru: Mutex::new(Lru::default()), limit: AtomicU64::new(u64::MAX) }, d.path(), b"late");
        assert!(tier.contains(&late));
        tier.open_blob(&late).unwrap();
        assert_eq!(tier.len(), 6);
        drop(tier);
        // no recency file (as after a crash): the tier is scanned, strays removed
        let tier = FlatTier::open(&dir).unwrap();
        assert_eq!(tier.len(), 6);
        assert!(!dir.join("00").join("not-a-blob").exists());
    }
}
