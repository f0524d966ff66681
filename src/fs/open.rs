//! Per-inode I/O state shared by every handle on the inode: the sealed blob being read and,
//! while the file is being written, its staging file.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::blob::BlobId;

/// Bytes of a file being written.
pub struct Staging {
    /// the staging file (read + write)
    pub file: Arc<File>,
    /// its path in `<cache>/staging`
    pub path: PathBuf,
    /// current length
    pub size: u64,
    /// incremental hash while all writes so far were sequential appends from 0
    pub hash: crate::fs::seqhash::SeqHash,
    /// changed since it was created from the blob
    pub dirty: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        // after a seal the path has been renamed into the flat tier; otherwise discard it
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Mutable state of an open inode.
pub struct FileState {
    /// the blob the inode is bound to
    pub blob: BlobId,
    /// its size
    pub size: u64,
    /// the blob's flat-tier file or download, opened on first read
    pub reader: Option<crate::store::BlobReader>,
    /// present while the file is being rewritten
    pub staging: Option<Staging>,
}

/// An open inode.
pub struct OpenInode {
    /// inode number
    pub ino: u64,
    state: Mutex<FileState>,
}

impl OpenInode {
    /// New state bound to `blob`.
    pub fn new(ino: u64, blob: BlobId, size: u64) -> Self {
        OpenInode { ino, state: Mutex::new(FileState { blob, size, reader: None, staging: None }) }
    }

    /// Lock the state (a poisoned lock is recovered: the state stays consistent per field).
    pub fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An open file handle.
pub struct Handle {
    /// the inode's shared state
    pub file: Arc<OpenInode>,
    /// opened for writing
    pub write: bool,
}

/// The handles of a mount: open files and `opendir` listings, numbered from one counter.
#[derive(Default)]
pub struct Handles {
    files: dashmap::DashMap<u64, Handle>,
    dirs: dashmap::DashMap<u64, std::sync::Arc<Vec<crate::fs::DirEntry>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Handles {
    fn number(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Register an open file; returns its handle number.
    pub fn open_file(&self, h: Handle) -> u64 {
        let fh = self.number();
        self.files.insert(fh, h);
        fh
    }

    /// The open file `fh`: its inode state and whether it was opened for writing.
    pub fn file(&self, fh: u64) -> Option<(Arc<OpenInode>, bool)> {
        self.files.get(&fh).map(|h| (h.file.clone(), h.write))
    }

    /// Close `fh`.
    pub fn close_file(&self, fh: u64) -> Option<Handle> {
        self.files.remove(&fh).map(|(_, h)| h)
    }

    /// Every open file handle number.
    pub fn open_files(&self) -> Vec<u64> {
        self.files.iter().map(|h| *h.key()).collect()
    }

    /// Register a directory listing; returns its handle number.
    pub fn open_dir(&self, entries: Vec<crate::fs::DirEntry>) -> u64 {
        let fh = self.number();
        self.dirs.insert(fh, std::sync::Arc::new(entries));
        fh
    }

    /// The listing of directory handle `fh`.
    pub fn dir(&self, fh: u64) -> Option<std::sync::Arc<Vec<crate::fs::DirEntry>>> {
        self.dirs.get(&fh).map(|e| e.clone())
    }

    /// Close directory handle `fh`.
    pub fn close_dir(&self, fh: u64) {
        self.dirs.remove(&fh);
    }
}
