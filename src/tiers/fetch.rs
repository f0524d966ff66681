//! A blob being fetched from the object store into a local file, readable while it downloads:
//! each 1 MiB chunk becomes readable once it arrived and was verified against its proof.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::blob::BlobId;
use crate::proof::CHUNK;
use crate::tiers::StoreError;

/// How long readers of a download wait without progress, and the count of those who gave up.
#[derive(Clone, Debug)]
pub struct StallLimit {
    /// the longest wait without a new chunk
    pub limit: Duration,
    /// readers that gave up
    pub timeouts: Arc<std::sync::atomic::AtomicU64>,
}

struct State {
    ready: Vec<bool>,
    failed: Option<String>,
    /// when the download started or last made progress
    progress: Instant,
}

/// A download in progress.
pub struct Fetch {
    /// the blob
    pub id: BlobId,
    /// its raw length
    pub len: u64,
    /// the file the bytes land in (in the staging dir until the fetch is complete)
    pub path: PathBuf,
    /// that file, open for reading and writing
    pub file: Arc<File>,
    /// how long a reader waits while no chunk arrives (`--store-timeout`); `None`: no bound
    stall_limit: Option<StallLimit>,
    st: Mutex<State>,
    cv: Condvar,
}

impl Fetch {
    /// A fetch of `len` bytes into `file` (new, empty, read-write) at `path`; readers give up
    /// after `stall_limit` without a new chunk.
    pub fn create(id: BlobId, len: u64, file: File, path: PathBuf, stall_limit: Option<StallLimit>) -> Result<Arc<Self>, StoreError> {
        file.set_len(len).map_err(|e| StoreError::io("size fetch file", e))?;
        let n = crate::proof::chunks(len).max(1) as usize;
        Ok(Arc::new(Fetch {
            id,
            len,
            path,
            file: Arc::new(file),
            stall_limit,
            st: Mutex::new(State { ready: vec![false; n], failed: None, progress: Instant::now() }),
            cv: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunk `i` was written and verified.
    pub fn mark(&self, i: usize) {
        let mut st = self.lock();
        if let Some(r) = st.ready.get_mut(i) {
            *r = true;
        }
        st.progress = Instant::now();
        drop(st);
        self.cv.notify_all();
    }

    /// Every chunk was written and the whole blob verified.
    pub fn mark_all(&self) {
        let mut st = self.lock();
        st.ready.iter_mut().for_each(|r| *r = true);
        st.progress = Instant::now();
        drop(st);
        self.cv.notify_all();
    }

    /// Whether the download made no progress for its stall limit: a new reader then starts
    /// another download instead of joining this one (which may still finish; the first to
    /// complete is adopted).
    pub fn stalled(&self) -> bool {
        let Some(StallLimit { limit, .. }) = &self.stall_limit else { return false };
        let st = self.lock();
        !st.ready.iter().all(|r| *r) && st.progress.elapsed() >= *limit
    }

    /// The download failed: waiting and later readers get the error.
    pub fn fail(&self, msg: String) {
        self.lock().failed = Some(msg);
        self.cv.notify_all();
    }

    /// Whether the download failed.
    pub fn failed(&self) -> bool {
        self.lock().failed.is_some()
    }

    /// Whether every chunk is readable.
    pub fn complete(&self) -> bool {
        self.lock().ready.iter().all(|r| *r)
    }

    /// Whether bytes `[offset, offset + len)` are readable now.
    pub fn ready(&self, offset: u64, len: u64) -> bool {
        if len == 0 || offset >= self.len {
            return true;
        }
        let (first, last) = ((offset / CHUNK) as usize, (((offset + len).min(self.len) - 1) / CHUNK) as usize);
        self.lock().ready[first..=last].iter().all(|r| *r)
    }

    /// Block until bytes `[offset, offset + len)` are readable. While the download makes
    /// progress the reader keeps waiting; when no chunk arrived for the stall limit it fails
    /// with [`StoreError::Timeout`] (the download itself goes on for later readers).
    pub fn wait(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        if len == 0 || offset >= self.len {
            return Ok(());
        }
        let first = (offset / CHUNK) as usize;
        let last = ((offset + len).min(self.len) - 1) / CHUNK;
        let mut st = self.lock();
        let arrived = |st: &State| st.ready.iter().filter(|r| **r).count();
        let (mut seen, mut since) = (arrived(&st), Instant::now());
        loop {
            // verified chunks stay readable even when another part of the download failed
            if st.ready[first..=last as usize].iter().all(|r| *r) {
                return Ok(());
            }
            if let Some(msg) = &st.failed {
                return Err(StoreError::io(format!("fetch of blob {}", self.id), std::io::Error::other(msg.clone())));
            }
            let Some(StallLimit { limit, timeouts }) = &self.stall_limit else {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let now = arrived(&st);
            if now > seen {
                (seen, since) = (now, Instant::now());
            }
            let left = limit.saturating_sub(since.elapsed());
            if left.is_zero() {
                timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(StoreError::Timeout { what: format!("read of blob {} (no new data for {limit:?})", self.id) });
            }
            st = self.cv.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_wait_for_their_chunks_and_see_failures() {
        let dir = tempfile::tempdir().unwrap();
        let new = |name: &str| std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join(name)).unwrap();
        let f = Fetch::create(BlobId::of(b"x"), 3 * CHUNK, new("f"), dir.path().join("f"), None).unwrap();
        f.mark(0);
        f.wait(0, 10).unwrap();
        let f2 = f.clone();
        let t = std::thread::spawn(move || f2.wait(CHUNK, 2 * CHUNK));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!t.is_finished());
        f.mark(1);
        f.mark(2);
        t.join().unwrap().unwrap();
        assert!(f.complete());
        let g = Fetch::create(BlobId::of(b"y"), CHUNK, new("g"), dir.path().join("g"), None).unwrap();
        g.fail("server gone".into());
        assert!(g.wait(0, 1).is_err());
    }

    #[test]
    fn a_stalled_download_fails_its_readers_after_the_limit_but_progress_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let new = |name: &str| std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join(name)).unwrap();
        let limit = StallLimit { limit: Duration::from_millis(300), timeouts: Default::default() };
        let f = Fetch::create(BlobId::of(b"z"), 4 * CHUNK, new("z"), dir.path().join("z"), Some(limit.clone())).unwrap();
        // chunks arriving every 200 ms (under the limit) keep a reader of the last one waiting
        let f2 = f.clone();
        let feeder = std::thread::spawn(move || {
            for i in 0..3 {
                std::thread::sleep(Duration::from_millis(200));
                f2.mark(i);
            }
        });
        let t0 = Instant::now();
        let err = f.wait(3 * CHUNK, 1).unwrap_err();
        feeder.join().unwrap();
        assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(800), "progress extended the wait: {waited:?}");
        assert!(f.wait(0, 3 * CHUNK).is_ok(), "what arrived stays readable");
        assert_eq!(limit.timeouts.load(std::sync::atomic::Ordering::Relaxed), 1, "counted");
    }
}
