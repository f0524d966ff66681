//! The tiered blob store — the embeddable library API.
//!
//! Blobs are immutable and named by their blake3 hash. A blob lives in the flat local tier
//! (`<cache>/flat`) and, once uploaded, in the object store. Reads that miss the flat tier
//! fetch from the object store, verify, and promote into the flat tier.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Runtime::new()?;
//! let dir = std::path::Path::new("/tmp/wombat-lib");
//! let objects = std::sync::Arc::new(wombatfs::tiers::local::LocalStore::open(
//!     &dir.join("objects"), wombatfs::codec::Compression::Auto(1))?);
//! let store = wombatfs::store::BlobStore::open(dir, objects, rt.handle())?;
//! let id = store.put(b"kv block")?;
//! assert_eq!(store.get(&id)?, b"kv block");
//! # Ok(()) }
//! ```

pub mod evict;
pub mod upload;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::blob::BlobId;
use crate::tiers::flat::FlatTier;
use crate::tiers::{ObjectStore, StoreError};
use upload::{Job, UploadCtx, UploadStats, UploadedHook};

/// An open blob: a local file, or a download readable as it progresses.
#[derive(Clone)]
pub enum BlobReader {
    /// in the flat tier
    Local(Arc<File>),
    /// being fetched from the object store
    Fetching(Arc<crate::tiers::fetch::Fetch>),
}

impl BlobReader {
    /// The file to `pread`.
    pub fn file(&self) -> &Arc<File> {
        match self {
            BlobReader::Local(f) => f,
            BlobReader::Fetching(f) => &f.file,
        }
    }

    /// Block until `[offset, offset+len)` is readable (verified).
    pub fn wait(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        match self {
            BlobReader::Local(_) => Ok(()),
            BlobReader::Fetching(f) => f.wait(offset, len),
        }
    }

    /// Whether `[offset, offset+len)` is readable without waiting.
    pub fn ready(&self, offset: u64, len: u64) -> bool {
        match self {
            BlobReader::Local(_) => true,
            BlobReader::Fetching(f) => f.ready(offset, len),
        }
    }

    /// Whether this reader can no longer serve (its download failed).
    pub fn failed(&self) -> bool {
        matches!(self, BlobReader::Fetching(f) if f.failed())
    }
}

/// A blob kept in the flat tier until dropped (see [`BlobStore::adopt`]).
pub struct Pinned<'a> {
    store: &'a BlobStore,
    id: BlobId,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.store.unpin(&self.id);
        self.store.maybe_evict();
    }
}

/// Flat tier + object store + upload queue.
pub struct BlobStore {
    flat: Arc<FlatTier>,
    staging: PathBuf,
    objects: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
    jobs: mpsc::UnboundedSender<Job>,
    ctx: Arc<UploadCtx>,
    sync_uploads: bool,
    fetches: Arc<dashmap::DashMap<BlobId, std::sync::Weak<crate::tiers::fetch::Fetch>>>,
    /// bounds, eviction and the foyer tier (shared with background tasks)
    local: Arc<evict::LocalTiers>,
}

