//! The upload queue: one tokio task that takes sealed blobs in order and copies them from the
//! flat tier to the object store, [`PARALLEL`] at a time, each retried with backoff. The queue
//! itself is persisted by the caller (the index's `u/` keys), so a crash or an outage loses
//! nothing: pending ids are re-enqueued at mount.

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
    /// a blob, and its place in the queue (see [`UploadCtx::queue`])
    Upload(BlobId, u64),
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
    /// enqueue time and bytes of each job waiting or in flight, by its place in the queue
    pub waiting: std::sync::Mutex<std::collections::BTreeMap<u64, (std::time::Instant, u64)>>,
    /// the next job's place in the queue
    pub next_job: AtomicU64,
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
    /// Count a blob as queued; returns its job's place in the queue.
    pub fn queue(&self, id: BlobId) -> u64 {
        let len = std::fs::metadata(self.flat.path(&id)).map(|m| m.len()).unwrap_or(0);
        let seq = self.next_job.fetch_add(1, Ordering::Relaxed);
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, (std::time::Instant::now(), len));
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        *self.queued.entry(id).or_insert(0) += 1;
        seq
    }

    /// What is queued now.
    pub fn state(&self) -> QueueState {
        let w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        QueueState { blobs: w.len() as u64, bytes: w.values().map(|e| e.1).sum(), oldest: w.first_key_value().map(|(_, e)| e.0.elapsed()).unwrap_or_default() }
    }

    /// One upload of `id` finished (stored, or skipped); a deferred reclaim runs once the
    /// last queued upload of the blob is done. Returns the bytes it was queued with.
    fn done(&self, id: &BlobId, seq: u64) -> u64 {
        let len = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq).map_or(0, |e| e.1);
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
        len
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

/// Uploads in flight at once: enough to hide a round trip per blob on a link with latency,
/// few enough not to thrash a small node (each holds at most one multipart part in memory).
pub const PARALLEL: usize = 8;

pub(crate) async fn run(ctx: Arc<UploadCtx>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut inflight = tokio::task::JoinSet::new();
    while let Some(job) = rx.recv().await {
        match job {
            Job::Upload(id, seq) => {
                while inflight.len() >= PARALLEL {
                    reap(inflight.join_next().await);
                }
                let ctx = ctx.clone();
                inflight.spawn(async move {
                    let stored = upload_one(&ctx, id).await;
                    let len = ctx.done(&id, seq);
                    if stored {
                        crate::metrics::get().uploads.inc();
                        crate::metrics::get().upload_bytes.inc_by(len);
                    }
                });
            }
            Job::Drain(done) => {
                // everything queued before the drain is finished
                while let Some(r) = inflight.join_next().await {
                    reap(Some(r));
                }
                let _ = done.send(());
            }
        }
    }
    while let Some(r) = inflight.join_next().await {
        reap(Some(r));
    }
}

/// A finished upload task; one that panicked (a bug) left its blob queued until the next
/// mount re-enqueues it from the index.
fn reap(r: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = r {
        tracing::error!(error = %e, "an upload task failed; its blob stays queued until the next mount");
    }
}

/// Store one blob, retrying with backoff until it is stored (true) or no longer local.
async fn upload_one(ctx: &UploadCtx, id: BlobId) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(30));
    loop {
        match ctx.objects.put_blob(&id, &ctx.flat.path(&id)).await {
            Ok(()) => {
                // crash window: in the bucket, not yet recorded as uploaded
                fail::fail_point!("upload-after-put");
                ctx.stats.uploaded.fetch_add(1, Ordering::Relaxed);
                if let Some(hook) = ctx.hook.get() {
                    hook(id);
                }
                return true;
            }
            Err(StoreError::NotFound(_)) => {
                // the blob was reclaimed before it was uploaded: nothing to keep
                tracing::debug!(%id, "upload skipped: blob no longer local");
                if let Some(hook) = ctx.hook.get() {
                    hook(id);
                }
                return false;
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
}
