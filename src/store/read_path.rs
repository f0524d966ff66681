//! The read path: find a blob in the tiers top to bottom — flat, foyer, object store — and
//! promote it on the way back. Nothing else walks the tiers.
//!
//! - **flat** (`<cache>/flat`): a hit is a file to `pread`.
//! - **foyer** (RAM + SSD, remote stores only): a flat miss asks foyer first; each piece is
//!   verified against the blob's proof table (itself checked against the blob id) and readable
//!   as it arrives (`FoyerTier::read_into`; entries without a table are verified whole first);
//!   a mismatch drops the blob from foyer and falls through.
//! - **object store**: streamed into a staging file, each chunk readable once verified
//!   ([`Fetch`]); a local store hard-links the object back instead (same disk, no copy).
//!
//! A blob that came up from foyer or the object store is adopted into the flat tier. It enters
//! foyer only when the flat tier evicts it ([`super::evict`]: foyer is the flat tier's victim
//! cache), not when it arrives: an admission copies the whole blob, and on the reader's path it
//! competed with the reader for the CPU and the disk (a quarter of a cold read's throughput),
//! and it would keep every fetched blob twice on local disk while both tiers hold it.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tracing::Instrument;

use crate::blob::BlobId;
use crate::store::staging::Staging;
use crate::tiers::fetch::{Fetch, StallLimit};
use crate::tiers::flat::FlatTier;
use crate::tiers::foyer::FoyerTier;
use crate::tiers::{ObjectStore, StoreError};

/// An open blob: a local file, or a download readable as it progresses.
#[derive(Clone)]
pub enum BlobReader {
    /// in the flat tier
    Local(Arc<File>),
    /// being fetched from the object store
    Fetching(Arc<Fetch>),
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

/// The walk down the tiers, with the downloads in flight.
pub struct ReadPath {
    flat: Arc<FlatTier>,
    foyer: Option<Arc<FoyerTier>>,
    objects: Arc<dyn ObjectStore>,
    staging: Arc<Staging>,
    rt: tokio::runtime::Handle,
    /// one download per blob: later readers join it
    fetches: DashMap<BlobId, Weak<Fetch>>,
    /// flat-tier misses served by the object store (GETs of blobs)
    pub object_gets: AtomicU64,
    /// how long a reader waits for the object store without progress
    stall_limit: Option<Duration>,
    /// reads that gave up waiting for the object store (`--store-timeout`)
    pub store_timeouts: Arc<AtomicU64>,
}

impl ReadPath {
    pub(crate) fn new(flat: Arc<FlatTier>, foyer: Option<Arc<FoyerTier>>, objects: Arc<dyn ObjectStore>, staging: Arc<Staging>, rt: tokio::runtime::Handle, stall_limit: Option<Duration>) -> Self {
        let (object_gets, store_timeouts) = (AtomicU64::new(0), Arc::new(AtomicU64::new(0)));
        ReadPath { flat, foyer, objects, staging, rt, fetches: DashMap::new(), object_gets, stall_limit, store_timeouts }
    }

    /// The foyer tier, if configured.
    pub fn foyer(&self) -> Option<&Arc<FoyerTier>> {
        self.foyer.as_ref()
    }

    /// Which tier holds the blob nearest to the reader: `flat`, `foyer` or `store`.
    pub fn tier_of(&self, id: &BlobId) -> &'static str {
        if self.flat.contains(id) {
            "flat"
        } else if self.foyer.as_ref().is_some_and(|f| f.contains(id)) {
            "foyer"
        } else {
            "store"
        }
    }

    /// Open a blob whole, waiting for foyer or the object store on a flat miss and promoting
    /// it. Must not be called from inside the runtime.
    pub fn open_blob(&self, id: &BlobId) -> Result<File, StoreError> {
        match self.open_flat(id) {
            Err(StoreError::NotFound(_)) => {}
            other => return other,
        }
        let (f, tmp) = self.staging.create()?;
        if self.adopt_staged_from_foyer(id, &f, &tmp)? {
            return self.flat.open_blob(id);
        }
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        self.object_gets.fetch_add(1, Ordering::Relaxed);
        match self.rt.block_on(self.objects.get_blob(id, &tmp)) {
            Ok(n) => {
                crate::metrics::get().tier_served("object_store", n);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.note_timeout(&e);
                return Err(e);
            }
        }
        self.flat.adopt(&tmp, id)?;
        self.flat.open_blob(id)
    }

    /// Bring a blob that foyer holds into the flat tier, waiting for foyer's disk but never
    /// for the object store; false when foyer does not have it (whole and verified). Must not
    /// be called from inside the runtime.
    pub fn adopt_from_foyer(&self, id: &BlobId) -> Result<bool, StoreError> {
        let (f, tmp) = self.staging.create()?;
        let adopted = self.adopt_staged_from_foyer(id, &f, &tmp);
        if !matches!(adopted, Ok(true)) {
            let _ = std::fs::remove_file(&tmp);
        }
        adopted
    }

