//! Publishing this node's namespace changes to the bucket, and following the other nodes'.
//!
//! Every committed namespace change (create, seal, rename, unlink, mkdir, rmdir, symlink, link,
//! chmod/utimes) is recorded by path in the same index commit as the tree change (`o/<seq>`),
//! so it survives `kill -9`. A publisher task writes the changes, in order, as batches to
//! `journal/<node>/<first seq>`; a change that names a blob waits until the blob is durable in
//! the bucket (so a reader never sees a name whose bytes are missing). After the PUT the
//! outbox entries are deleted and the node's cursor (`c/<node>`) advanced in one commit; a
//! crash between the two is repaired at start by listing the node's own journal after its
//! cursor (so a batch is never written twice under different keys).
//!
//! After each batch the publisher writes an empty feed marker (`feed/<ms>-<node>-<prev>-<first>-<last>`,
//! [`crate::sync::feed`]) and, after [`feed::HEARTBEAT`] without one, a heartbeat marker: the
//! other nodes list the feed once per poll ([`crate::fs::follow`]) instead of every journal.
//! A marker that cannot be written costs readers a late catch-up, never a change: the batch
//! is already in the journal, so it is recorded as published either way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::fs::namespace::Namespace;
use crate::fs::error::{FsError, FsResult};
use crate::hlc::{self, Stamp};
use crate::index::{keys, records, Op};
use crate::sync::change::{self, Batch, Change};
use crate::sync::feed::{self, Marker};
use crate::tiers::StoreError;

/// Most changes in one journal object.
const MAX_BATCH: usize = 10_000;
/// How long the publisher lets a burst of changes gather before writing a batch.
const GATHER: Duration = Duration::from_millis(100);
/// First and longest wait between retries of the change journal.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// How long after a failed marker PUT the next heartbeat is tried.
const HEARTBEAT_RETRY: Duration = Duration::from_secs(30);

/// Publication progress, for writers that wait (`--upload sync`).
#[derive(Default)]
pub struct Published {
    /// (last published seq, last attempt failed, attempts so far)
    state: Mutex<(u64, bool, u64)>,
    cv: Condvar,
    /// a writer waits (`--upload sync`): publish at once, without letting a burst gather
    urgent: AtomicBool,
    /// cuts a gathering pause short when a writer starts waiting
    urgent_wake: Notify,
}

