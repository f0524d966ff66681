//! The staging directory: new files being written or downloaded before they are adopted into
//! the flat tier under their content's name. Emptied at open (a write that never completed is
//! not resurrected). Each store numbers its own files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::tiers::StoreError;

/// A staging directory and the counter that names its files.
pub struct Staging {
    dir: PathBuf,
    next: AtomicU64,
}

impl Staging {
    /// Create (or empty) `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| StoreError::io("clear staging", e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create staging", e))?;
        Ok(Staging { dir: dir.to_path_buf(), next: AtomicU64::new(0) })
    }

    /// A new, empty file, open for reading and writing.
    pub fn create(&self) -> Result<(File, PathBuf), StoreError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create staging file", e))?;
        Ok((f, path))
    }

    /// A new staging file holding the first `len` bytes of `src`, copied inside the kernel
    /// (`copy_file_range`: a reflink where the filesystem shares extents, as XFS and btrfs
    /// do, a page-cache copy elsewhere). A snapshot: later writes to `src` do not reach it.
    pub fn copy_of(&self, src: &File, len: u64) -> Result<(File, PathBuf), StoreError> {
        use std::os::fd::AsRawFd;
        let (dst, path) = self.create()?;
        let remove = |e: std::io::Error| {
            let _ = std::fs::remove_file(&path);
            StoreError::io("copy a staging file", e)
        };
        let (mut off_in, mut off_out): (libc::off64_t, libc::off64_t) = (0, 0);
        while (off_in as u64) < len {
            let want = (len - off_in as u64).min(1 << 30) as usize;
            // SAFETY: both descriptors are open files we own; the offsets are ours.
            let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, want, 0) };
            match n {
                0 => break, // the source was truncated meanwhile: the snapshot is what is there
                n if n > 0 => {}
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(remove(e));
                    }
                }
            }
        }
        Ok((dst, path))
    }
}
