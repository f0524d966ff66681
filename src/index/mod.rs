//! The persistent metadata index: SlateDB (the only place `slatedb` appears) behind an intent
//! log (`intent_log`).
//!
//! `commit` appends a batch to the intent log with one `write(2)` and hands it to a single tokio
//! task that applies batches to SlateDB in order, without waiting for SlateDB durability. So a
//! committed batch survives `kill -9` at the cost of one small write, and `sync` (fdatasync of
//! the intent log) makes it survive loss of the page cache. Every 30 s or 64 MiB the intent
//! log rolls to a new generation; the applier then flushes SlateDB, `syncfs`es the cache filesystem and
//! deletes the old generation. At open, leftover generations are replayed into SlateDB.
//!
//! The fs core keeps the authoritative in-memory view and never reads SlateDB after mount.

pub mod checkpoint;
pub mod intent_log;
pub mod keys;
pub mod record_set;
pub mod records;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slatedb::object_store::local::LocalFileSystem;
use slatedb::{CloseReason, Db, ErrorKind, WriteBatch};
use thiserror::Error;
use std::collections::VecDeque;
use tokio::sync::{oneshot, Notify};

pub use intent_log::Op;
use intent_log::IntentLog;

/// Roll the intent log after this many bytes.
const ROLL_BYTES: u64 = 64 << 20;
/// Roll the intent log after this long.
const ROLL_AFTER: Duration = Duration::from_secs(30);
/// The applier gathers batches this long after being woken, so a burst of small commits
/// costs one wake-up of the runtime instead of one each (the intent log already made them safe).
const COALESCE: Duration = Duration::from_millis(2);

/// Errors of the metadata index.
#[derive(Debug, Error)]
pub enum IndexError {
    /// Another writer opened the same index (SlateDB fencing).
    #[error("the index in {0} was opened by another wombatfs process")]
    Fenced(PathBuf),
    /// SlateDB failed.
    #[error("metadata database error: {0}")]
    Db(#[source] slatedb::Error),
    /// Intent log or directory I/O failed.
    #[error("intent log I/O ({what}): {source}")]
    Io {
        /// what we were doing
        what: &'static str,
        /// the OS error
        #[source]
        source: std::io::Error,
    },
    /// The index is closed.
    #[error("metadata index is closed")]
    Closed,
    /// An earlier intent-log write failed (disk full, I/O error): a torn record would hide every
    /// later one at replay, so no further change is accepted until a remount.
    #[error("intent log failed earlier; changes are refused until the filesystem is remounted")]
    Poisoned,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> IndexError {
    move |source| IndexError::Io { what, source }
}

enum Msg {
    Batch(Vec<Op>),
    Checkpoint(u64, Option<oneshot::Sender<Result<(), IndexError>>>),
}

/// Batches and checkpoints waiting for the applier, in commit order.
#[derive(Default)]
struct Queue {
    items: Mutex<(VecDeque<Msg>, bool)>,
    notify: Notify,
}

impl Queue {
    /// Enqueue; wakes the applier only when it may be idle (queue was empty) or when asked.
    fn push(&self, msg: Msg, wake: bool) {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = q.0.is_empty();
        q.0.push_back(msg);
        drop(q);
        if was_empty || wake {
            self.notify.notify_one();
        }
    }

    fn close(&self) {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.notify.notify_one();
    }

    /// Everything queued, and whether the index is closing.
    fn take(&self) -> (VecDeque<Msg>, bool) {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut q.0), q.1)
    }
}

struct LogState {
    log: IntentLog,
    rolled_at: Instant,
    /// Batches committed since open.
    commits: u64,
    /// `commits` when the checkpoint file was written: a batch committed after it makes the
    /// file stale, so the close removes it.
    checkpointed: Option<u64>,
}

/// Handle to the index; cheap to clone.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

struct Inner {
    poisoned: AtomicBool,
    log_dir: PathBuf,
    state: Mutex<Option<LogState>>,
    queue: Arc<Queue>,
    db: Db,
    rt: tokio::runtime::Handle,
}

