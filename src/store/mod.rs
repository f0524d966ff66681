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
pub mod read_path;
pub mod staging;
pub mod upload;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::blob::BlobId;
use crate::tiers::flat::FlatTier;
use crate::tiers::foyer::FoyerTier;
use crate::tiers::{ObjectStore, StoreError};
pub use read_path::BlobReader;
use evict::Eviction;
use read_path::ReadPath;
use staging::Staging;
use upload::{Job, UploadCtx, UploadStats, UploadedHook};

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

/// How a blob store is put together, beyond its cache dir and object store.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// seals wait until the object store acknowledged the blob (`--upload sync`)
    pub sync_uploads: bool,
    /// the foyer tier between the flat tier and the object store
    pub foyer: Option<Arc<FoyerTier>>,
    /// the longest wait for the object store: a reader without progress for this long, and a
    /// `sync` close waiting for its change journal, fail (`--store-timeout`); `None`: 30 s for
    /// the journal, readers unbounded
    pub store_timeout: Option<Duration>,
}

/// Flat tier + object store + upload queue.
pub struct BlobStore {
    flat: Arc<FlatTier>,
    staging: Arc<Staging>,
    objects: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
    jobs: mpsc::UnboundedSender<Job>,
    ctx: Arc<UploadCtx>,
    sync_uploads: bool,
    read: Arc<ReadPath>,
    eviction: Arc<Eviction>,
    wait_limit: Duration,
}

impl BlobStore {
    /// Open the store with default options: flat tier in `<cache>/flat`, staging in
    /// `<cache>/staging` (emptied: files of writes that never completed are not resurrected).
    pub fn open(cache: &Path, objects: Arc<dyn ObjectStore>, rt: &tokio::runtime::Handle) -> Result<Self, StoreError> {
        Self::open_with(cache, objects, rt, StoreOptions::default())
    }

    /// Open the store with `opts`.
    pub fn open_with(cache: &Path, objects: Arc<dyn ObjectStore>, rt: &tokio::runtime::Handle, opts: StoreOptions) -> Result<Self, StoreError> {
        let flat = Arc::new(FlatTier::open(&cache.join("flat"))?);
        let staging = Arc::new(Staging::open(&cache.join("staging"))?);
        let ctx = Arc::new(UploadCtx {
            objects: objects.clone(),
            flat: flat.clone(),
            hook: std::sync::OnceLock::new(),
            stats: Arc::new(UploadStats::default()),
            queued: Default::default(),
            deferred: Default::default(),
            waiting: Default::default(),
            next_job: Default::default(),
        });
        let read = Arc::new(ReadPath::new(flat.clone(), opts.foyer.clone(), objects.clone(), staging.clone(), rt.clone(), opts.store_timeout));
        let eviction = Arc::new(Eviction::new(flat.clone(), opts.foyer, ctx.clone(), rt.clone()));
        let (jobs, rx) = mpsc::unbounded_channel();
        rt.spawn(upload::run(ctx.clone(), rx));
        let wait_limit = opts.store_timeout.unwrap_or(Duration::from_secs(30));
        Ok(BlobStore { flat, staging, objects, rt: rt.clone(), jobs, ctx, sync_uploads: opts.sync_uploads, read, eviction, wait_limit })
    }

    /// Set the function called when a blob became durable in the object store. A store has
    /// one owner that records finished uploads: a second one is refused, not ignored.
    pub fn set_uploaded_hook(&self, hook: UploadedHook) -> Result<(), StoreError> {
        self.ctx.hook.set(hook).map_err(|_| StoreError::Config("this blob store already reports its finished uploads to another owner (one filesystem per store)".into()))
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

    /// The upload queue now: blobs, bytes, age of the oldest.
    pub fn upload_queue(&self) -> upload::QueueState {
        self.ctx.state()
    }

    /// Create a new, empty staging file.
    pub fn new_staging(&self) -> Result<(File, PathBuf), StoreError> {
        self.staging.create()
    }

    /// A new staging file with a snapshot of the first `len` bytes of `src`
    /// ([`staging::Staging::copy_of`]).
    pub fn staging_copy(&self, src: &File, len: u64) -> Result<(File, PathBuf), StoreError> {
        self.staging.copy_of(src, len)
    }

    /// Move a staging file whose content hashes to `id` into the flat tier.
    /// The blob stays pinned in the flat tier (never evicted) while the returned guard
    /// lives: hold it until the blob is recorded and its upload queued.
    pub fn adopt(&self, staging: &Path, id: &BlobId) -> Result<Pinned<'_>, StoreError> {
        self.pin(id);
        // the same content may be waiting to be reclaimed after its upload: it is wanted again
        self.ctx.cancel_reclaim(id);
        let guard = Pinned { store: self, id: *id };
        self.flat.adopt(staging, id)?;
        Ok(guard)
    }

