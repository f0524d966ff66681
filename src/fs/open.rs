//! Per-inode I/O state shared by every handle on the inode: the sealed blob being read and,
//! while the file is being written, its staging file.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::blob::BlobId;
use crate::index::records::Ts;

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
    /// the kernel writes this file itself (FUSE passthrough): `size` and `hash` are not kept,
    /// the file's own length and times are the truth, and a seal copies it (see
    /// [`Stamp`])
    pub kernel_writes: bool,
    /// kernel writes only: the file's stamp when its content was last sealed (or found equal
    /// to the blob); a seal that finds the same stamp has nothing to do
    pub sealed: Option<Stamp>,
}

impl Staging {
    /// A staging file the daemon writes.
    pub fn new(file: File, path: PathBuf, size: u64, hash: crate::fs::seqhash::SeqHash, dirty: bool) -> Self {
        Staging { file: Arc::new(file), path, size, hash, dirty, kernel_writes: false, sealed: None }
    }

    /// Its current length: the file's own when the kernel writes it.
    pub fn current_len(&self) -> std::io::Result<u64> {
        if self.kernel_writes {
            Ok(self.file.metadata()?.len())
        } else {
            Ok(self.size)
        }
    }
}

/// What a write by the kernel changes in a file: its length, mtime and ctime. With
/// multigrain timestamps (Linux >= 6.13 on ext4, XFS, btrfs and tmpfs) a write that follows
/// an `fstat` always moves mtime, so two equal stamps around a read mean no write happened
/// in between; write passthrough is offered only on such kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// length in bytes
    pub len: u64,
    /// modification time
    pub mtime: Ts,
    /// change time
    pub ctime: Ts,
}

impl Stamp {
    /// The stamp of an open file.
    pub fn of(f: &File) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata()?;
        let ts = |secs, nanos: i64| Ts::new(secs, nanos as u32);
        Ok(Stamp { len: m.len(), mtime: ts(m.mtime(), m.mtime_nsec()), ctime: ts(m.ctime(), m.ctime_nsec()) })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // after a seal the path has been renamed into the flat tier (and cleared here, so
        // a sealed file costs no failed unlink); otherwise discard it
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
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
    /// the staging file the kernel writes itself, once it does (it stays the inode's staging
    /// file until the last handle closes): attributes come from it, without the state lock
    pub kernel_file: std::sync::OnceLock<Arc<File>>,
}

impl OpenInode {
    /// New state bound to `blob`.
    pub fn new(ino: u64, blob: BlobId, size: u64) -> Self {
        OpenInode { ino, state: Mutex::new(FileState { blob, size, reader: None, staging: None }), kernel_file: Default::default() }
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
