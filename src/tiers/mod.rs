//! Storage tiers: the flat local tier and the object stores behind one trait.
//!
//! `ObjectStore` is the durable layer. The embedded default is [`local::LocalStore`] (a directory
//! with the S3 key layout); [`memory::MemoryStore`] serves tests. An S3 store drops in behind the
//! same trait.

pub mod catalog;
pub mod chunk_sink;
pub mod faulty;
pub mod fetch;
pub mod flat;
pub mod foyer;
pub mod local;
pub mod memory;
pub mod metered;
pub mod recency;
pub mod s3;

use std::path::Path;

use async_trait::async_trait;
use thiserror::Error;

use crate::blob::BlobId;
use crate::codec::CodecError;

/// Errors of the storage tiers.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The blob is not in this tier / store.
    #[error("blob {0} not found")]
    NotFound(BlobId),
    /// Stored bytes failed verification (hash mismatch or bad envelope).
    #[error("blob {id} is corrupt in the object store")]
    Corrupt {
        /// the blob
        id: BlobId,
        /// what was wrong
        #[source]
        source: CodecError,
    },
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// what we were doing
        what: String,
        /// the OS error
        #[source]
        source: std::io::Error,
    },
    /// The object store did not answer within the store timeout (`--store-timeout`).
    #[error("{what}: the object store did not answer in time (--store-timeout)")]
    Timeout {
        /// what was waiting
        what: String,
    },
    /// The store URL or configuration is unusable.
    #[error("bad store configuration: {0}")]
    Config(String),
    /// The object store refused or failed a request; `kind` says whether to retry.
    #[error("{what}: {detail} ({kind:?})")]
    Remote {
        /// the request
        what: String,
        /// what went wrong, for the caller's retry decision
        kind: RemoteKind,
        /// the server's status and message, or the transport's error
        detail: String,
    },
}

/// What kind of failure an object-store request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteKind {
    /// credentials refused or missing permission (401, 403): retrying will not help
    Auth,
    /// no such object or bucket (404)
    NotFound,
    /// the server asked to slow down (429, 503 SlowDown)
    Throttled,
    /// the server failed (500, 502, 504…)
    Server,
    /// the connection failed or broke, or the request timed out at the server (408)
    Network,
    /// the server rejected the request as malformed (other 4xx): a bug or a misconfiguration
    Client,
}

impl RemoteKind {
    /// The kind of an HTTP error status.
    pub fn of_status(status: u16) -> Self {
        match status {
            401 | 403 => RemoteKind::Auth,
            404 => RemoteKind::NotFound,
            429 | 503 => RemoteKind::Throttled,
            408 => RemoteKind::Network,
            500..=599 => RemoteKind::Server,
            _ => RemoteKind::Client,
        }
    }
}

impl StoreError {
    /// Wrap an I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io { what: what.into(), source }
    }

    /// Whether trying the same request again may succeed: timeouts, throttling, server and
    /// network failures. Auth, not-found, corrupt objects, local I/O and configuration errors
    /// are not retried (the upload queue still keeps its work: it never drops a blob).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Timeout { .. } => true,
            StoreError::Remote { kind, .. } => matches!(kind, RemoteKind::Throttled | RemoteKind::Server | RemoteKind::Network),
            _ => false,
        }
    }

    /// Whether the object or blob does not exist (in any store's way of saying so).
    pub fn is_missing(&self) -> bool {
        match self {
            StoreError::NotFound(_) | StoreError::Remote { kind: RemoteKind::NotFound, .. } => true,
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// A short name of the failure, for metrics: `timeout`, `corrupt`, `not_found`, `io`,
    /// `config`, or the remote kind (`auth`, `throttled`, `server`, `network`, `client`).
    pub fn outcome(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Io { .. } => "io",
            StoreError::Timeout { .. } => "timeout",
            StoreError::Config(_) => "config",
            StoreError::Remote { kind, .. } => match kind {
                RemoteKind::Auth => "auth",
                RemoteKind::NotFound => "not_found",
                RemoteKind::Throttled => "throttled",
                RemoteKind::Server => "server",
                RemoteKind::Network => "network",
                RemoteKind::Client => "client",
            },
        }
    }

    /// The remote failure kind, if this is one.
    pub fn remote_kind(&self) -> Option<RemoteKind> {
        match self {
            StoreError::Remote { kind, .. } => Some(*kind),
            StoreError::NotFound(_) => Some(RemoteKind::NotFound),
            _ => None,
        }
    }
}

