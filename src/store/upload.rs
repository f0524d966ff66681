//! The upload queue: one tokio task that copies sealed blobs from the flat tier to the object
//! store, in order, retrying with backoff. The queue itself is persisted by the caller (the
//! index's `u/` keys), so a crash or an outage loses nothing: pending ids are re-enqueued at
//! mount.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::blob::BlobId;
use crate::tiers::flat::FlatTier;
use crate::tiers::{ObjectStore, StoreError};

/// Called with each blob once it is durable in the object store.
pub type UploadedHook = Arc<dyn Fn(BlobId) + Send + Sync>;

pub(crate) enum Job {
    Upload(BlobId),
    Drain(oneshot::Sender<()>),
}

/// Counters of the queue.
#[derive(Default, Debug)]
pub struct UploadStats {
    /// blobs waiting or in flight
    pub pending: AtomicU64,
    /// blobs uploaded since start
    pub uploaded: AtomicU64,
    /// failed attempts (each retried)
    pub failures: AtomicU64,
}

pub struct UploadCtx {
    pub objects: Arc<dyn ObjectStore>,
    pub flat: Arc<FlatTier>,
    pub hook: std::sync::OnceLock<UploadedHook>,
    pub stats: Arc<UploadStats>,
    /// blobs queued or in flight (a blob may be queued more than once)
    pub queued: dashmap::DashMap<BlobId, u32>,
    /// blobs no local name refers to any more whose upload is still queued: a change not yet
    /// published may name them (another node applying the journal up to that change reads
    /// them), so their flat file goes only once they are in the bucket
    pub deferred: std::sync::Mutex<std::collections::HashSet<BlobId>>,
    /// enqueue time and bytes of each queued job, in queue order (the one task takes jobs
    /// in order, so the front is the oldest waiting or in flight)
    pub waiting: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
}

/// The upload queue as an operator sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueState {
    /// blobs waiting or in flight
    pub blobs: u64,
    /// their bytes
    pub bytes: u64,
    /// how long the oldest has waited
    pub oldest: std::time::Duration,
}

impl UploadCtx {
    pub fn queue(&self, id: BlobId) {
        let len = std::fs::metadata(self.flat.path(&id)).map(|m| m.len()).unwrap_or(0);
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).push_back((std::time::Instant::now(), len));
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        *self.queued.entry(id).or_insert(0) += 1;
    }

    /// What is queued now.
    pub fn state(&self) -> QueueState {
        let w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        QueueState { blobs: w.len() as u64, bytes: w.iter().map(|e| e.1).sum(), oldest: w.front().map(|e| e.0.elapsed()).unwrap_or_default() }
    }

    /// One upload of `id` finished (stored, or skipped); a deferred reclaim runs once the
    /// last queued upload of the blob is done.
    fn done(&self, id: &BlobId) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let mut deferred = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        self.queued.remove_if_mut(id, |_, n| {
            *n -= 1;
            *n == 0
        });
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        if !self.queued.contains_key(id) && deferred.remove(id) {
            if let Err(e) = self.flat.remove(id) {
                tracing::warn!(%id, error = %e, "could not remove an unreferenced blob after its upload");
            }
        }
    }

    /// Reclaim `id` after its upload if one is queued; false when none is (reclaim now).
    pub fn defer_reclaim(&self, id: &BlobId) -> bool {
        let mut deferred = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        if self.queued.contains_key(id) {
            deferred.insert(*id);
            true
        } else {
            false
        }
    }

    /// The blob is wanted again (a seal adopts the same content): keep its flat file.
    pub fn cancel_reclaim(&self, id: &BlobId) {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

pub(crate) async fn run(ctx: Arc<UploadCtx>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Upload(id) => {
                let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(30));
                loop {
                    match ctx.objects.put_blob(&id, &ctx.flat.path(&id)).await {
                        Ok(()) => {
                            // crash window: in the bucket, not yet recorded as uploaded
                            fail::fail_point!("upload-after-put");
                            ctx.stats.uploaded.fetch_add(1, Ordering::Relaxed);
                            crate::metrics::get().uploads.inc();
                            crate::metrics::get().upload_bytes.inc_by(std::fs::metadata(ctx.flat.path(&id)).map(|m| m.len()).unwrap_or(0));
                            if let Some(hook) = ctx.hook.get() {
                                hook(id);
                            }
                            break;
                        }
                        Err(StoreError::NotFound(_)) => {
                            // the blob was reclaimed before it was uploaded: nothing to keep
                            tracing::debug!(%id, "upload skipped: blob no longer local");
                            if let Some(hook) = ctx.hook.get() {
                                hook(id);
                            }
                            break;
                        }
                        Err(e) => {
                            ctx.stats.failures.fetch_add(1, Ordering::Relaxed);
                            crate::metrics::get().upload_failures.inc();
                            let retry_in = backoff.next_delay();
                            if e.is_transient() {
                                tracing::warn!(%id, error = %e, ?retry_in, "upload failed; will retry");
                            } else {
                                // refused (credentials, permissions, a missing bucket): the blob
                                // stays queued and local until the cause is fixed
                                tracing::error!(%id, error = %e, ?retry_in, "upload refused by the object store; kept queued, will retry");
                            }
                            tokio::time::sleep(retry_in).await;
                        }
                    }
                }
                ctx.done(&id);
            }
            Job::Drain(done) => {
                let _ = done.send(());
            }
        }
    }
}