/// SlateDB's settings for an index on the local filesystem. `LocalFileSystem` has no
/// conditional overwrite (`If-Match`), so the garbage collector's boundary files are off, as
/// SlateDB documents for such stores (with them on it fails and logs an ERROR at each pass).
/// The hazard boundary files guard against — a second, stalled writer resuming after the GC's
/// `min_age` — cannot arise: one daemon holds the cache dir's lock.
///
/// Bounded by the live tree under churn (`scripts/bench-churn`): with SlateDB's defaults 100k
/// rewrites of 1000 files grew the index 1 → 33 MiB (41 after a remount) and the daemon's
/// memory by 1.2 KB per rewrite, because the memtable is flushed to L0 only at 64 MiB (until
/// then every commit stays in RAM and in its own WAL file) and the collector runs every
/// 10 min on files older than 5 min — and every compaction's inputs are kept 15 min by a
/// checkpoint, for scans that began before it. Here the memtable flushes at 4 MiB
/// (compaction merges the L0 files past 8), compaction inputs are kept 2 min (the longest
/// scan of this index is the load at mount or a snapshot export: seconds at a million
/// names), and the collector runs every 30 s on files older than 30 s: there are no other
/// readers or checkpoints of this index that could still need them.
fn settings() -> slatedb::Settings {
    use slatedb::config::GarbageCollectorDirectoryOptions as Dir;
    let every = Duration::from_secs(30);
    let dir = Some(Dir { interval: Some(every), min_age: every, dry_run: false });
    let gc = slatedb::config::GarbageCollectorOptions {
        boundary_files_enabled: false,
        manifest_options: dir,
        wal_options: dir,
        compacted_options: dir,
        compactions_options: dir,
        ..Default::default()
    };
    let compactor = slatedb::config::CompactorOptions { checkpoint_lifetime: Duration::from_secs(120), ..Default::default() };
    slatedb::Settings {
        garbage_collector_options: Some(gc),
        compactor_options: Some(compactor),
        l0_sst_size_bytes: 4 << 20,
        max_unflushed_bytes: 64 << 20,
        ..Default::default()
    }
}

/// SlateDB's in-memory cache, bounded for an index that is written, not read: the tree lives
/// in RAM and the only scan (the load at mount) does not cache its blocks. SlateDB's default
/// caches up to 512 MiB of blocks and 128 MiB of SST indexes and filters, filled by every
/// flush and compaction, so a daemon under churn grew by ~130 bytes per rewrite (35 →
/// 153 MiB over 1M rewrites of 1000 files) with no bound from the configuration. Blocks are
/// not cached here; indexes and filters (which compaction and the load look up per SST) get
/// 8 MiB, part of the fixed overhead of the memory model (docs/architecture.md).
fn metadata_cache() -> Arc<dyn slatedb::db_cache::DbCache> {
    use slatedb::db_cache::foyer::{FoyerCache, FoyerCacheOptions};
    let meta = FoyerCache::new_with_opts(FoyerCacheOptions { max_capacity: 8 << 20, shards: 2 });
    Arc::new(slatedb::db_cache::SplitCache::new().with_meta_cache(Some(Arc::new(meta))).build())
}

pub use record_set::Records;

/// Read the whole index: large sequential fetches, several at a time, and no block cache
/// pollution (the default is one block per request).
async fn scan(db: &Db, dir: &Path) -> Result<Records, IndexError> {
    let mut records = Records::with_capacity(1 << 20);
    let full = slatedb::config::ScanOptions { read_ahead_bytes: 4 << 20, max_fetch_tasks: 4, cache_blocks: false, ..Default::default() };
    let mut it = db.scan_with_options::<std::ops::RangeFull>(.., &full).await.map_err(|e| db_err(e, dir))?;
    while let Some(kv) = it.next().await.map_err(|e| db_err(e, dir))? {
        records.push(&kv.key, &kv.value);
    }
    Ok(records)
}