impl BlobStore {
    /// Open the store: flat tier in `<cache>/flat`, staging in `<cache>/staging` (emptied: files
    /// of writes that never completed are not resurrected).
    pub fn open(cache: &Path, objects: Arc<dyn ObjectStore>, rt: &tokio::runtime::Handle) -> Result<Self, StoreError> {
        let flat = Arc::new(FlatTier::open(&cache.join("flat"))?);
        let staging = cache.join("staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| StoreError::io("clear staging", e))?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| StoreError::io("create staging", e))?;
        let flat2 = flat.clone();
        let ctx = Arc::new(UploadCtx {
            objects: objects.clone(),
            flat_path: Box::new(move |id| flat2.path(id)),
            hook: std::sync::OnceLock::new(),
            stats: Arc::new(UploadStats::default()),
            queued: Default::default(),
        });
        let local = Arc::new(evict::LocalTiers::new(flat.clone(), ctx.clone(), rt.clone()));
        let (jobs, rx) = mpsc::unbounded_channel();
        rt.spawn(upload::run(ctx.clone(), rx));
        Ok(BlobStore { flat, staging, objects, rt: rt.clone(), jobs, ctx, sync_uploads: false, fetches: Default::default(), local })
    }

    /// Make seals wait until the object store acknowledged the blob (`--upload sync`).
    pub fn with_sync_uploads(mut self, on: bool) -> Self {
        self.sync_uploads = on;
        self
    }

    /// Set the function called when a blob became durable in the object store (once).
    pub fn set_uploaded_hook(&self, hook: UploadedHook) {
        let _ = self.ctx.hook.set(hook);
    }

    /// The flat tier.
    pub fn flat(&self) -> &FlatTier {
        &self.flat
    }

    /// The object store.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// Run a future of the store's runtime to completion. Must not be called from inside it.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Upload queue counters.
    pub fn upload_stats(&self) -> &UploadStats {
        &self.ctx.stats
    }

    /// Create a new, empty staging file.
    pub fn new_staging(&self) -> Result<(File, PathBuf), StoreError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self.staging.join(format!("{}-{n}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create staging file", e))?;
        Ok((f, path))
    }

