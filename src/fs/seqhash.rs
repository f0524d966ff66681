//! Incremental blake3 of a staging file that is written sequentially from offset 0, computed
//! *behind* the writer: large writes are hashed by a background thread that reads the bytes
//! back from the page cache, so a FUSE worker replies to a WRITE without hashing it and the
//! hash overlaps the next request on the other core. Small writes are hashed inline.
//! Any non-sequential change marks the hash broken; the seal then re-reads the whole file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::blob::BlobId;

/// Writes at least this large go to the hashing thread.
const BEHIND_MIN: usize = 128 * 1024;

struct St {
    hasher: blake3::Hasher,
    hashed: u64,
    queued: u64,
    broken: bool,
}

struct Shared {
    st: Mutex<St>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Job {
    shared: Arc<Shared>,
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// The thread that hashes large sequential writes behind the writers of one filesystem (each
/// mount, or library user, owns its own; it ends when its owner drops it).
pub struct HashWorker {
    tx: Option<Sender<Job>>,
}

impl HashWorker {
    /// Start the thread. Without it (thread limit reached) every seal re-reads its file.
    pub fn start() -> Arc<Self> {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new().name("wombatfs-hash".into()).spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            for job in rx {
                run(&job, &mut buf);
            }
        });
        match spawned {
            Ok(_) => Arc::new(HashWorker { tx: Some(tx) }),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the hashing thread; seals will re-read files");
                Arc::new(HashWorker { tx: None })
            }
        }
    }

    fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

fn run(job: &Job, buf: &mut [u8]) {
    let mut done = 0usize;
    while done < job.len {
        let want = (job.len - done).min(buf.len());
        let res = job.file.read_exact_at(&mut buf[..want], job.offset + done as u64);
        let mut st = job.shared.lock();
        match res {
            Ok(()) if !st.broken && st.hashed == job.offset + done as u64 => {
                st.hasher.update(&buf[..want]);
                st.hashed += want as u64;
            }
            _ => st.broken = true,
        }
        drop(st);
        job.shared.cv.notify_all();
        done += want;
    }
}

/// The running hash of one staging file.
pub struct SeqHash {
    shared: Arc<Shared>,
    worker: Option<Arc<HashWorker>>,
}

impl SeqHash {
    /// A hash of an empty file; large writes are hashed by `worker`.
    pub fn new(worker: &Arc<HashWorker>) -> Self {
        let st = St { hasher: blake3::Hasher::new(), hashed: 0, queued: 0, broken: false };
        SeqHash { shared: Arc::new(Shared { st: Mutex::new(st), cv: Condvar::new() }), worker: Some(worker.clone()) }
    }

    /// A hash that is already known to be unusable (e.g. a copy-on-write staging file).
    pub fn broken() -> Self {
        let st = St { hasher: blake3::Hasher::new(), hashed: 0, queued: 0, broken: true };
        SeqHash { shared: Arc::new(Shared { st: Mutex::new(st), cv: Condvar::new() }), worker: None }
    }

    /// Give up on incremental hashing.
    pub fn mark_broken(&self) {
        self.shared.lock().broken = true;
        self.shared.cv.notify_all();
    }

    /// Account for `data` just written at `offset` of `file`.
    pub fn on_write(&self, file: &Arc<File>, offset: u64, data: &[u8]) {
        let mut st = self.shared.lock();
        if st.broken {
            return;
        }
        if offset != st.queued {
            st.broken = true;
            return;
        }
        let end = offset + data.len() as u64;
        if data.len() < BEHIND_MIN && st.hashed == st.queued {
            st.hasher.update(data);
            st.hashed = end;
            st.queued = end;
            return;
        }
        st.queued = end;
        drop(st);
        let job = Job { shared: self.shared.clone(), file: file.clone(), offset, len: data.len() };
        if !self.worker.as_ref().is_some_and(|w| w.send(job)) {
            self.mark_broken();
        }
    }

    /// Account for a size change.
    pub fn on_resize(&self, size: u64) {
        let mut st = self.shared.lock();
        if st.broken || size == st.queued {
            return;
        }
        if size == 0 && st.hashed == st.queued {
            st.hasher.reset();
            st.hashed = 0;
            st.queued = 0;
        } else {
            st.broken = true;
        }
    }

    /// Wait for pending hashing and return the id of a file of `size` bytes, or `None` when
    /// the file was not written sequentially (the caller re-reads it).
    pub fn finish(&self, size: u64) -> Option<BlobId> {
        let mut st = self.shared.lock();
        while !st.broken && st.hashed < st.queued {
            st = self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        (!st.broken && st.hashed == size).then(|| BlobId(*st.hasher.finalize().as_bytes()))
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn staging(data: &[u8]) -> Arc<File> {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(data, 0).unwrap();
        Arc::new(f)
    }

    #[test]
    fn sequential_small_and_large_writes_hash_like_the_whole() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 249) as u8).collect();
        let f = staging(&data);
        let w = HashWorker::start();
        let h = SeqHash::new(&w);
        let mut off = 0usize;
        for len in [10, 200_000, 5, 1 << 20, 777, 600_000] {
            h.on_write(&f, off as u64, &data[off..off + len]);
            off += len;
        }
        h.on_write(&f, off as u64, &data[off..]);
        assert_eq!(h.finish(data.len() as u64), Some(BlobId::of(&data)));
    }

    #[test]
    fn out_of_order_writes_and_odd_resizes_break_the_hash() {
        let f = staging(&[1u8; 300_000]);
        let w = HashWorker::start();
        let h = SeqHash::new(&w);
        h.on_write(&f, 0, &[1u8; 200_000]);
        h.on_write(&f, 100, &[1u8; 10]);
        assert_eq!(h.finish(200_000), None);
        let h = SeqHash::new(&w);
        h.on_write(&f, 0, &[1u8; 10]);
        h.on_resize(5);
        assert_eq!(h.finish(5), None);
        let h = SeqHash::new(&w);
        h.on_write(&f, 0, &[1u8; 10]);
        h.on_resize(0);
        h.on_write(&f, 0, b"ab");
        assert_eq!(h.finish(2), Some(BlobId::of(b"ab")));
        assert_eq!(SeqHash::broken().finish(0), None);
    }
}
