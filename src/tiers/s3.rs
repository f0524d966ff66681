//! The S3 object store (rust-s3): any S3-compatible service. Objects are envelopes (docs/on-disk-format.md)
//! at `<prefix>/blobs/<aa>/<blake3-hex>`.
//!
//! - Puts skip blobs the bucket already has (HEAD first: content addressing makes that
//!   exact), compress off the async workers, use multipart above 16 MiB, and retry plain PUTs
//!   (rust-s3 never retries them; a content-addressed PUT is idempotent).
//! - Gets of large objects fetch 16 MiB ranges in parallel; raw payloads stream to the
//!   destination file at their offsets. Every byte is verified against the blob id before
//!   the destination is handed to the caller.
//! - Errors carry the bucket, the key and the HTTP status, never credentials.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::{Bucket, Region};

use std::sync::Arc;

use crate::blob::BlobId;
use crate::codec::{self, Compression, HEADER_LEN};
use crate::proof;
use crate::tiers::fetch::Fetch;
use crate::tiers::chunk_sink::{store_chunks, AtOffset, ChunkSink};
use crate::tiers::{ObjectStore, RemoteKind, StoreError};

/// Objects larger than this are uploaded with multipart.
const MULTIPART_ABOVE: usize = 16 << 20;
/// Size of each ranged GET of a large object.
const RANGE: u64 = 16 << 20;
/// Blobs up to this size are PUT without a HEAD first.
const PUT_WITHOUT_HEAD: u64 = 64 << 10;
/// Ranged GETs in flight per object.
const PARALLEL_GETS: usize = 8;
/// Proof chunks fetched per ranged GET once the first chunk is in.
const RANGE_CHUNKS: u64 = RANGE / proof::CHUNK;
/// Attempts for requests rust-s3 does not retry itself.
const ATTEMPTS: u32 = 4;
/// The slowest transfer rate a data request is allowed before it counts as stalled: a request
/// carrying up to `RANGE` bytes gets the request timeout plus `RANGE / SLOWEST_RATE` seconds.
/// rust-s3's deadline covers the whole transfer, so without this a 16 MiB range on a busy
/// link would fail at the same deadline as a HEAD.
const SLOWEST_RATE: u64 = 1 << 20;