    /// Put a blob another node carried in a journal batch into the flat tier (the caller
    /// checked its bytes hash to `id`), pinned while the guard lives; `None` when the flat
    /// tier has it already.
    pub fn adopt_bytes(&self, id: &BlobId, bytes: &[u8]) -> Result<Option<Pinned<'_>>, StoreError> {
        if self.flat.contains(id) {
            return Ok(None);
        }
        let (mut f, path) = self.new_staging()?;
        std::io::Write::write_all(&mut f, bytes).map_err(|e| StoreError::io("write a carried blob", e))?;
        drop(f);
        self.adopt(&path, id).map(Some)
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
        let seq = self.ctx.queue(id);
        let _ = self.jobs.send(Job::Upload(id, seq));
    }

    /// The foyer tier, if configured.
    pub fn foyer(&self) -> Option<&Arc<FoyerTier>> {
        self.read.foyer()
    }

    /// The walk down the tiers (and its counters).
    pub fn read_path(&self) -> &Arc<ReadPath> {
        &self.read
    }

    /// The flat tier's eviction (and its counters).
    pub fn eviction(&self) -> &Arc<Eviction> {
        &self.eviction
    }

    /// Keep a just-adopted blob in the flat tier until its upload is queued.
    pub fn pin(&self, id: &BlobId) {
        self.eviction.pin(id);
    }

    /// Release `pin`.
    pub fn unpin(&self, id: &BlobId) {
        self.eviction.unpin(id);
    }

    /// Evict from the flat tier in the background if it is over its bound.
    pub fn maybe_evict(&self) {
        self.eviction.maybe_evict();
    }

    /// Whether an upload of the blob is queued or in flight (not yet durable in the store).
    pub fn upload_pending(&self, id: &BlobId) -> bool {
        self.ctx.queued.contains_key(id)
    }

    /// A blob no name on this node refers to any more: remove its flat file. The object is
    /// deleted too when the store is this node's private local directory; a remote bucket may
    /// be shared with other nodes whose names still refer to the blob, so its objects are left
    /// for a cross-node collector with a grace period (never deleted on one node's say-so).
    ///
    /// A blob whose upload is still queued keeps its flat file until the upload is done: a
    /// change not yet published may name it, and the nodes applying the journal up to that
    /// change must find it in the bucket.
    ///
    /// A pinned blob is left alone: a seal adopted the same content and is about to name it
    /// again (it adopts before it takes the tree lock). If that seal gives up instead, the
    /// files stay unreferenced until the next mount removes the flat one.
    pub fn reclaim(&self, id: BlobId, size: u64) -> Result<(), StoreError> {
        if self.eviction.is_pinned(&id) {
            return Ok(());
        }
        if let Some(f) = self.foyer() {
            f.remove(&id, size);
        }
        if self.ctx.defer_reclaim(&id) {
            return Ok(());
        }
        self.flat.remove(&id)?;
        match self.objects.delete_blob_now(&id) {
            Some(res) => res,
            None => Ok(()),
        }
    }

    /// The longest a writer waits for the object store (`--store-timeout`).
    pub fn wait_limit(&self) -> Duration {
        self.wait_limit
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
    /// tier when it is only in foyer or the object store. Must not be called from inside the
    /// runtime.
    pub fn open_blob(&self, id: &BlobId) -> Result<File, StoreError> {
        let f = self.read.open_blob(id)?;
        self.maybe_evict();
        Ok(f)
    }

    /// Bring a blob that foyer holds into the flat tier, waiting for foyer's disk but never
    /// for the object store (see [`ReadPath::adopt_from_foyer`]); the flat tier's bound is
    /// enforced after. Must not be called from inside the runtime.
    pub fn adopt_from_foyer(&self, id: &BlobId) -> Result<bool, StoreError> {
        let adopted = self.read.adopt_from_foyer(id)?;
        if adopted {
            self.maybe_evict();
        }
        Ok(adopted)
    }

    /// Open a blob of `len` bytes for reading without waiting for the network (see
    /// [`ReadPath::open_reader`]); the flat tier's bound is enforced after a promotion.
    pub fn open_reader(&self, id: &BlobId, len: u64) -> Result<BlobReader, StoreError> {
        let eviction = self.eviction.clone();
        self.read.open_reader(id, len, move || eviction.maybe_evict())
    }

    /// Which tier holds the blob nearest to the reader: `flat`, `foyer` or `store`.
    pub fn tier_of(&self, id: &BlobId) -> &'static str {
        self.read.tier_of(id)
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
    use std::sync::atomic::Ordering;
    use crate::tiers::memory::MemoryStore;

    /// A store on an in-memory object store, with the runtime and cache dir it needs (fields
    /// drop in order: the store first).
    struct Fixture {
        store: BlobStore,
        mem: Arc<MemoryStore>,
        _dir: tempfile::TempDir,
        _rt: tokio::runtime::Runtime,
    }

    impl Fixture {
        fn new() -> Self {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mem = Arc::new(MemoryStore::new());
            let store = BlobStore::open(dir.path(), mem.clone(), rt.handle()).unwrap();
            Fixture { store, mem, _dir: dir, _rt: rt }
        }
    }

    /// Write `bytes` to a staging file and adopt it into the flat tier (unpinned again at once).
    fn adopt(store: &BlobStore, bytes: &[u8]) -> BlobId {
        let (mut f, p) = store.new_staging().unwrap();
        f.write_all(bytes).unwrap();
        let id = BlobId::of(bytes);
        store.adopt(&p, &id).unwrap();
        id
    }

    #[test]
    fn put_get_evict_refetch_and_corruption() {
        let Fixture { store, mem, .. } = &Fixture::new();
        let id = store.put(b"hello kv").unwrap();
        assert!(store.exists(&id).unwrap());
        assert_eq!(store.list().unwrap(), vec![id]);
        // drop the local copy: the next read comes from the object store and is promoted
        store.flat().remove(&id).unwrap();
        assert_eq!(store.tier_of(&id), "store");
        assert_eq!(store.get(&id).unwrap(), b"hello kv");
        assert_eq!(store.tier_of(&id), "flat");
        assert_eq!(store.read_path().object_gets.load(Ordering::Relaxed), 1);
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
        let Fixture { store, mem, .. } = &Fixture::new();
        let id = store.put(b"shared block").unwrap();
        store.reclaim(id, 0).unwrap();
        assert!(!store.flat().contains(&id), "the local copy goes");
        assert_eq!(mem.len(), 1, "the bucket keeps it: other nodes may still refer to it");
    }

    #[test]
    fn unevictable_bytes_are_the_pinned_and_queued_blobs_in_the_flat_tier_each_once() {
        let Fixture { store, mem, .. } = &Fixture::new();
        let (a, b, _free) = (adopt(store, b"pinned"), adopt(store, b"queued and pinned"), adopt(store, b"evictable"));
        let bytes = || store.eviction().unevictable_bytes();
        assert_eq!(bytes(), 0);
        store.pin(&a);
        assert_eq!(bytes(), 6);
        // every upload attempt fails for now: the blob stays queued
        mem.fail_next(u32::MAX);
        store.enqueue_upload(b);
        store.pin(&b);
        assert_eq!(bytes(), 6 + 17, "a blob both pinned and queued counts once");
        store.unpin(&a);
        store.unpin(&b);
        assert_eq!(bytes(), 17);
        mem.fail_next(0);
        assert!(store.drain(Duration::from_secs(30)));
        assert_eq!(bytes(), 0, "uploaded: evictable");
    }

    #[test]
    fn upload_queue_retries_until_success() {
        let Fixture { store, mem, .. } = &Fixture::new();
        let done = Arc::new(std::sync::Mutex::new(Vec::new()));
        let d2 = done.clone();
        store.set_uploaded_hook(Arc::new(move |id| d2.lock().unwrap().push(id))).unwrap();
        assert!(store.set_uploaded_hook(Arc::new(|_| {})).is_err(), "a second owner is refused");
        let id = adopt(store, b"queued");
        mem.fail_next(2);
        store.enqueue_upload(id);
        assert!(store.drain(Duration::from_secs(10)));
        assert_eq!(*done.lock().unwrap(), vec![id]);
        assert_eq!(mem.len(), 1);
        assert_eq!(store.upload_stats().failures.load(Ordering::Relaxed), 2);
        assert_eq!(store.upload_stats().pending.load(Ordering::Relaxed), 0);
    }
}
