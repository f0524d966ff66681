//! The flat tier: one plain, uncompressed file per blob at `<dir>/<aa>/<blake3-hex>`,
//! bounded by bytes (`--flat-size`) and evicted least recently used first (recency survives
//! restarts through the recency files, `recency.rs`, else the files' access times). Which
//! blobs it holds and their order of use are kept in the node's blob catalog (`catalog.rs`),
//! whose entries the tree shares.
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
use crate::tiers::catalog::{Catalog, SharedCatalog};
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
    /// which blobs the tier holds and their order of use, in the node's catalog
    catalog: SharedCatalog,
    limit: AtomicU64,
    /// when the last recency hint was written, and the catalog's count of flat changes then
    hint: Mutex<(std::time::Instant, u64)>,
}

/// How often a recency hint is written while the order changes.
pub const HINT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

impl FlatTier {
    /// Open (creating the fan-out directories) the flat tier in `dir`, with a catalog of its
    /// own.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_in(dir, SharedCatalog::default())
    }

    /// Open the flat tier in `dir`, recording its blobs in `catalog` (which the node's tree
    /// shares: `catalog.rs`).
    pub fn open_in(dir: &Path, catalog: SharedCatalog) -> Result<Self, StoreError> {
        for i in 0..=255u8 {
            let sub = dir.join(hex::encode([i]));
            fs::create_dir_all(&sub).map_err(|e| StoreError::io(format!("create {}", sub.display()), e))?;
        }
        let tier = FlatTier::empty(dir, catalog);
        // after a clean shutdown the recency order is in one file (a million blobs: one read
        // instead of a million stats); after a crash, the last hint reconciled with a listing
        // of the tier; without either, the files' access times, oldest first. A file whose
        // name is no blob id (a leftover of a crashed tool) is removed by either listing.
        let found = match recency::take(dir) {
            Some(recency::Saved { entries, exact: true }) => entries,
            Some(recency::Saved { entries, exact: false }) => tier.reconcile(entries)?,
            None => tier.scan_times()?,
        };
        let mut cat = tier.lock();
        cat.reserve(found.len());
        for (id, size) in found {
            cat.touch(id, Some(size));
        }
        let changes = cat.changes();
        drop(cat);
        *tier.hint.lock().unwrap_or_else(|p| p.into_inner()) = (std::time::Instant::now(), changes);
        Ok(tier)
    }

    fn empty(dir: &Path, catalog: SharedCatalog) -> Self {
        let hint = Mutex::new((std::time::Instant::now(), 0));
        FlatTier { dir: dir.to_path_buf(), catalog, limit: AtomicU64::new(u64::MAX), hint }
    }

    /// The catalog the tier records its blobs in.
    pub fn catalog(&self) -> SharedCatalog {
        self.catalog.clone()
    }

    /// The order of a hint written before a crash, fitted to the files there now: blobs gone
    /// since are dropped, blobs sealed since (stat'ed, by time) are the most recent. Only the
    /// new files are stat'ed.
    fn reconcile(&self, saved: Vec<(BlobId, u64)>) -> Result<Vec<(BlobId, u64)>, StoreError> {
        let mut listed = self.blob_files()?;
        listed.sort_unstable();
        let mut known = vec![false; listed.len()];
        let mut out = Vec::with_capacity(listed.len());
        for (id, size) in saved {
            if let Ok(i) = listed.binary_search(&id) {
                if !std::mem::replace(&mut known[i], true) {
                    out.push((id, size));
                }
            }
        }
        let new = self.by_time(listed.iter().zip(&known).filter(|(_, k)| !**k).map(|(id, _)| *id));
        tracing::info!(hinted = out.len(), new = new.len(), "flat tier order taken from the recency hint written before a crash");
        out.extend(new);
        Ok(out)
    }

    /// Write the recency order for the next open (at a clean shutdown, when nothing changes the
    /// tier any more). A later change to the tier by hand only misstates its byte count until
    /// eviction or a read meets the blob: membership is always read from the files themselves.
    pub fn save_recency(&self) -> Result<(), StoreError> {
        self.save_order(true)
    }

    /// Write the recency hint if [`HINT_EVERY`] has passed since the last one and the order
    /// changed since (a crash then costs a listing of the tier, not a stat per blob). Returns
    /// whether it wrote one.
    pub fn save_hint_if_due(&self) -> Result<bool, StoreError> {
        let (at, changes) = *self.hint.lock().unwrap_or_else(|p| p.into_inner());
        if at.elapsed() < HINT_EVERY || self.lock().changes() == changes {
            return Ok(false);
        }
        self.save_order(false).map(|()| true)
    }

    fn save_order(&self, exact: bool) -> Result<(), StoreError> {
        let (entries, changes) = {
            let cat = self.lock();
            (cat.oldest_first().collect::<Vec<(BlobId, u64)>>(), cat.changes())
        };
        recency::save(&self.dir, &entries, exact).map_err(|e| StoreError::io("write the flat tier's recency file", e))?;
        *self.hint.lock().unwrap_or_else(|p| p.into_inner()) = (std::time::Instant::now(), changes);
        Ok(())
    }

    /// Every blob file with its size, least recently used first (by access or modification
    /// time); other files are removed.
    fn scan_times(&self) -> Result<Vec<(BlobId, u64)>, StoreError> {
        Ok(self.by_time(self.blob_files()?))
    }

    /// The blobs whose files are in the tier; files that are no blob are removed.
    fn blob_files(&self) -> Result<Vec<BlobId>, StoreError> {
        let mut ids = Vec::new();
        for (id, path) in self.scan()? {
            match id {
                Some(id) => ids.push(id),
                None => remove_stray(&path),
            }
        }
        Ok(ids)
    }

    /// `ids` with their sizes, least recently used first by their files' access or
    /// modification times (one stat each; a file gone meanwhile is left out).
    fn by_time(&self, ids: impl IntoIterator<Item = BlobId>) -> Vec<(BlobId, u64)> {
        let mut found = Vec::new();
        for id in ids {
            if let Ok(m) = fs::metadata(self.path(&id)) {
                found.push((m.atime().max(m.mtime()), id, m.len()));
            }
        }
        found.sort();
        found.into_iter().map(|(_, id, size)| (id, size)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock()
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
        self.lock().flat_bytes()
    }

    /// Blobs in the tier.
    pub fn len(&self) -> usize {
        self.lock().flat_len()
    }

    /// Whether the tier holds no blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the blobs among `ids` that the tier holds (each counted once per mention).
    pub fn bytes_of<'a>(&self, ids: impl IntoIterator<Item = &'a BlobId>) -> u64 {
        let cat = self.lock();
        ids.into_iter().filter_map(|id| cat.flat_size(id)).sum()
    }

    /// A read of the blob (recency for eviction).
    pub fn touch(&self, id: &BlobId) {
        self.lock().touch(*id, None);
    }

    /// Least recently used blobs to evict so that the tier fits its bound with 5 % headroom,
    /// skipping those `keep` says must stay (e.g. not yet durable in the object store). `keep`
    /// runs under the catalog's lock: it must not call into the tier or the tree.
    pub fn victims(&self, keep: impl Fn(&BlobId) -> bool) -> Vec<BlobId> {
        let cat = self.lock();
        let limit = self.limit();
        if cat.flat_bytes() <= limit {
            return Vec::new();
        }
        let target = limit - limit / 20;
        let mut excess = cat.flat_bytes() - target;
        let mut out = Vec::new();
        for (id, size) in cat.oldest_first() {
            if excess == 0 {
                break;
            }
            // empty blobs free nothing (and every new file starts bound to the empty blob)
            if size == 0 || keep(&id) {
                continue;
            }
            excess = excess.saturating_sub(size);
            out.push(id);
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
        let mut cat = self.lock();
        if !cat.in_flat(id) {
            // present but untracked (relinked by the local store): count it now
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            cat.touch(*id, Some(size));
        } else {
            cat.touch(*id, None);
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

/// A file in the tier that is no blob (a leftover of a crashed tool).
fn remove_stray(path: &Path) {
    tracing::debug!(path = %path.display(), "removing stray flat file");
    let _ = fs::remove_file(path);
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
        tier.lock().oldest_first().map(|(id, _)| id).collect()
    }

    #[test]
    fn a_clean_reopen_keeps_the_recency_order_and_a_crashed_one_fits_the_hint_to_the_files() {
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
        assert!(!dir.join("recency").exists(), "the exact file is used once");
        // a blob the file does not know is still found, and counted when read
        let late = put(&FlatTier::empty(&dir, SharedCatalog::default()), d.path(), b"late");
        assert!(tier.contains(&late));
        tier.open_blob(&late).unwrap();
        assert_eq!(tier.len(), 6);
        drop(tier);
        // a crash (no exact file): the hint's order, the blob sealed since as the newest, a
        // blob removed since dropped, strays removed by the listing
        fs::remove_file(dir.join(ids[1].fanout()).join(ids[1].to_hex())).unwrap();
        let tier = FlatTier::open(&dir).unwrap();
        let mut hinted: Vec<BlobId> = want.iter().filter(|id| **id != ids[1]).copied().collect();
        hinted.push(late);
        assert_eq!(order(&tier), hinted);
        assert_eq!(tier.bytes(), bytes - 101 + 4);
        assert!(!dir.join("00").join("not-a-blob").exists());
        drop(tier);
        // no file at all: the tier is scanned
        fs::remove_file(dir.join("recency-hint")).unwrap();
        fs::write(dir.join("00").join("not-a-blob"), b"x").unwrap();
        let tier = FlatTier::open(&dir).unwrap();
        assert_eq!(tier.len(), 5);
        assert_eq!(tier.bytes(), bytes - 101 + 4);
        assert!(!dir.join("00").join("not-a-blob").exists());
    }

    #[test]
    fn a_hint_is_written_only_when_due_and_the_order_changed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("flat");
        let tier = FlatTier::open(&dir).unwrap();
        let a = put(&tier, d.path(), b"a");
        assert!(!tier.save_hint_if_due().unwrap(), "not due yet");
        let long_ago = std::time::Instant::now() - HINT_EVERY;
        tier.hint.lock().unwrap().0 = long_ago;
        assert!(tier.save_hint_if_due().unwrap(), "due, and a blob came in");
        assert!(dir.join("recency-hint").exists());
        tier.hint.lock().unwrap().0 = long_ago;
        assert!(!tier.save_hint_if_due().unwrap(), "due, but nothing changed");
        tier.touch(&a);
        assert!(tier.save_hint_if_due().unwrap());
    }
}