impl Index {
    /// Open the index in `dir` (created if missing), replay any intent log left by a crash, and
    /// return the full contents. Must not be called from inside the runtime.
    pub fn open(dir: &Path, rt: &tokio::runtime::Handle) -> Result<(Index, Records), IndexError> {
        let db_dir = dir.join("db");
        let log_dir = dir.join("intent-log");
        IntentLog::adopt_legacy(dir, &log_dir).map_err(io("adopt the intent log under its old name"))?;
        std::fs::create_dir_all(&db_dir).map_err(io("create index dir"))?;
        std::fs::create_dir_all(&log_dir).map_err(io("create intent log dir"))?;
        let (db, records, next_gen) = rt.block_on(async {
            let store = LocalFileSystem::new_with_prefix(&db_dir).map_err(|e| IndexError::Io {
                what: "open index directory",
                source: std::io::Error::other(e.to_string()),
            })?;
            let db = Db::builder("index", Arc::new(store))
                .with_settings(settings())
                .with_db_cache(metadata_cache(), 0)
                .build()
                .await
                .map_err(|e| db_err(e, dir))?;
            let gens = IntentLog::existing(&log_dir).map_err(io("list intent log"))?;
            for &gen in &gens {
                let batches = IntentLog::read_gen(&log_dir, gen).map_err(io("read intent log"))?;
                tracing::info!(gen, batches = batches.len(), "replaying intent log");
                for ops in batches {
                    db.write(to_batch(ops)).await.map_err(|e| db_err(e, dir))?;
                }
            }
            if !gens.is_empty() {
                db.flush().await.map_err(|e| db_err(e, dir))?;
                syncfs(&log_dir)?;
                for &gen in &gens {
                    IntentLog::remove_gen(&log_dir, gen).map_err(io("remove intent log"))?;
                }
            }
            // after a clean close the records are in the checkpoint file, if SlateDB is as
            // that close left it (its token and no replayed intent); the file goes either way
            let token = match gens.is_empty() {
                true => db.get(keys::checkpoint()).await.map_err(|e| db_err(e, dir))?.and_then(|t| checkpoint::Token::try_from(&t[..]).ok()),
                false => None,
            };
            let saved = token.and_then(|t| checkpoint::read(dir, &t));
            checkpoint::remove(dir).map_err(io("remove the index checkpoint"))?;
            let records = match saved {
                Some(records) => records,
                None => scan(&db, dir).await?,
            };
            Ok::<_, IndexError>((db, records, gens.last().map_or(1, |g| g + 1)))
        })?;
        let log = IntentLog::create(&log_dir, next_gen).map_err(io("create intent log"))?;
        let queue = Arc::new(Queue::default());
        let inner = Arc::new(Inner {
            poisoned: AtomicBool::new(false),
            log_dir: log_dir.clone(),
            state: Mutex::new(Some(LogState { log, rolled_at: Instant::now(), commits: 0, checkpointed: None })),
            queue: queue.clone(),
            db: db.clone(),
            rt: rt.clone(),
        });
        rt.spawn(apply_loop(db, queue, log_dir, dir.to_path_buf()));
        Ok((Index { inner }, records))
    }