/// Where and how to reach the bucket. Secrets are only passed through to the signer.
#[derive(Clone, Default)]
pub struct S3Config {
    /// bucket name
    pub bucket: String,
    /// key prefix (no leading or trailing `/`; may be empty)
    pub prefix: String,
    /// endpoint URL for non-AWS services (MinIO, Ceph, R2, SeaweedFS…)
    pub endpoint: Option<String>,
    /// region name
    pub region: String,
    /// path-style addressing (`endpoint/bucket/key`)
    pub path_style: bool,
    /// static credentials (otherwise the AWS environment/profile chain)
    pub access_key: Option<String>,
    /// secret for `access_key`
    pub secret_key: Option<String>,
    /// session token
    pub session_token: Option<String>,
    /// shared-credentials profile
    pub profile: Option<String>,
    /// compression of envelopes
    pub compression: Option<Compression>,
    /// longest wait for one request without a body (default 60 s); requests carrying data
    /// get this plus one second per MiB they may carry
    pub request_timeout: Option<Duration>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print secrets
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// An S3 bucket holding blobs.
pub struct S3Store {
    /// for requests without a body (HEAD, LIST, DELETE, small metadata)
    bucket: Box<Bucket>,
    /// for ranged GETs and PUTs of up to `RANGE` bytes: a longer deadline (`SLOWEST_RATE`)
    data: Box<Bucket>,
    prefix: String,
    compression: Compression,
    describe: String,
    /// PUT attempts made (each retry counts)
    pub puts: AtomicU64,
}

/// The one place an S3 client error becomes a `StoreError` with its kind.
fn request_error(what: String, e: S3Error) -> StoreError {
    let (kind, detail) = match &e {
        S3Error::Reqwest(r) if r.is_timeout() => return StoreError::Timeout { what },
        S3Error::HttpFailWithBody(code, body) => (RemoteKind::of_status(*code), format!("HTTP {code}: {}", body.chars().take(200).collect::<String>())),
        // transport failures (connect, reset, TLS, a broken body)
        other => (RemoteKind::Network, other.to_string()),
    };
    StoreError::Remote { what, kind, detail }
}

fn is_404(e: &S3Error) -> bool {
    matches!(e, S3Error::HttpFailWithBody(404, _))
}

impl S3Store {
    /// Build a client (no network traffic until used; `check` probes the bucket).
    pub fn new(cfg: &S3Config) -> Result<Self, StoreError> {
        let creds = Credentials::new(
            cfg.access_key.as_deref(),
            cfg.secret_key.as_deref(),
            None,
            cfg.session_token.as_deref(),
            cfg.profile.as_deref(),
        )
        .map_err(|e| StoreError::Config(format!("no usable AWS credentials: {e}")))?;
        let region = match &cfg.endpoint {
            Some(ep) => Region::Custom { region: cfg.region.clone(), endpoint: ep.trim_end_matches('/').to_string() },
            None => cfg.region.parse().map_err(|_| StoreError::Config(format!("unknown S3 region {:?}", cfg.region)))?,
        };
        let mut bucket = Bucket::new(&cfg.bucket, region, creds).map_err(|e| StoreError::Config(format!("S3 bucket {:?}: {e}", cfg.bucket)))?;
        if cfg.path_style {
            bucket = bucket.with_path_style();
        }
        let timeout = cfg.request_timeout.unwrap_or(Duration::from_secs(60));
        bucket.set_request_timeout(Some(timeout));
        let data = bucket
            .with_request_timeout(timeout + Duration::from_secs(RANGE.max(MULTIPART_ABOVE as u64) / SLOWEST_RATE))
            .map_err(|e| StoreError::Config(format!("S3 bucket {:?}: {e}", cfg.bucket)))?;
        let prefix = cfg.prefix.trim_matches('/').to_string();
        let describe = format!(
            "s3://{}/{}{}",
            cfg.bucket,
            prefix,
            cfg.endpoint.as_ref().map(|e| format!(" at {e}")).unwrap_or_default()
        );
        Ok(S3Store { bucket, data, prefix, compression: cfg.compression.unwrap_or(Compression::Auto(1)), describe, puts: AtomicU64::new(0) })
    }

