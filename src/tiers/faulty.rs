//! A fault-injecting object store: wraps any [`ObjectStore`] and, per operation, fails
//! requests with a chosen kind, hangs them, slows them down or truncates what they return
//! (the role of mountpoint-s3's failure client). Tests drive every object-store call of the
//! store, sync and filesystem layers through it; it is also usable for chaos runs of a
//! library node.
//!
//! A rule applies to the next `times` calls of its operation (or to all while it is set);
//! every call is counted per operation, so a test can check how often a caller retried.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::blob::BlobId;
use crate::tiers::fetch::Fetch;
use crate::tiers::{ObjectStore, RemoteKind, StoreError};

/// The object-store operations, as the trait names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `check`
    Check,
    /// `put_blob`
    PutBlob,
    /// `get_blob`
    GetBlob,
    /// `fetch_into`
    FetchInto,
    /// `has_blob`
    HasBlob,
    /// `delete_blob`
    DeleteBlob,
    /// `list_blobs`
    ListBlobs,
    /// `put_meta`
    PutMeta,
    /// `get_meta`
    GetMeta,
    /// `delete_meta`
    DeleteMeta,
    /// `list_meta` and `list_meta_after`
    ListMeta,
}

/// What happens to a call a rule applies to.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// fail at once with an error of this kind
    Fail(RemoteKind),
    /// never answer (the caller's own bound must end the wait)
    Hang,
    /// answer after this delay (then run the call)
    Slow(Duration),
    /// return only the first `n` bytes of what was read (`get_meta`; `get_blob` leaves a
    /// short file and reports it as corrupt, as the verifying store would)
    Truncate(usize),
}

struct Rule {
    fault: Fault,
    /// calls left to affect; `None`: until cleared
    left: Option<u32>,
}

/// An object store with injected faults.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    rules: Mutex<HashMap<Op, Rule>>,
    calls: Mutex<HashMap<Op, u64>>,
    /// calls a rule affected
    pub injected: AtomicU64,
}

impl FaultyStore {
    /// Wrap `inner`; no faults until `set`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyStore { inner, rules: Mutex::default(), calls: Mutex::default(), injected: AtomicU64::new(0) }
    }

    /// Apply `fault` to the next `times` calls of `op` (`None`: every call until `clear`).
    pub fn set(&self, op: Op, fault: Fault, times: Option<u32>) {
        self.rules.lock().unwrap().insert(op, Rule { fault, left: times });
    }

    /// Remove the rule of `op`.
    pub fn clear(&self, op: Op) {
        self.rules.lock().unwrap().remove(&op);
    }

    /// Remove every rule.
    pub fn clear_all(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// Calls of `op` so far (affected or not).
    pub fn calls(&self, op: Op) -> u64 {
        self.calls.lock().unwrap().get(&op).copied().unwrap_or(0)
    }

    /// Count the call and take the fault that applies to it, if any.
    fn take(&self, op: Op) -> Option<Fault> {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.get_mut(&op)?;
        let fault = rule.fault;
        match &mut rule.left {
            Some(0) => {
                rules.remove(&op);
                return None;
            }
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    rules.remove(&op);
                }
            }
            None => {}
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        Some(fault)
    }

    /// Apply the fault before the call: an error, a hang, a delay; `Truncate` is returned
    /// for the caller to apply to the result.
    async fn before(&self, op: Op) -> Result<Option<usize>, StoreError> {
        match self.take(op) {
            None => Ok(None),
            Some(Fault::Fail(kind)) => Err(StoreError::Remote { what: format!("{op:?}"), kind, detail: "injected fault".into() }),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Slow(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(Fault::Truncate(n)) => Ok(Some(n)),
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.before(Op::Check).await?;
        self.inner.check().await
    }
    fn is_local(&self) -> bool {
        false
    }
    async fn put_blob(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        self.before(Op::PutBlob).await?;
        self.inner.put_blob(id, src).await
    }
    async fn get_blob(&self, id: &BlobId, dst: &Path) -> Result<u64, StoreError> {
        let cut = self.before(Op::GetBlob).await?;
        let n = self.inner.get_blob(id, dst).await?;
        match cut {
            Some(keep) if (keep as u64) < n => {
                // what a verifying store does with a short body: the file goes, corrupt
                let _ = std::fs::remove_file(dst);
                Err(StoreError::Corrupt { id: *id, source: crate::codec::CodecError::Malformed("truncated body (injected)") })
            }
            _ => Ok(n),
        }
    }
    async fn fetch_into(&self, id: &BlobId, fetch: &Fetch) -> Result<(), StoreError> {
        if self.before(Op::FetchInto).await?.is_some() {
            return Err(StoreError::Corrupt { id: *id, source: crate::codec::CodecError::Malformed("truncated body (injected)") });
        }
        self.inner.fetch_into(id, fetch).await
    }
    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError> {
        self.before(Op::HasBlob).await?;
        self.inner.has_blob(id).await
    }
    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        self.before(Op::DeleteBlob).await?;
        self.inner.delete_blob(id).await
    }
    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        self.before(Op::ListBlobs).await?;
        self.inner.list_blobs().await
    }
    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.before(Op::PutMeta).await?;
        self.inner.put_meta(name, bytes).await
    }
    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let cut = self.before(Op::GetMeta).await?;
        let mut bytes = self.inner.get_meta(name).await?;
        if let Some(n) = cut {
            bytes.truncate(n);
        }
        Ok(bytes)
    }
    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        self.before(Op::DeleteMeta).await?;
        self.inner.delete_meta(name).await
    }
    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        self.before(Op::ListMeta).await?;
        self.inner.list_meta(dir).await
    }
    async fn list_meta_after(&self, dir: &str, after: &str) -> Result<Vec<String>, StoreError> {
        self.before(Op::ListMeta).await?;
        self.inner.list_meta_after(dir, after).await
    }
}