/// A durable, content-addressed object store (layout in docs/on-disk-format.md: `<prefix>/blobs/<aa>/<hex>`).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Human-readable location, for logs (never contains secrets).
    fn describe(&self) -> String;
    /// Check the store is reachable and writable; called at startup.
    async fn check(&self) -> Result<(), StoreError>;
    /// Whether the store is a local directory: reads from it never wait on a network, and a
    /// blob missing from the flat tier is relinked from it rather than streamed.
    fn is_local(&self) -> bool {
        false
    }
    /// For stores where a put is a cheap local operation (a hard link): do it synchronously
    /// and return `Some`; the blob store then skips the upload queue. Others return `None`.
    fn put_blob_now(&self, _id: &BlobId, _src: &Path) -> Option<Result<(), StoreError>> {
        None
    }
    /// Companion of `put_blob_now`: delete synchronously when that is a cheap local operation,
    /// so a delete can never land after a later re-put of the same blob.
    fn delete_blob_now(&self, _id: &BlobId) -> Option<Result<(), StoreError>> {
        None
    }
    /// Store the blob whose verified raw bytes are in the local file `src`. Idempotent.
    async fn put_blob(&self, id: &BlobId, src: &Path) -> Result<(), StoreError>;
    /// Fetch, decode and verify the blob, writing its raw bytes to `dst` (created new).
    async fn get_blob(&self, id: &BlobId, dst: &Path) -> Result<u64, StoreError>;
    /// Download the blob into `fetch`, making each part readable as soon as it is verified.
    /// The default downloads and verifies the whole blob first.
    async fn fetch_into(&self, id: &BlobId, fetch: &crate::tiers::fetch::Fetch) -> Result<(), StoreError> {
        fetch_whole(self, id, fetch).await
    }
    /// Whether the store holds the blob.
    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError>;
    /// Delete the blob (absent is success).
    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError>;
    /// Every blob id in the store.
    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError>;
    /// Store a small metadata object (tree snapshots) at `<prefix>/<name>`.
    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Read a metadata object.
    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// Delete a metadata object (absent is fine).
    async fn delete_meta(&self, name: &str) -> Result<(), StoreError>;
    /// Names of the metadata objects under `dir` (all pages), sorted.
    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError>;
    /// Names under `dir` that sort after `after` (a full name), sorted: the start-after
    /// listing that reads a journal from a cursor in O(new objects).
    async fn list_meta_after(&self, dir: &str, after: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list_meta(dir).await?.into_iter().filter(|n| n.as_str() > after).collect())
    }
}

/// Download a blob whole (`get_blob` verifies it), copy it into the fetch file and make it all
/// readable: the path of stores without per-chunk proofs, and of blobs without proofs.
pub async fn fetch_whole<S: ObjectStore + ?Sized>(store: &S, id: &BlobId, fetch: &crate::tiers::fetch::Fetch) -> Result<(), StoreError> {
    let whole = fetch.path.with_extension("whole");
    let res = async {
        store.get_blob(id, &whole).await?;
        let mut src = std::fs::File::open(&whole).map_err(|e| StoreError::io("open fetched blob", e))?;
        let mut dst: &std::fs::File = &fetch.file;
        std::io::copy(&mut src, &mut dst).map_err(|e| StoreError::io("copy fetched blob", e))?;
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&whole);
    res?;
    fetch.mark_all();
    Ok(())
}