    fn root(&self) -> String {
        if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) }
    }

    /// Key of a blob's object.
    pub fn key(&self, id: &BlobId) -> String {
        format!("{}blobs/{}/{}", self.root(), id.fanout(), id.to_hex())
    }

    /// Overwrite an object's bytes (tests use it to corrupt a blob in the bucket).
    pub async fn put_raw(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.bucket.put_object(key, bytes).await.map(|_| ()).map_err(|e| request_error(format!("PUT {key}"), e))
    }

    async fn put_envelope(&self, key: &str, env: &[u8]) -> Result<(), StoreError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            self.puts.fetch_add(1, Ordering::Relaxed);
            let res = if env.len() > MULTIPART_ABOVE {
                let mut reader = std::io::Cursor::new(env);
                self.data.put_object_stream(&mut reader, key).await.map(|_| ())
            } else {
                self.data.put_object(key, env).await.map(|_| ())
            };
            let err = match res {
                Ok(()) => return Ok(()),
                Err(e) => request_error(format!("PUT {key}"), e),
            };
            // only what may succeed next time is tried again (never a refused credential)
            if !err.is_transient() || attempt >= ATTEMPTS {
                return Err(err);
            }
            tracing::warn!(op = "PUT", key, attempt, error = %err, ?delay, "object store request failed; retrying");
            crate::metrics::get().store_retries.get_or_create(&crate::metrics::OpLabel { op: "put" }).inc();
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    async fn object_len(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.bucket.head_object(key).await {
            Ok((head, _)) => Ok(Some(head.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(request_error(format!("HEAD {key}"), e)),
        }
    }

    /// Every key under `prefix`, following continuation tokens past 1000 keys per page.
    async fn list_keys(&self, prefix: &str, start_after: Option<String>) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            // start-after applies to the first page; continuation tokens carry it afterwards
            let after = if token.is_none() { start_after.clone() } else { None };
            let (page, _) = self
                .bucket
                .list_page(prefix.to_string(), None, token.clone(), after, Some(1000))
                .await
                .map_err(|e| request_error(format!("LIST {prefix}"), e))?;
            out.extend(page.contents.into_iter().map(|o| o.key));
            if !page.is_truncated || page.next_continuation_token.is_none() {
                return Ok(out);
            }
            token = page.next_continuation_token;
        }
    }

    async fn list_meta_keys(&self, dir: &str, start_after: Option<String>) -> Result<Vec<String>, StoreError> {
        let root = self.root();
        let keys = self.list_keys(&format!("{root}{}/", dir.trim_end_matches('/')), start_after).await?;
        let mut out: Vec<String> = keys.iter().filter_map(|k| k.strip_prefix(&root).map(str::to_string)).collect();
        out.sort();
        Ok(out)
    }

    async fn range(&self, key: &str, start: u64, end_incl: u64) -> Result<Vec<u8>, StoreError> {
        let r = self.data.get_object_range(key, start, Some(end_incl)).await.map_err(|e| request_error(format!("GET {key} [{start}..={end_incl}]"), e))?;
        let data = r.to_vec();
        if data.len() as u64 != end_incl - start + 1 {
            return Err(StoreError::io(format!("GET {key}"), std::io::Error::other("short ranged read")));
        }
        Ok(data)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn check(&self) -> Result<(), StoreError> {
        let key = format!("{}.wombatfs-probe-{}", self.root(), std::process::id());
        self.bucket.put_object(&key, b"probe").await.map_err(|e| request_error(format!("bucket {} is not writable (PUT {key})", self.describe), e))?;
        let got = self.bucket.get_object(&key).await.map_err(|e| request_error(format!("bucket {} is not readable (GET {key})", self.describe), e))?;
        if got.as_slice() != b"probe" {
            return Err(StoreError::io(format!("bucket {}", self.describe), std::io::Error::other("probe object read back wrong")));
        }
        self.bucket.delete_object(&key).await.map_err(|e| request_error(format!("bucket {}: cannot delete (DELETE {key})", self.describe), e))?;
        Ok(())
    }

    async fn put_blob(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        let key = self.key(id);
        // an existing object is final (content addressing): a large blob is not sent twice;
        // a small one is sent without asking, since the HEAD costs as much as the PUT (one
        // round trip on a `--upload sync` close). Nodes with one `--compression` write the
        // same envelope; a small object is read in one GET either way.
        let small = tokio::fs::metadata(src).await.is_ok_and(|m| m.len() <= PUT_WITHOUT_HEAD);
        if !small && self.has_blob(id).await? {
            return Ok(());
        }
        let src = src.to_path_buf();
        let compression = self.compression;
        let env = tokio::task::spawn_blocking(move || match std::fs::read(&src) {
            Ok(raw) => Ok(codec::encode(&raw, compression)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(None),
            Err(e) => Err(Some(e)),
        })
        .await
        .map_err(|e| StoreError::io("encode blob", std::io::Error::other(e.to_string())))?;
        let env = match env {
            Ok(env) => env,
            Err(None) => return Err(StoreError::NotFound(*id)),
            Err(Some(e)) => return Err(StoreError::io("read blob for upload", e)),
        };
        self.put_envelope(&key, &env).await
    }

    async fn get_blob(&self, id: &BlobId, dst: &Path) -> Result<u64, StoreError> {
        let key = self.key(id);
        let len = self.object_len(&key).await?.ok_or(StoreError::NotFound(*id))?;
        let corrupt = |source| StoreError::Corrupt { id: *id, source };
        if len < HEADER_LEN as u64 {
            return Err(corrupt(codec::CodecError::Malformed("shorter than header")));
        }
        let first = self.range(&key, 0, len.min(RANGE) - 1).await?;
        // the one envelope parser (every format version), as on every other read path
        let header = match codec::parse_header(&first, id).map_err(corrupt)? {
            Ok(h) => h,
            Err(_) => return Err(corrupt(codec::CodecError::Malformed("truncated header"))),
        };
        let raw_len = header.raw_len;
        let ranges: Vec<(u64, u64)> = (1..len.div_ceil(RANGE)).map(|i| (i * RANGE, ((i + 1) * RANGE).min(len) - 1)).collect();
        if header.codec == codec::Codec::Zstd {
            // compressed: assemble, decode and verify in memory
            let key_ref = &key;
            let rest: Vec<Vec<u8>> = stream::iter(ranges.into_iter().map(move |(a, b)| self.range(key_ref, a, b)))
                .buffered(PARALLEL_GETS)
                .try_collect()
                .await?;
            let env: Vec<u8> = std::iter::once(first).chain(rest).flatten().collect();
            let raw = tokio::task::spawn_blocking({
                let id = *id;
                move || codec::decode(&env, &id)
            })
            .await
            .map_err(|e| StoreError::io("decode blob", std::io::Error::other(e.to_string())))?
            .map_err(corrupt)?;
            std::fs::write(dst, &raw).map_err(|e| StoreError::io("write fetched blob", e))?;
            return Ok(raw.len() as u64);
        }
        // raw payload (after the header and, in version 2, the proof table): stream every
        // range to its offset, then verify the whole file
        let p = header.payload_offset as u64;
        if len.checked_sub(p) != Some(raw_len) {
            return Err(corrupt(codec::CodecError::Malformed("raw length does not match header")));
        }
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(dst).map_err(|e| StoreError::io("create fetch file", e))?;
        file.write_all_at(&first[p as usize..], 0).map_err(|e| StoreError::io("write fetched blob", e))?;
        let (file_ref, key_ref) = (&file, &key);
        stream::iter(ranges.into_iter().map(move |(a, b)| {
            let (file, key) = (file_ref, key_ref);
            async move {
                // streamed to its offset: no range body is held in memory
                let what = || format!("GET {key} [{a}..={b}]");
                let mut sink = AtOffset::new(file, a - p);
                let res = self.data.get_object_range_to_writer(key, a, Some(b), &mut sink).await;
                match res {
                    Ok(200 | 206) if sink.written == b - a + 1 => Ok(()),
                    Ok(code) => Err(StoreError::io(what(), std::io::Error::other(format!("status {code}, {} of {} bytes", sink.written, b - a + 1)))),
                    Err(e) => Err(request_error(what(), e)),
                }
            }
        }))
        .buffer_unordered(PARALLEL_GETS)
        .try_collect::<Vec<()>>()
        .await?;
        let path = dst.to_path_buf();
        let (actual, n) = tokio::task::spawn_blocking(move || std::fs::File::open(&path).and_then(BlobId::of_reader))
            .await
            .map_err(|e| StoreError::io("verify blob", std::io::Error::other(e.to_string())))?
            .map_err(|e| StoreError::io("verify blob", e))?;
        if actual != *id || n != raw_len {
            let _ = std::fs::remove_file(dst);
            return Err(corrupt(codec::CodecError::HashMismatch { expected: *id, actual }));
        }
        Ok(n)
    }

    async fn fetch_into(&self, id: &BlobId, fetch: &Fetch) -> Result<(), StoreError> {
        let key = self.key(id);
        let corrupt = |source| StoreError::Corrupt { id: *id, source };
        // one GET for the header, the whole proof table and the first chunk (sized from the
        // raw length the index knows; a shorter object just returns less)
        let want = HEADER_LEN as u64 + 4 + 32 * proof::chunks(fetch.len) + proof::CHUNK;
        let first = match self.data.get_object_range(&key, 0, Some(want - 1)).await {
            Ok(r) => r.into_bytes(),
            Err(e) if is_404(&e) => return Err(StoreError::NotFound(*id)),
            Err(e) => return Err(request_error(format!("GET {key} [0..={}]", want - 1), e)),
        };
        if first.len() < HEADER_LEN {
            return Err(corrupt(codec::CodecError::Malformed("shorter than header")));
        }
        let header = match codec::parse_header(&first, id).map_err(corrupt)? {
            Ok(h) => h,
            Err(_) => return Err(corrupt(codec::CodecError::Malformed("truncated header"))),
        };
        let Some(table) = header.proofs else {
            // small or compressed blob: no proofs, fetch and verify it whole
            return crate::tiers::fetch_whole(self, id, fetch).await;
        };
        if header.raw_len != fetch.len {
            return Err(corrupt(codec::CodecError::Malformed("blob length differs from the index")));
        }
        let table = Arc::new(table);
        let p = header.payload_offset as u64;
        let done = store_chunks(fetch, &table, 0, &first[p as usize..], *id)?;
        let n = table.len() as u64;
        let groups: Vec<(u64, u64)> = (done as u64..n).step_by(RANGE_CHUNKS as usize).map(|c| (c, (c + RANGE_CHUNKS).min(n))).collect();
        let key_ref = &key;
        let table_ref = &table;
        stream::iter(groups.into_iter().map(move |(c0, c1)| async move {
            let start = p + c0 * proof::CHUNK;
            let end = p + (c1 * proof::CHUNK).min(fetch.len) - 1;
            // the body streams through the sink: each chunk is verified and readable on arrival
            let mut sink = ChunkSink::new(fetch, table_ref, *id, c0 as usize, c1 as usize);
            let res = self.data.get_object_range_to_writer(key_ref, start, Some(end), &mut sink).await;
            if let Some(e) = sink.error.take() {
                return Err(e);
            }
            match res {
                Ok(200 | 206) if sink.finished() => Ok(()),
                Ok(code) => Err(StoreError::io(format!("GET {key_ref} [{start}..={end}]"), std::io::Error::other(format!("status {code}, or a short body")))),
                Err(e) => Err(request_error(format!("GET {key_ref} [{start}..={end}]"), e)),
            }
        }))
        .buffer_unordered(PARALLEL_GETS)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError> {
        let key = self.key(id);
        self.bucket.object_exists(&key).await.map_err(|e| request_error(format!("HEAD {key}"), e))
    }

    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        let key = self.key(id);
        match self.bucket.delete_object(&key).await {
            Ok(_) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            Err(e) => Err(request_error(format!("DELETE {key}"), e)),
        }
    }

    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let key = format!("{}{name}", self.root());
        self.put_envelope(&key, &bytes).await
    }

    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let key = format!("{}{name}", self.root());
        self.data.get_object(&key).await.map(|r| r.to_vec()).map_err(|e| request_error(format!("GET {key}"), e))
    }

    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        let key = format!("{}{name}", self.root());
        match self.bucket.delete_object(&key).await {
            Ok(_) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            Err(e) => Err(request_error(format!("DELETE {key}"), e)),
        }
    }

    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        self.list_meta_keys(dir, None).await
    }

    async fn list_meta_after(&self, dir: &str, after: &str) -> Result<Vec<String>, StoreError> {
        self.list_meta_keys(dir, Some(format!("{}{after}", self.root()))).await
    }

    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        let keys = self.list_keys(&format!("{}blobs/", self.root()), None).await?;
        Ok(keys.iter().filter_map(|k| k.rsplit('/').next().and_then(BlobId::from_hex)).collect())
    }
}
