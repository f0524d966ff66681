//! Bounds of the local tiers: flat-tier eviction (least recently used first, never a blob
//! whose upload is not durable yet) and the foyer tier in between the flat tier and the
//! object store.
//!
//! Admission to foyer: every blob fetched from the object store, and every blob evicted from
//! the flat tier that foyer does not hold (foyer is the victim cache of the flat tier). A
//! blob read back from foyer is verified against its id before it is adopted into the flat
//! tier (piece by piece, see `FoyerTier::read_into`); a mismatch drops it from foyer and
//! falls back to the object store.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::blob::BlobId;
use crate::tiers::fetch::Fetch;
use crate::store::upload::UploadCtx;
use crate::tiers::flat::FlatTier;
use crate::tiers::foyer::FoyerTier;

/// Copy a flat-tier blob into foyer unless foyer (probably) has it already.
fn keep_in_foyer(flat: &FlatTier, f: &FoyerTier, id: &BlobId) {
    if f.contains(id) {
        return;
    }
    if let Ok(file) = flat.open_blob(id) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Err(e) = f.insert_file(id, &file, len) {
            tracing::warn!(%id, error = %e, "could not insert a blob into foyer");
        }
    }
}

/// The local tiers' shared state.
pub struct LocalTiers {
    flat: Arc<FlatTier>,
    ctx: Arc<UploadCtx>,
    rt: tokio::runtime::Handle,
    /// the foyer tier, when configured
    pub foyer: OnceLock<Arc<FoyerTier>>,
    pinned: dashmap::DashMap<BlobId, u32>,
    evicting: AtomicBool,
    /// blobs evicted from the flat tier
    pub evictions: AtomicU64,
    /// flat-tier misses served by the object store (GETs of blobs)
    pub object_gets: AtomicU64,
}

impl LocalTiers {
    pub(crate) fn new(flat: Arc<FlatTier>, ctx: Arc<UploadCtx>, rt: tokio::runtime::Handle) -> Self {
        LocalTiers {
            flat,
            ctx,
            rt,
            foyer: OnceLock::new(),
            pinned: Default::default(),
            evicting: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            object_gets: AtomicU64::new(0),
        }
    }

    /// Keep a blob in the flat tier (it is being published and its upload not queued yet).
    pub fn pin(&self, id: &BlobId) {
        *self.pinned.entry(*id).or_insert(0) += 1;
    }

    /// Release one `pin`.
    pub fn unpin(&self, id: &BlobId) {
        self.pinned.remove_if_mut(id, |_, n| {
            *n -= 1;
            *n == 0
        });
    }

    /// Whether a blob must stay in the flat tier: pinned, or its upload not durable yet.
    fn must_stay(&self, id: &BlobId) -> bool {
        self.pinned.contains_key(id) || self.ctx.queued.contains_key(id)
    }

    /// Bytes in the flat tier that cannot be evicted now (pinned or not yet uploaded).
    pub fn unevictable_bytes(&self) -> u64 {
        self.flat.bytes_where(|id| self.must_stay(id))
    }

    /// Evict in the background when the flat tier is over its bound (one eviction at a time).
    pub fn maybe_evict(self: &Arc<Self>) {
        if self.flat.bytes() <= self.flat.limit() || self.evicting.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        self.rt.spawn_blocking(move || {
            me.evict_now();
            me.evicting.store(false, Ordering::Release);
        });
    }

    /// Evict least recently used blobs until the flat tier is 5 % under its bound (blobs that
    /// must stay are skipped). Returns how many were evicted. Open handles keep their file.
    pub fn evict_now(&self) -> usize {
        let victims = self.flat.victims(|id| self.must_stay(id));
        let mut n = 0;
        for id in victims {
            if self.must_stay(&id) {
                continue;
            }
            if let Some(f) = self.foyer.get() {
                keep_in_foyer(&self.flat, f, &id);
            }
            match self.flat.remove(&id) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(%id, error = %e, "could not evict a blob from the flat tier"),
            }
        }
        self.evictions.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 {
            tracing::debug!(evicted = n, flat_bytes = self.flat.bytes(), "flat tier evicted");
        }
        n
    }

    /// Insert a blob now in the flat tier into foyer, in the background.
    pub fn admit(self: &Arc<Self>, id: &BlobId) {
        let Some(f) = self.foyer.get().cloned() else { return };
        let (flat, id) = (self.flat.clone(), *id);
        self.rt.spawn_blocking(move || keep_in_foyer(&flat, &f, &id));
    }

    /// Fill `file` (and `fetch`, when given) from foyer; true when the whole blob was there
    /// and verified against its id.
    pub async fn from_foyer(&self, id: &BlobId, fetch: Option<&Fetch>, file: &File) -> bool {
        let Some(f) = self.foyer.get() else { return false };
        if !f.contains(id) {
            return false;
        }
        let t0 = std::time::Instant::now();
        let len = match f.read_into(id, file).await {
            Ok(Some(len)) => len,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(%id, error = %e, "reading a blob from foyer failed");
                return false;
            }
        };
        if fetch.is_some_and(|x| x.len != len) {
            f.remove(id, len);
            return false;
        }
        f.stats.hits.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%id, len, took = ?t0.elapsed(), "served from foyer");
        if let Some(x) = fetch {
            x.mark_all();
        }
        true
    }
}
