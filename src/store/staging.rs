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
}
