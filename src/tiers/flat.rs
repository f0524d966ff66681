//! The flat tier: one plain, uncompressed file per blob at `<dir>/<aa>/<blake3-hex>`.
//!
//! Files enter by `rename` from the staging directory (same filesystem), so a blob file is
//! either absent or complete. Backing files are opened with `O_NOFOLLOW`; names are hashes,
//! never user-supplied.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::blob::BlobId;
use crate::tiers::StoreError;

fn cpath(p: &Path) -> Result<std::ffi::CString, StoreError> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| StoreError::Config(format!("path with NUL: {}", p.display())))
}

/// The flat local tier.
#[derive(Debug)]
pub struct FlatTier {
    dir: PathBuf,
}

impl FlatTier {
    /// Open (creating the fan-out directories) the flat tier in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for i in 0..=255u8 {
            let sub = dir.join(hex::encode([i]));
            fs::create_dir_all(&sub).map_err(|e| StoreError::io(format!("create {}", sub.display()), e))?;
        }
        Ok(FlatTier { dir: dir.to_path_buf() })
    }

    /// Path of a blob's file (which may not exist).
    pub fn path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(id.fanout()).join(id.to_hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.path(id).exists()
    }

    /// Open a blob read-only.
    pub fn open_blob(&self, id: &BlobId) -> Result<File, StoreError> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path(id))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StoreError::NotFound(*id),
                _ => StoreError::io(format!("open flat blob {id}"), e),
            })
    }

    /// Move a fully written file (already hashed to `id`) into the tier. If the blob is already
    /// present the file is removed instead: identical content is stored once.
    pub fn adopt(&self, src: &Path, id: &BlobId) -> Result<(), StoreError> {
        let dst = self.path(id);
        let (a, b) = (cpath(src)?, cpath(&dst)?);
        // SAFETY: renameat2 with two valid C strings.
        let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_NOREPLACE) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EEXIST) {
            let _ = fs::remove_file(src);
            return Ok(());
        }
        Err(StoreError::io(format!("adopt blob {id}"), err))
    }

    /// fsync a blob's file and its fan-out directory.
    pub fn sync(&self, id: &BlobId) -> Result<(), StoreError> {
        let p = self.path(id);
        let f = File::open(&p).map_err(|e| StoreError::io(format!("open {}", p.display()), e))?;
        f.sync_all().map_err(|e| StoreError::io("fsync blob", e))?;
        if let Some(parent) = p.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io("fsync flat dir", e))?;
        }
        Ok(())
    }

    /// Remove a blob's file (absent is fine).
    pub fn remove(&self, id: &BlobId) -> Result<(), StoreError> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("remove flat blob {id}"), e)),
        }
    }

    /// Every file in the tier: `Some(id)` for well-formed blob names, `None` (with its path) for
    /// anything else, which a sweep removes.
    pub fn scan(&self) -> Result<Vec<(Option<BlobId>, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for i in 0..=255u8 {
            let sub = self.dir.join(hex::encode([i]));
            let rd = match fs::read_dir(&sub) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("list {}", sub.display()), e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| StoreError::io("list flat tier", e))?;
                let name = entry.file_name();
                let id = name.to_str().and_then(BlobId::from_hex).filter(|id| id.fanout() == hex::encode([i]));
                out.push((id, entry.path()));
            }
        }
        Ok(out)
    }
}