impl Published {
    /// Record the outcome of a publishing attempt.
    fn set(&self, seq: Option<u64>, failing: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seq) = seq {
            s.0 = s.0.max(seq);
        }
        s.1 = failing;
        s.2 += 1;
        self.cv.notify_all();
    }

    /// Wait until change `seq` is in the bucket. `wake` prompts the publisher to try now;
    /// an attempt that fails after the wait began is an error at once, as is `timeout`.
    pub fn wait(&self, seq: u64, wake: &Notify, timeout: Duration) -> FsResult<()> {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let start = s.2;
        self.urgent.store(true, Ordering::SeqCst);
        // no stored permit: a later burst must still gather
        self.urgent_wake.notify_waiters();
        wake.notify_one();
        loop {
            if s.0 >= seq {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if (s.1 && s.2 > start) || left.is_zero() {
                return Err(FsError::Io(std::io::Error::other("the change journal could not be written to the object store")));
            }
            s = self.cv.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// The feed state of a node: when it last read the feed, and the stamps of its markers.
#[derive(Default)]
pub struct FeedState {
    /// this node's clock (ms) and the instant at the start of its last good poll of the feed;
    /// `None`: the next poll sweeps every journal
    pub read_from: Option<(u64, std::time::Instant)>,
    /// the newest stamp of this node's markers (stamps increase even if the clock steps back)
    stamped_ms: u64,
    /// when this node last wrote a marker
    last_marker: Option<std::time::Instant>,
    /// after a failed marker PUT, no heartbeat is tried before this
    retry_at: Option<std::time::Instant>,
    /// while the publisher runs: its marker writer, which writes batch markers in order
    /// behind the batch PUTs (a closer in `--upload sync` waits for its batch, not for the
    /// previous batch's marker)
    markers: Option<tokio::sync::mpsc::UnboundedSender<(u64, u64, u64)>>,
}

impl FeedState {
    fn stamp(&mut self) -> u64 {
        self.stamped_ms = change::now_ms().max(self.stamped_ms + 1);
        self.stamped_ms
    }
}

/// Changes waiting to be published and the journal cursors; lives in the tree (its lock
/// orders changes exactly as the tree orders them).
pub struct Outbox {
    /// publishing is on (remote stores)
    pub enabled: bool,
    /// this node's id
    pub node: String,
    /// unpublished changes, ascending sequence
    pub queue: VecDeque<(u64, Change, Stamp)>,
    /// next sequence number
    pub next_seq: u64,
    /// per node: last change applied (this node: last change published)
    pub cursors: BTreeMap<String, u64>,
    /// wakes the publisher
    pub wake: Arc<Notify>,
    /// publication progress
    pub published: Arc<Published>,
    /// queued changes a staged commit supersedes
    superseded: Vec<u64>,
    /// when each queued change was committed (changes loaded at mount: the mount time)
    since: BTreeMap<u64, std::time::Instant>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            enabled: false,
            node: String::new(),
            queue: VecDeque::new(),
            next_seq: 1,
            cursors: BTreeMap::new(),
            wake: Arc::new(Notify::new()),
            published: Arc::new(Published::default()),
            superseded: Vec::new(),
            since: BTreeMap::new(),
        }
    }
}

impl Outbox {
    /// Assign sequence numbers and add the outbox records to a commit. A new state of the
    /// file that the newest queued change also describes (create then seal) supersedes it:
    /// the older record is deleted in the same commit. (If the publisher already has it in
    /// flight it is published too; applying both is harmless.)
    pub fn stage(&mut self, ops: &mut Vec<Op>, changes: Vec<(Change, Stamp)>) -> Vec<(u64, Change, Stamp)> {
        if !self.enabled {
            return Vec::new();
        }
        let mut out: Vec<(u64, Change, Stamp)> = Vec::with_capacity(changes.len());
        for (c, stamp) in changes {
            let prev = out.last().or(self.queue.back());
            if let (Some((old, Change::File { path: p0, .. }, _)), Change::File { path, .. }) = (prev, &c) {
                if p0 == path {
                    let old = *old;
                    ops.push(Op::Delete(keys::outbox(old)));
                    self.superseded.push(old);
                    out.retain(|e| e.0 != old);
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            ops.push(Op::Put(keys::outbox(seq), hlc::append(records::encode(&c), stamp)));
            out.push((seq, c, stamp));
        }
        out
    }

    /// The commit of staged changes failed: keep the superseded ones.
    pub fn abort(&mut self) {
        self.superseded.clear();
    }

    /// Queue committed changes for the publisher.
    pub fn push(&mut self, staged: Vec<(u64, Change, Stamp)>) {
        if !self.superseded.is_empty() {
            let gone = std::mem::take(&mut self.superseded);
            self.queue.retain(|e| !gone.contains(&e.0));
            for seq in gone {
                self.since.remove(&seq);
            }
        }
        if !staged.is_empty() {
            let now = std::time::Instant::now();
            self.since.extend(staged.iter().map(|(seq, ..)| (*seq, now)));
            self.queue.extend(staged);
            self.wake.notify_one();
        }
    }

    /// Load a `c/<node>` record.
    pub fn load_cursor(&mut self, k: &[u8], v: &[u8]) {
        if let Some((node, seq)) = keys::decode_cursor(k, v) {
            self.cursors.insert(node.to_string(), seq);
        }
    }

    /// Load an `o/<seq>` record (keys come in ascending order).
    pub fn load_change(&mut self, k: &[u8], v: &[u8]) {
        match (keys::id_after_prefix(k), hlc::decode_stamped::<Change>(v)) {
            (Some(seq), Some((c, stamp))) => {
                self.since.insert(seq, std::time::Instant::now());
                self.queue.push_back((seq, c, stamp))
            }
            _ => tracing::error!(key = %hex::encode(k), "undecodable outbox record skipped"),
        }
    }

    /// Set the node id and whether publishing is on, once loaded.
    pub fn init(&mut self, node: &str, enabled: bool) {
        self.node = node.to_string();
        self.enabled = enabled;
        let published = self.cursors.get(node).copied().unwrap_or(0);
        let queued = self.queue.back().map(|c| c.0).unwrap_or(0);
        self.next_seq = published.max(queued) + 1;
        self.published.set(Some(published), false);
        if !enabled {
            self.queue.clear();
            self.since.clear();
        }
    }

    /// Changes not yet published, and how long the oldest has waited.
    pub fn lag(&self) -> (usize, std::time::Duration) {
        let oldest = self.queue.front().and_then(|(seq, ..)| self.since.get(seq)).map(|t| t.elapsed());
        (self.queue.len(), oldest.unwrap_or_default())
    }

    /// The newest change recorded (published or not).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

impl Namespace {
    /// Wait until every change made so far is in the bucket's journal (`--upload sync`).
    pub fn wait_published(&self, timeout: Duration) -> FsResult<()> {
        let (seq, published, wake) = {
            let t = self.read_tree();
            if !t.outbox.enabled {
                return Ok(());
            }
            (t.outbox.last_seq(), t.outbox.published.clone(), t.outbox.wake.clone())
        };
        published.wait(seq, &wake, timeout)
    }

    /// This node's id (names its journal and snapshots).
    pub fn node_id(&self) -> String {
        self.read_tree().outbox.node.clone()
    }

    /// Whether every change was published.
    pub fn outbox_empty(&self) -> bool {
        self.read_tree().outbox.queue.is_empty()
    }

    /// The next publishable batch: consecutive changes from the front of the outbox up to
    /// change `upto`, and up to the first whose blob is not durable in the bucket yet — unless
    /// that blob is small: then the batch carries it (up to [`change::INLINE_BUDGET`] bytes),
    /// and its own upload, still queued, follows.
    fn ready_batch(&self, upto: u64) -> Option<Batch> {
        let (node, mut changes, mut stamps, carry) = {
            let t = self.read_tree();
            let (mut changes, mut stamps, mut carry, mut budget) = (Vec::new(), Vec::new(), Vec::new(), change::INLINE_BUDGET);
            for (seq, c, stamp) in t.outbox.queue.iter().take_while(|(seq, ..)| *seq <= upto).take(MAX_BATCH) {
                if let Change::File { blob, size, .. } = c {
                    if self.store.upload_pending(blob) {
                        if *size > change::INLINE_MAX || *size > budget {
                            break;
                        }
                        budget -= size;
                        carry.push((changes.len(), *blob, *size));
                    }
                }
                changes.push((*seq, c.clone()));
                stamps.push(*stamp);
            }
            (t.outbox.node.clone(), changes, stamps, carry)
        };
        // read outside the tree lock: a blob whose upload is queued keeps its flat file
        let mut inline: Vec<change::Inline> = Vec::with_capacity(carry.len());
        for (at, id, size) in carry {
            match std::fs::read(self.store.flat().path(&id)) {
                Ok(bytes) if bytes.len() as u64 == size => {
                    if !inline.iter().any(|i| i.id == id) {
                        inline.push(change::Inline { id, bytes });
                    }
                }
                // gone or not whole (it cannot be, short of a bug): publish up to it, and the
                // rest once its upload is done
                _ => {
                    changes.truncate(at);
                    stamps.truncate(at);
                    inline.retain(|i| changes.iter().any(|(_, c)| c.blob() == Some(i.id)));
                    break;
                }
            }
        }
        (!changes.is_empty()).then_some(Batch { node, changes, sealed_ms: None, inline, stamps })
    }

    /// Record that the changes up to `last` are in the bucket.
    fn mark_published(&self, last: u64) -> FsResult<()> {
        let mut t = self.write_tree();
        let mut ops = Vec::new();
        while t.outbox.queue.front().is_some_and(|c| c.0 <= last) {
            if let Some((seq, ..)) = t.outbox.queue.pop_front() {
                ops.push(Op::Delete(keys::outbox(seq)));
                t.outbox.since.remove(&seq);
            }
        }
        let node = t.outbox.node.clone();
        let cur = t.outbox.cursors.entry(node.clone()).or_insert(0);
        *cur = (*cur).max(last);
        ops.push(Op::Put(keys::cursor(&node), cur.to_be_bytes().to_vec()));
        self.index.commit(ops)?;
        t.outbox.published.set(Some(last), false);
        Ok(())
    }

    /// Register this node and adopt batches a crash left published but unrecorded.
    async fn recover_journal(&self) -> Result<(), StoreError> {
        let (node, cursor) = (self.node_id(), self.published_seq());
        let objects = self.store.objects();
        objects.put_meta(&change::registry_key(&node), Vec::new()).await?;
        for key in objects.list_meta_after(&change::journal_dir(&node), &change::batch_key(&node, cursor)).await? {
            let batch = Batch::open(&objects.get_meta(&key).await?).map_err(StoreError::Config)?;
            tracing::info!(%key, last = batch.last_seq(), "adopting a change batch published before a crash");
            let prev = self.published_seq();
            self.mark_published(batch.last_seq()).map_err(|e| StoreError::Config(e.to_string()))?;
            self.put_marker(prev, batch.changes[0].0, batch.last_seq()).await;
        }
        // the node's lease starts now
        self.heartbeat_now().await;
        Ok(())
    }

    /// The last change of this node in its journal.
    pub fn published_seq(&self) -> u64 {
        let t = self.read_tree();
        t.outbox.cursors.get(&t.outbox.node).copied().unwrap_or(0)
    }

    pub(super) fn feed_state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write a feed marker for the batch `first..=last` after `prev` (`first` = 0: a
    /// heartbeat). A failure is logged and counted: readers find the batch later anyway.
    async fn put_marker(&self, prev: u64, first: u64, last: u64) {
        let ms = self.feed_state().stamp();
        let m = Marker { ms, node: self.node_id(), prev, first, last };
        match self.store.objects().put_meta(&m.key(), Vec::new()).await {
            Ok(()) => {
                let mut st = self.feed_state();
                st.last_marker = Some(std::time::Instant::now());
                st.retry_at = None;
            }
            Err(e) => {
                self.feed_state().retry_at = Some(std::time::Instant::now() + HEARTBEAT_RETRY);
                crate::metrics::get().feed_marker_failures.inc();
                tracing::warn!(error = %e, key = %m.key(), "could not write a change-feed marker; the other nodes will find the batch at this node's next marker");
            }
        }
    }

    /// The marker of a batch just published: handed to the marker writer when the publisher
    /// runs one, written now otherwise.
    async fn marker_after(&self, prev: u64, first: u64, last: u64) {
        let queued = self.feed_state().markers.as_ref().is_some_and(|tx| tx.send((prev, first, last)).is_ok());
        if !queued {
            self.put_marker(prev, first, last).await;
        }
    }

    /// Write a heartbeat marker if this node wrote none for [`feed::HEARTBEAT`]: it renews
    /// the node's lease and shows readers that missed a marker where this journal ends.
    pub async fn heartbeat_if_due(&self) {
        let due = {
            let st = self.feed_state();
            st.last_marker.is_none_or(|t| t.elapsed() >= feed::HEARTBEAT) && st.retry_at.is_none_or(|t| std::time::Instant::now() >= t)
        };
        if due {
            self.heartbeat_now().await;
        }
    }

    /// Write a heartbeat marker now.
    pub async fn heartbeat_now(&self) {
        let cursor = self.published_seq();
        self.put_marker(cursor, 0, cursor).await;
    }

    /// Publish every ready batch of the changes made so far; returns how many changes went
    /// out. Changes made meanwhile wait for the next round, so they may gather (a create is
    /// superseded by its seal). On an object-store error the changes stay queued (and
    /// writers waiting in `--upload sync` get EIO).
    pub async fn publish_ready(&self) -> Result<usize, StoreError> {
        let (node, published, upto) = {
            let t = self.read_tree();
            (t.outbox.node.clone(), t.outbox.published.clone(), t.outbox.last_seq())
        };
        let mut sent = 0;
        while let Some(batch) = self.ready_batch(upto) {
            let key = change::batch_key(&node, batch.changes[0].0);
            if let Err(e) = self.store.objects().put_meta(&key, batch.seal()).await {
                published.set(None, true);
                return Err(e);
            }
            // crash window: the batch is in the bucket, the outbox still holds it
            fail::fail_point!("publish-after-put");
            let prev = self.published_seq();
            self.mark_published(batch.last_seq()).map_err(|e| StoreError::Config(format!("recording a published batch: {e}")))?;
            self.marker_after(prev, batch.changes[0].0, batch.last_seq()).await;
            sent += batch.changes.len();
            crate::metrics::get().journal_published.inc_by(batch.changes.len() as u64);
        }
        Ok(sent)
    }

    /// Register this node and adopt what a crash left behind; must succeed before anything
    /// new is published. Retries until it does (or `stop`).
    pub async fn start_publishing(&self, stop: &AtomicBool) -> bool {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
        loop {
            let retry_in = match self.recover_journal().await {
                Ok(()) => return true,
                Err(e) => {
                    let retry_in = backoff.next_delay();
                    tracing::warn!(error = %e, ?retry_in, "cannot reach the change journal; retrying");
                    self.read_tree().outbox.published.set(None, true);
                    retry_in
                }
            };
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            tokio::time::sleep(retry_in).await;
        }
    }

    /// The publisher: runs until `stop`.
    pub async fn publish_loop(self: Arc<Self>, stop: Arc<AtomicBool>) {
        if !self.start_publishing(&stop).await {
            return;
        }
        let wake = self.read_tree().outbox.wake.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64, u64)>();
        self.feed_state().markers = Some(tx);
        let writer = {
            let ns = self.clone();
            tokio::spawn(async move {
                while let Some(one) = rx.recv().await {
                    // the markers of the batches that follow within the gather window go
                    // out as one
                    tokio::time::sleep(feed::MARKER_GATHER).await;
                    let mut batches = vec![one];
                    while let Ok(next) = rx.try_recv() {
                        batches.push(next);
                    }
                    if let Some((prev, first, last)) = feed::coalesce(&batches) {
                        ns.put_marker(prev, first, last).await;
                    }
                }
            })
        };
        self.publish_rounds(&stop, &wake).await;
        // the markers of the last batches are written before the publisher ends
        self.feed_state().markers = None;
        let _ = writer.await;
    }

    async fn publish_rounds(&self, stop: &AtomicBool, wake: &tokio::sync::Notify) {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_CAP);
        while !stop.load(Ordering::SeqCst) {
            // wait for new changes (and look now and then for changes waiting on an upload);
            // after a failure, back off — but a writer waiting in sync mode cuts it short
            let pause = match self.publish_ready().await {
                Ok(_) => {
                    self.heartbeat_if_due().await;
                    backoff.reset();
                    Duration::from_millis(250)
                }
                Err(e) => {
                    let retry_in = backoff.next_delay();
                    tracing::warn!(error = %e, ?retry_in, "publishing changes failed; will retry");
                    retry_in
                }
            };
            let _ = tokio::time::timeout(pause, wake.notified()).await;
            // a writer waiting in sync mode is not kept waiting for others to join its batch:
            // the writers that closed meanwhile share its journal PUT anyway
            let published = self.read_tree().outbox.published.clone();
            // registered before the flag is read, so a writer that starts waiting after the
            // read still cuts the pause short
            let cut = published.urgent_wake.notified();
            tokio::pin!(cut);
            cut.as_mut().enable();
            if !published.urgent.swap(false, Ordering::SeqCst) {
                let _ = tokio::time::timeout(GATHER, cut).await;
                published.urgent.store(false, Ordering::SeqCst);
            }
        }
    }
}