    /// Commit a batch: durable against a daemon crash when this returns.
    pub fn commit(&self, ops: Vec<Op>) -> Result<(), IndexError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = guard.as_mut().ok_or(IndexError::Closed)?;
        self.append(st, ops)
    }

    fn append(&self, st: &mut LogState, ops: Vec<Op>) -> Result<(), IndexError> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(IndexError::Poisoned);
        }
        if let Err(e) = st.log.append(&ops) {
            self.inner.poisoned.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "intent log write failed; refusing further changes until remount");
            return Err(IndexError::Io { what: "append intent log", source: e });
        }
        st.commits += 1;
        self.inner.queue.push(Msg::Batch(ops), false);
        if st.log.bytes() >= ROLL_BYTES || st.rolled_at.elapsed() >= ROLL_AFTER {
            self.roll(st, None)?;
        }
        Ok(())
    }

    /// Make every committed batch durable against loss of the page cache.
    pub fn sync(&self) -> Result<(), IndexError> {
        let guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = guard.as_ref().ok_or(IndexError::Closed)?;
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(IndexError::Poisoned);
        }
        st.log.sync().map_err(|e| {
            // after a failed fsync the page cache state of the intent log is unknown (fsyncgate)
            self.inner.poisoned.store(true, Ordering::SeqCst);
            IndexError::Io { what: "fsync intent log", source: e }
        })
    }

    fn roll(&self, st: &mut LogState, done: Option<oneshot::Sender<Result<(), IndexError>>>) -> Result<(), IndexError> {
        let old = st.log.gen();
        st.log = IntentLog::create(&self.inner.log_dir, old + 1).map_err(io("create intent log"))?;
        st.rolled_at = Instant::now();
        self.inner.queue.push(Msg::Checkpoint(old, done), true);
        Ok(())
    }

    /// Write every record to the checkpoint file the next open reads instead of scanning, just
    /// before [`Index::close`]: `fill` must hand over exactly what the index holds, and the
    /// caller keeps anything else from committing while it runs. Commits a fresh token that
    /// the file carries; the open uses the file only if SlateDB holds that token and no intent
    /// log was replayed, and the close removes it if anything committed after it. Never blocks
    /// on the runtime, so the caller may hold a lock that runtime tasks take. A file that
    /// cannot be written is logged: the next open scans.
    pub fn write_checkpoint(&self, fill: impl FnOnce(&mut checkpoint::Writer)) -> Result<(), IndexError> {
        let dir = self.dir();
        let token = checkpoint::new_token(&dir);
        {
            let mut guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let st = guard.as_mut().ok_or(IndexError::Closed)?;
            self.append(st, vec![Op::Put(keys::checkpoint(), token.to_vec())])?;
            st.checkpointed = Some(st.commits);
        }
        let t0 = Instant::now();
        match checkpoint::save(&dir, &token, |w| {
            w.put(&keys::checkpoint(), &token);
            fill(w);
        }) {
            Ok(records) => tracing::info!(records, secs = t0.elapsed().as_secs_f64(), "index checkpoint written"),
            Err(e) => tracing::warn!(error = %e, "could not write the index checkpoint; the next mount scans the index"),
        }
        Ok(())
    }

    fn dir(&self) -> PathBuf {
        self.inner.log_dir.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// Flush everything into SlateDB, delete the intent log and close the database. A
    /// checkpoint file that no longer matches (a batch committed after it, or the close
    /// failed) is removed. Must not be called from inside the runtime.
    pub fn close(&self) -> Result<(), IndexError> {
        let (tx, rx) = oneshot::channel();
        let stale = {
            let mut guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(mut st) = guard.take() else { return Ok(()) };
            let stale = st.checkpointed.is_some_and(|at| at != st.commits);
            self.roll(&mut st, Some(tx))?;
            let last = st.log.gen();
            drop(st);
            let _ = IntentLog::remove_gen(&self.inner.log_dir, last);
            stale
        };
        self.inner.queue.close();
        let closed = self.inner.rt.block_on(async {
            rx.await.map_err(|_| IndexError::Closed)??;
            self.inner.db.close().await.map_err(IndexError::Db)
        });
        if stale || closed.is_err() {
            tracing::info!(stale, "index checkpoint dropped; the next mount scans the index");
            checkpoint::remove(&self.dir()).map_err(io("remove the index checkpoint"))?;
        }
        closed
    }
}

fn to_batch(ops: Vec<Op>) -> WriteBatch {
    let mut b = WriteBatch::new();
    add_ops(&mut b, ops);
    b
}

fn add_ops(b: &mut WriteBatch, ops: Vec<Op>) {
    for op in ops {
        match op {
            Op::Put(k, v) => b.put(k, v),
            Op::Delete(k) => b.delete(k),
        }
    }
}

fn db_err(e: slatedb::Error, dir: &Path) -> IndexError {
    if e.kind() == ErrorKind::Closed(CloseReason::Fenced) {
        IndexError::Fenced(dir.to_path_buf())
    } else {
        IndexError::Db(e)
    }
}

fn syncfs(dir: &Path) -> Result<(), IndexError> {
    let d = std::fs::File::open(dir).map_err(io("open for syncfs"))?;
    // SAFETY: syncfs on a valid, open descriptor has no memory-safety preconditions.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(IndexError::Io { what: "syncfs", source: std::io::Error::last_os_error() });
    }
    Ok(())
}