    /// Fill the staging file `f` at `tmp` from foyer and adopt it; false (the file left to
    /// the caller) when foyer does not have the blob.
    fn adopt_staged_from_foyer(&self, id: &BlobId, f: &File, tmp: &std::path::Path) -> Result<bool, StoreError> {
        if !self.rt.block_on(self.read_foyer(id, None, f)) {
            return Ok(false);
        }
        self.flat.adopt(tmp, id)?;
        Ok(true)
    }

    /// Open a blob of `len` bytes without waiting for the network: a flat-tier file, or a
    /// download (started here, or joined if one is running) whose parts become readable as
    /// they arrive verified; a complete download is adopted into the flat tier. `promoted` runs
    /// after a blob was adopted (the caller's bounds may need enforcing).
    pub fn open_reader(self: &Arc<Self>, id: &BlobId, len: u64, promoted: impl FnOnce() + Send + 'static) -> Result<BlobReader, StoreError> {
        match self.open_flat(id) {
            Ok(f) => return Ok(BlobReader::Local(Arc::new(f))),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if self.objects.is_local() {
            // same disk: hard-link the object back into the flat tier, no copy, no download
            let f = self.open_blob(id)?;
            promoted();
            return Ok(BlobReader::Local(Arc::new(f)));
        }
        if let Some(f) = self.fetches.get(id).and_then(|w| w.upgrade()).filter(|f| !f.failed() && !f.stalled()) {
            return Ok(BlobReader::Fetching(f));
        }
        let (file, tmp) = self.staging.create()?;
        let limit = self.stall_limit.map(|limit| StallLimit { limit, timeouts: self.store_timeouts.clone() });
        let fetch = Fetch::create(*id, len, file, tmp, limit)?;
        self.fetches.insert(*id, Arc::downgrade(&fetch));
        // the download logs under the request that started it
        let (me, job, id) = (self.clone(), fetch.clone(), *id);
        self.rt.spawn(async move {
            let from_foyer = me.read_foyer(&id, Some(&job), &job.file).await;
            let res = if from_foyer {
                Ok(())
            } else {
                me.object_gets.fetch_add(1, Ordering::Relaxed);
                me.objects.fetch_into(&id, &job).await
            };
            if res.is_ok() && !from_foyer {
                crate::metrics::get().tier_served("object_store", job.len);
            }
            match res {
                Ok(()) => match me.flat.adopt(&job.path, &id) {
                    Ok(()) => promoted(),
                    Err(e) => tracing::warn!(%id, error = %e, "could not promote a fetched blob into the flat tier"),
                },
                Err(e) => {
                    tracing::warn!(%id, error = %e, "fetching a blob from the object store failed");
                    me.note_timeout(&e);
                    job.fail(e.to_string());
                    let _ = std::fs::remove_file(&job.path);
                }
            }
            me.fetches.remove_if(&id, |_, w| w.as_ptr() == Arc::as_ptr(&job));
        }.instrument(tracing::Span::current()));
        Ok(BlobReader::Fetching(fetch))
    }

    /// The flat tier's file of a blob, counted as a flat hit or miss.
    fn open_flat(&self, id: &BlobId) -> Result<File, StoreError> {
        let res = self.flat.open_blob(id);
        match &res {
            Ok(_) => crate::metrics::get().tier_hit("flat"),
            Err(StoreError::NotFound(_)) => crate::metrics::get().tier_miss("flat"),
            Err(_) => {}
        }
        res
    }

    /// Count a request the object store did not answer in time (readers that gave up on a
    /// stalled download are counted by the download itself).
    fn note_timeout(&self, e: &StoreError) {
        if matches!(e, StoreError::Timeout { .. }) {
            self.store_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Fill `file` (and `fetch`, when given) from foyer; true when the whole blob was there
    /// and verified against its id.
    async fn read_foyer(&self, id: &BlobId, fetch: Option<&Fetch>, file: &File) -> bool {
        let Some(f) = self.foyer.as_ref() else { return false };
        if !f.contains(id) {
            crate::metrics::get().tier_miss("foyer");
            return false;
        }
        let t0 = std::time::Instant::now();
        let (len, tier) = match f.read_into(id, file, fetch).await {
            Ok(Some(got)) => got,
            Ok(None) => {
                crate::metrics::get().tier_miss("foyer");
                return false;
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "reading a blob from foyer failed");
                return false;
            }
        };
        f.stats.hits.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().tier_served(tier, len);
        tracing::debug!(%id, len, took = ?t0.elapsed(), "served from foyer");
        if let Some(x) = fetch {
            x.mark_all();
        }
        true
    }
}
