//! An object store that records every call in the process metrics (`crate::metrics`): count
//! by op and outcome, latency, bytes. The daemon wraps its store in one; the wrapped store's
//! behaviour is unchanged.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::blob::BlobId;
use crate::tiers::fetch::Fetch;
use crate::tiers::{ObjectStore, StoreError};

/// Wraps a store; see the module doc.
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
}

impl MeteredStore {
    /// Meter `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        MeteredStore { inner }
    }
}

/// Run one call and record it; `bytes` says how many bytes a successful result moved.
async fn metered<T>(op: &'static str, call: impl Future<Output = Result<T, StoreError>>, bytes: impl FnOnce(&T) -> u64) -> Result<T, StoreError> {
    let t0 = Instant::now();
    let res = call.await;
    let (outcome, n) = match &res {
        Ok(v) => ("ok", bytes(v)),
        Err(e) => (e.outcome(), 0),
    };
    crate::metrics::get().store_call(op, outcome, t0.elapsed(), n);
    res
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[async_trait]
impl ObjectStore for MeteredStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn check(&self) -> Result<(), StoreError> {
        metered("check", self.inner.check(), |_| 0).await
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn put_blob_now(&self, id: &BlobId, src: &Path) -> Option<Result<(), StoreError>> {
        let t0 = Instant::now();
        let res = self.inner.put_blob_now(id, src)?;
        let (outcome, n) = match &res {
            Ok(()) => ("ok", file_len(src)),
            Err(e) => (e.outcome(), 0),
        };
        crate::metrics::get().store_call("put_blob", outcome, t0.elapsed(), n);
        Some(res)
    }
    fn delete_blob_now(&self, id: &BlobId) -> Option<Result<(), StoreError>> {
        let t0 = Instant::now();
        let res = self.inner.delete_blob_now(id)?;
        let outcome = res.as_ref().map_or_else(|e| e.outcome(), |_| "ok");
        crate::metrics::get().store_call("delete_blob", outcome, t0.elapsed(), 0);
        Some(res)
    }
    async fn put_blob(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        metered("put_blob", self.inner.put_blob(id, src), |_| file_len(src)).await
    }
    async fn get_blob(&self, id: &BlobId, dst: &Path) -> Result<u64, StoreError> {
        metered("get_blob", self.inner.get_blob(id, dst), |n| *n).await
    }
    async fn fetch_into(&self, id: &BlobId, fetch: &Fetch) -> Result<(), StoreError> {
        metered("fetch_blob", self.inner.fetch_into(id, fetch), |_| fetch.len).await
    }
    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError> {
        metered("has_blob", self.inner.has_blob(id), |_| 0).await
    }
    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        metered("delete_blob", self.inner.delete_blob(id), |_| 0).await
    }
    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        metered("list_blobs", self.inner.list_blobs(), |_| 0).await
    }
    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let n = bytes.len() as u64;
        metered("put_meta", self.inner.put_meta(name, bytes), |_| n).await
    }
    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        metered("get_meta", self.inner.get_meta(name), |b| b.len() as u64).await
    }
    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        metered("delete_meta", self.inner.delete_meta(name), |_| 0).await
    }
    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        metered("list_meta", self.inner.list_meta(dir), |_| 0).await
    }
    async fn list_meta_after(&self, dir: &str, after: &str) -> Result<Vec<String>, StoreError> {
        metered("list_meta", self.inner.list_meta_after(dir, after), |_| 0).await
    }
}