async fn apply_loop(db: Db, queue: Arc<Queue>, log_dir: PathBuf, dir: PathBuf) {
    // After a failed apply the intent log is the only complete record: keep every generation so
    // that the next mount replays it.
    let failed = AtomicBool::new(false);
    loop {
        queue.notify.notified().await;
        tokio::time::sleep(COALESCE).await;
        let (msgs, closing) = queue.take();
        let mut batch: Option<WriteBatch> = None;
        for msg in msgs {
            match msg {
                Msg::Batch(ops) => add_ops(batch.get_or_insert_with(WriteBatch::new), ops),
                Msg::Checkpoint(gen, done) => {
                    apply(&db, batch.take(), &failed, &dir).await;
                    let res = checkpoint(&db, gen, &failed, &log_dir, &dir).await;
                    if let Some(done) = done {
                        let _ = done.send(res);
                    }
                }
            }
        }
        apply(&db, batch.take(), &failed, &dir).await;
        if closing {
            return;
        }
    }
}

async fn apply(db: &Db, batch: Option<WriteBatch>, failed: &AtomicBool, dir: &Path) {
    let Some(batch) = batch else { return };
    if let Err(e) = db.write(batch).await {
        failed.store(true, Ordering::SeqCst);
        tracing::error!(error = %db_err(e, dir), "applying metadata batches failed; the intent log keeps them for replay");
    }
}

async fn checkpoint(db: &Db, gen: u64, failed: &AtomicBool, log_dir: &Path, dir: &Path) -> Result<(), IndexError> {
    let res = async {
        db.flush().await.map_err(|e| db_err(e, dir))?;
        syncfs(log_dir)?;
        if !failed.load(Ordering::SeqCst) {
            IntentLog::remove_gen(log_dir, gen).map_err(io("remove intent log"))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = &res {
        tracing::error!(error = %e, gen, "metadata checkpoint failed; intent log kept");
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_survives_reopen_without_close_and_with_close() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let (idx, snap) = Index::open(dir.path(), rt.handle()).unwrap();
            assert!(snap.is_empty());
            idx.commit(vec![Op::Put(b"k1".to_vec(), b"v1".to_vec()), Op::Put(b"k2".to_vec(), b"v2".to_vec())]).unwrap();
            idx.commit(vec![Op::Delete(b"k1".to_vec())]).unwrap();
            // simulate a crash: no close; a fresh runtime opens it again
        }
        let rt2 = tokio::runtime::Runtime::new().unwrap();
        // the first db is still open in rt; drop that runtime so its tasks stop
        drop(rt);
        let (idx, snap) = Index::open(dir.path(), rt2.handle()).unwrap();
        assert_eq!(snap.to_pairs(), vec![(b"k2".to_vec(), b"v2".to_vec())]);
        idx.commit(vec![Op::Put(b"k3".to_vec(), b"v3".to_vec())]).unwrap();
        idx.sync().unwrap();
        idx.close().unwrap();
        assert!(IntentLog::existing(&dir.path().join("intent-log")).unwrap().is_empty());
        let (_idx, snap) = Index::open(dir.path(), rt2.handle()).unwrap();
        assert_eq!(snap.len(), 2);
    }

    #[test]
    fn a_checkpoint_is_read_at_open_unless_a_batch_committed_after_it() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let (idx, _) = Index::open(dir.path(), rt.handle()).unwrap();
        idx.commit(vec![Op::Put(b"k1".to_vec(), b"v1".to_vec())]).unwrap();
        // the file says something the index does not, so the test can tell which was read
        idx.write_checkpoint(|w| w.put(b"k1", b"from the file")).unwrap();
        idx.close().unwrap();
        let (idx, snap) = Index::open(dir.path(), rt.handle()).unwrap();
        let mut snap = snap.to_pairs();
        snap.retain(|(k, _)| k != &keys::checkpoint());
        assert_eq!(snap, vec![kv("k1", "from the file")], "a clean close's checkpoint is read instead of a scan");
        idx.write_checkpoint(|w| w.put(b"k1", b"from the file")).unwrap();
        idx.commit(vec![Op::Put(b"k2".to_vec(), b"v2".to_vec())]).unwrap();
        idx.close().unwrap();
        assert!(!dir.path().join("checkpoint").exists(), "a batch after the checkpoint makes the close drop it");
        let (idx, snap) = Index::open(dir.path(), rt.handle()).unwrap();
        let mut snap = snap.to_pairs();
        snap.retain(|(k, _)| k != &keys::checkpoint());
        assert_eq!(snap, vec![kv("k1", "v1"), kv("k2", "v2")], "the scan sees every batch");
        idx.close().unwrap();
    }
}