    /// Move a staging file whose content hashes to `id` into the flat tier.
    /// The blob stays pinned in the flat tier (never evicted) while the returned guard
    /// lives: hold it until the blob is recorded and its upload queued.
    pub fn adopt(&self, staging: &Path, id: &BlobId) -> Result<Pinned<'_>, StoreError> {
        self.pin(id);
        let guard = Pinned { store: self, id: *id };
        self.flat.adopt(staging, id)?;
        Ok(guard)
    }

    /// Store a blob in the object store right now when that is a cheap local operation.
    /// Returns false when the caller must persist an upload intent and queue it instead.
    pub fn put_now(&self, id: &BlobId) -> bool {
        match self.objects.put_blob_now(id, &self.flat.path(id)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::warn!(%id, error = %e, "synchronous put failed; queueing the upload");
                false
            }
            None => false,
        }
    }

    /// Queue a blob for upload (the caller has persisted the intent).
    pub fn enqueue_upload(&self, id: BlobId) {
        self.ctx.queue(id);
        let _ = self.jobs.send(Job::Upload(id));
    }

    /// The foyer tier, if configured.
    pub fn foyer(&self) -> Option<&Arc<crate::tiers::foyer::FoyerTier>> {
        self.local.foyer.get()
    }

    /// Put the foyer tier between the flat tier and the object store.
    pub fn set_foyer(&self, f: Arc<crate::tiers::foyer::FoyerTier>) {
        let _ = self.local.foyer.set(f);
    }

    /// Counters and bounds of the local tiers.
    pub fn local(&self) -> &Arc<evict::LocalTiers> {
        &self.local
    }

    /// Keep a just-adopted blob in the flat tier until its upload is queued.
    pub fn pin(&self, id: &BlobId) {
        self.local.pin(id);
    }

    /// Release `pin`.
    pub fn unpin(&self, id: &BlobId) {
        self.local.unpin(id);
    }

    /// Evict from the flat tier in the background if it is over its bound.
    pub fn maybe_evict(&self) {
        self.local.maybe_evict();
    }

    /// Whether an upload of the blob is queued or in flight (not yet durable in the store).
    pub fn upload_pending(&self, id: &BlobId) -> bool {
        self.ctx.queued.contains_key(id)
    }

    /// A blob no name on this node refers to any more: remove its flat file. The object is
    /// deleted too when the store is this node's private local directory; a remote bucket may
    /// be shared with other nodes whose names still refer to the blob, so its objects are left
    /// for a cross-node collector with a grace period (never deleted on one node's say-so).
    pub fn reclaim(&self, id: BlobId, size: u64) -> Result<(), StoreError> {
        self.flat.remove(&id)?;
        if let Some(f) = self.foyer() {
            f.remove(&id, size);
        }
        match self.objects.delete_blob_now(&id) {
            Some(res) => res,
            None => Ok(()),
        }
    }

    /// Whether seals wait for the object store (`--upload sync`).
    pub fn sync_uploads(&self) -> bool {
        self.sync_uploads
    }

    /// `--upload sync`: store a sealed staging file in the object store before the seal
    /// publishes it. Must not be called from inside the runtime.
    pub fn upload_now(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        match self.objects.put_blob_now(id, src) {
            Some(res) => res,
            None => self.rt.block_on(self.objects.put_blob(id, src)),
        }
    }

    /// Wait until every queued upload/delete was attempted to completion, at most `timeout`.
    /// Returns false on timeout. Must not be called from inside the runtime.
    pub fn drain(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Drain(tx)).is_err() {
            return true;
        }
        self.rt.block_on(async { tokio::time::timeout(timeout, rx).await.is_ok() })
    }

    /// Open a blob for reading from the nearest tier, fetching and promoting it into the flat
    /// tier when it is only in the object store. Must not be called from inside the runtime.
    pub fn open_blob(&self, id: &BlobId) -> Result<File, StoreError> {
        match self.flat.open_blob(id) {
            Err(StoreError::NotFound(_)) => {}
            other => return other,
        }
        let (f, tmp) = self.new_staging()?;
        if self.rt.block_on(self.local.from_foyer(id, None, &f)) {
            self.flat.adopt(&tmp, id)?;
            self.maybe_evict();
            return self.flat.open_blob(id);
        }
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        self.local.object_gets.fetch_add(1, Ordering::Relaxed);
        let fetched = self.rt.block_on(self.objects.get_blob(id, &tmp));
        if let Err(e) = fetched {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.flat.adopt(&tmp, id)?;
        self.local.admit(id);
        self.maybe_evict();
        self.flat.open_blob(id)
    }

    /// Open a blob of `len` bytes for reading without waiting for the network: a flat-tier
    /// file, or a download (started here, or joined if one is running) whose parts become
    /// readable as they arrive verified; complete downloads are adopted into the flat tier.
    pub fn open_reader(&self, id: &BlobId, len: u64) -> Result<BlobReader, StoreError> {
        match self.flat.open_blob(id) {
            Ok(f) => return Ok(BlobReader::Local(Arc::new(f))),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if self.objects.is_local() {
            // same disk: hard-link the object back into the flat tier, no copy, no download
            return self.open_blob(id).map(|f| BlobReader::Local(Arc::new(f)));
        }
        if let Some(f) = self.fetches.get(id).and_then(|w| w.upgrade()).filter(|f| !f.failed()) {
            return Ok(BlobReader::Fetching(f));
        }
        let (file, tmp) = self.new_staging()?;
        let fetch = crate::tiers::fetch::Fetch::create(*id, len, file, tmp)?;
        self.fetches.insert(*id, Arc::downgrade(&fetch));
        let (objects, flat, fetches, job, id) = (self.objects.clone(), self.flat.clone(), self.fetches.clone(), fetch.clone(), *id);
        let local = self.local.clone();
        self.rt.spawn(async move {
            let from_foyer = local.from_foyer(&id, Some(&job), &job.file).await;
            let res = if from_foyer {
                Ok(())
            } else {
                local.object_gets.fetch_add(1, Ordering::Relaxed);
                objects.fetch_into(&id, &job).await
            };
            match res {
                Ok(()) => {
                    if let Err(e) = flat.adopt(&job.path, &id) {
                        tracing::warn!(%id, error = %e, "could not promote a fetched blob into the flat tier");
                    } else {
                        if !from_foyer {
                            local.admit(&id);
                        }
                        local.maybe_evict();
                    }
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "fetching a blob from the object store failed");
                    job.fail(e.to_string());
                    let _ = std::fs::remove_file(&job.path);
                }
            }
            fetches.remove_if(&id, |_, w| w.as_ptr() == Arc::as_ptr(&job));
        });
        Ok(BlobReader::Fetching(fetch))
    }

    /// Which tier holds the blob nearest to the reader: `flat` or the object store.
    pub fn tier_of(&self, id: &BlobId) -> &'static str {
        if self.flat.contains(id) {
            "flat"
        } else if self.foyer().is_some_and(|f| f.contains(id)) {
            "foyer"
        } else {
            "store"
        }
    }

    /// Library API: store bytes, returning their id. Durable in the object store on return.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobId, StoreError> {
        let id = BlobId::of(bytes);
        self.pin(&id);
        let res = (|| {
            if !self.flat.contains(&id) {
                let (mut f, path) = self.new_staging()?;
                f.write_all(bytes).map_err(|e| StoreError::io("write staging", e))?;
                self.flat.adopt(&path, &id)?;
            }
            self.rt.block_on(self.objects.put_blob(&id, &self.flat.path(&id)))
        })();
        self.unpin(&id);
        self.maybe_evict();
        res.map(|()| id)
    }

    /// Library API: read a blob's bytes (verified when fetched from the object store).
    pub fn get(&self, id: &BlobId) -> Result<Vec<u8>, StoreError> {
        let mut f = self.open_blob(id)?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut out).map_err(|e| StoreError::io("read blob", e))?;
        Ok(out)
    }

    /// Library API: whether the blob exists in any tier.
    pub fn exists(&self, id: &BlobId) -> Result<bool, StoreError> {
        Ok(self.flat.contains(id) || self.rt.block_on(self.objects.has_blob(id))?)
    }

    /// Library API: every blob in the object store.
    pub fn list(&self) -> Result<Vec<BlobId>, StoreError> {
        self.rt.block_on(self.objects.list_blobs())
    }

    /// Library API: delete a blob from every tier.
    pub fn delete(&self, id: &BlobId) -> Result<(), StoreError> {
        self.flat.remove(id)?;
        self.rt.block_on(self.objects.delete_blob(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::memory::MemoryStore;

    #[test]
    fn put_get_evict_refetch_and_corruption() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::new());
        let store = BlobStore::open(dir.path(), mem.clone(), rt.handle()).unwrap();
        let id = store.put(b"hello kv").unwrap();
        assert!(store.exists(&id).unwrap());
        assert_eq!(store.list().unwrap(), vec![id]);
        // drop the local copy: the next read comes from the object store and is promoted
        store.flat().remove(&id).unwrap();
        assert_eq!(store.tier_of(&id), "store");
        assert_eq!(store.get(&id).unwrap(), b"hello kv");
        assert_eq!(store.tier_of(&id), "flat");
        assert_eq!(store.local().object_gets.load(Ordering::Relaxed), 1);
        // corrupt object: detected, not served
        store.flat().remove(&id).unwrap();
        mem.overwrite(&id, crate::codec::encode(b"other bytes", crate::codec::Compression::None));
        assert!(matches!(store.get(&id), Err(StoreError::Corrupt { .. })));
        assert!(!store.flat().contains(&id));
        store.delete(&id).unwrap();
        assert!(!store.exists(&id).unwrap());
    }

    #[test]
    fn reclaim_never_deletes_from_a_shared_remote_store() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::new());
        let store = BlobStore::open(dir.path(), mem.clone(), rt.handle()).unwrap();
        let id = store.put(b"shared block").unwrap();
        store.reclaim(id, 0).unwrap();
        assert!(!store.flat().contains(&id), "the local copy goes");
        assert_eq!(mem.len(), 1, "the bucket keeps it: other nodes may still refer to it");
    }

    #[test]
    fn upload_queue_retries_until_success() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::new());
        let store = BlobStore::open(dir.path(), mem.clone(), rt.handle()).unwrap();
        let done = Arc::new(std::sync::Mutex::new(Vec::new()));
        let d2 = done.clone();
        store.set_uploaded_hook(Arc::new(move |id| d2.lock().unwrap().push(id)));
        let (mut f, p) = store.new_staging().unwrap();
        f.write_all(b"queued").unwrap();
        let id = BlobId::of(b"queued");
        store.adopt(&p, &id).unwrap();
        mem.fail_next(2);
        store.enqueue_upload(id);
        assert!(store.drain(Duration::from_secs(10)));
        assert_eq!(*done.lock().unwrap(), vec![id]);
        assert_eq!(mem.len(), 1);
        assert_eq!(store.upload_stats().failures.load(Ordering::Relaxed), 2);
        assert_eq!(store.upload_stats().pending.load(Ordering::Relaxed), 0);
    }
}
