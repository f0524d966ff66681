//! An in-memory object store for tests, with fault injection (fail the next N calls).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::blob::BlobId;
use crate::codec::{self, Compression};
use crate::tiers::{ObjectStore, StoreError};

/// Blobs kept as envelopes in a map.
#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<HashMap<BlobId, Vec<u8>>>,
    meta: Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    fail_next: AtomicU32,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make the next `n` calls fail with an I/O error.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Replace an object's stored bytes (to simulate corruption in the bucket).
    pub fn overwrite(&self, id: &BlobId, bytes: Vec<u8>) {
        self.lock().insert(*id, bytes);
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlobId, Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fault(&self) -> Result<(), StoreError> {
        let hit = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hit {
            return Err(StoreError::io("injected fault", std::io::Error::other("injected")));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.fault()
    }

    async fn put_blob(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        self.fault()?;
        let raw = std::fs::read(src).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(*id),
            _ => StoreError::io("read blob source", e),
        })?;
        self.lock().insert(*id, codec::encode(&raw, Compression::Auto(1)));
        Ok(())
    }

    async fn get_blob(&self, id: &BlobId, dst: &Path) -> Result<u64, StoreError> {
        self.fault()?;
        let env = self.lock().get(id).cloned().ok_or(StoreError::NotFound(*id))?;
        let raw = codec::decode(&env, id).map_err(|source| StoreError::Corrupt { id: *id, source })?;
        std::fs::write(dst, &raw).map_err(|e| StoreError::io("write fetched blob", e))?;
        Ok(raw.len() as u64)
    }

    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError> {
        self.fault()?;
        Ok(self.lock().contains_key(id))
    }

    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        self.fault()?;
        self.lock().remove(id);
        Ok(())
    }

    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.fault()?;
        self.meta.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), bytes);
        Ok(())
    }

    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.fault()?;
        let m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        m.get(name).cloned().ok_or_else(|| StoreError::io(format!("meta {name}"), std::io::Error::from(std::io::ErrorKind::NotFound)))
    }

    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        self.fault()?;
        self.meta.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        Ok(())
    }

    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        self.fault()?;
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.keys().filter(|k| k.starts_with(&prefix)).cloned().collect())
    }

    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        self.fault()?;
        Ok(self.lock().keys().copied().collect())
    }
}
