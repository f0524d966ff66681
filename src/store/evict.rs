//! The flat tier's bound: eviction, least recently used first, never a blob whose upload is
//! not durable yet (the flat file is then the only copy) nor one pinned by a seal in progress.
//! An evicted blob that foyer does not hold is copied into foyer first (foyer is the flat
//! tier's victim cache).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::blob::BlobId;
use crate::store::upload::UploadCtx;
use crate::tiers::flat::FlatTier;
use crate::tiers::foyer::FoyerTier;

/// Copy a flat-tier blob into foyer unless foyer (probably) has it already: the only way a
/// blob enters foyer.
fn copy_to_foyer(flat: &FlatTier, foyer: &FoyerTier, id: &BlobId) {
    if foyer.contains(id) {
        return;
    }
    if let Ok(file) = flat.open_blob(id) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Err(e) = foyer.insert_file(id, &file, len) {
            tracing::warn!(%id, error = %e, "could not insert a blob into foyer");
        }
    }
}

/// Eviction from the flat tier, and what must stay there.
pub struct Eviction {
    flat: Arc<FlatTier>,
    foyer: Option<Arc<FoyerTier>>,
    ctx: Arc<UploadCtx>,
    rt: tokio::runtime::Handle,
    pinned: dashmap::DashMap<BlobId, u32>,
    evicting: AtomicBool,
    /// an eviction was asked for while one ran (it goes round again)
    wanted: AtomicBool,
    /// blobs evicted from the flat tier
    pub evictions: AtomicU64,
}

impl Eviction {
    pub(crate) fn new(flat: Arc<FlatTier>, foyer: Option<Arc<FoyerTier>>, ctx: Arc<UploadCtx>, rt: tokio::runtime::Handle) -> Self {
        Eviction { flat, foyer, ctx, rt, pinned: Default::default(), evicting: AtomicBool::new(false), wanted: AtomicBool::new(false), evictions: AtomicU64::new(0) }
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

    /// Whether a seal or an adoption holds `id` (see [`Eviction::pin`]).
    pub fn is_pinned(&self, id: &BlobId) -> bool {
        self.pinned.contains_key(id)
    }

    /// Whether a blob must stay in the flat tier: pinned, or its upload not durable yet.
    fn must_stay(&self, id: &BlobId) -> bool {
        self.pinned.contains_key(id) || self.ctx.queued.contains_key(id)
    }

    /// Bytes in the flat tier that cannot be evicted now (pinned or not yet uploaded).
    pub fn unevictable_bytes(&self) -> u64 {
        // from the pinned and queued blobs, not a pass over the tier: `statfs` asks for this,
        // and the tier may hold a million blobs
        let mut ids: std::collections::HashSet<BlobId> = self.pinned.iter().map(|e| *e.key()).collect();
        ids.extend(self.ctx.queued.iter().map(|e| *e.key()));
        self.flat.bytes_of(&ids)
    }

    /// Evict in the background when the flat tier is over its bound (one eviction at a time).
    pub fn maybe_evict(self: &Arc<Self>) {
        if self.flat.bytes() <= self.flat.limit() {
            return;
        }
        if self.evicting.swap(true, Ordering::AcqRel) {
            // left to the running eviction, which goes round again for it
            self.wanted.store(true, Ordering::Release);
            return;
        }
        let me = self.clone();
        self.rt.spawn_blocking(move || loop {
            me.wanted.store(false, Ordering::Release);
            let n = me.evict_now();
            me.evicting.store(false, Ordering::Release);
            // go again while over the bound if this round evicted something, or if an
            // eviction was asked for meanwhile (a blob adopted, or one unpinned that this
            // round had to skip): it found `evicting` set and left its work to this one
            let again = n > 0 || me.wanted.swap(false, Ordering::AcqRel);
            if !again || me.flat.bytes() <= me.flat.limit() || me.evicting.swap(true, Ordering::AcqRel) {
                break;
            }
        });
    }

    /// Evict least recently used blobs until the flat tier is 5 % under its bound (blobs that
    /// must stay are skipped). Returns how many were evicted. Open handles keep their file.
    pub fn evict_now(&self) -> usize {
        let victims = self.flat.victims(|id| self.must_stay(id));
        // test hook: a blob adopted while an eviction runs
        fail::fail_point!("evict-victims-chosen");
        let mut n = 0;
        for id in victims {
            if self.must_stay(&id) {
                continue;
            }
            if let Some(f) = &self.foyer {
                copy_to_foyer(&self.flat, f, &id);
            }
            match self.flat.remove(&id) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!(%id, error = %e, "could not evict a blob from the flat tier"),
            }
        }
        self.evictions.fetch_add(n as u64, Ordering::Relaxed);
        crate::metrics::get().flat_evictions.inc_by(n as u64);
        if n > 0 {
            tracing::debug!(evicted = n, flat_bytes = self.flat.bytes(), "flat tier evicted");
        }
        n
    }
}
