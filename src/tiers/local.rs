//! The embedded default object store: a local directory with the S3 key layout
//! (`<root>/blobs/<aa>/<blake3-hex>`).
//!
//! On the same filesystem as the flat tier a blob is stored as a **hard link** to the flat
//! file, so the bytes are on disk once (the "1× unique data"); such objects are raw
//! and verified by re-hashing on read. On another filesystem (e.g. a shared NFS mount) objects
//! are written as envelopes (docs/on-disk-format.md). Readers accept both forms.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::blob::BlobId;
use crate::codec::{self, Compression};
use crate::tiers::{ObjectStore, StoreError};

/// A directory-backed object store.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    compression: Compression,
}

impl LocalStore {
    /// Store a blob: a hard link of the flat file on the same filesystem (no second copy),
    /// an envelope copy elsewhere. Idempotent.
    fn put_sync(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        let dst = self.object_path(id);
        match fs::hard_link(src, &dst) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(*id)),
            Err(_) => {} // other filesystem or no link support: write an envelope copy
        }
        let raw = fs::read(src).map_err(io("read", src))?;
        let env = codec::encode(&raw, self.compression);
        let tmp = self.tmp_path();
        let res = (|| {
            let mut f = File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &env)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map_err(io("write object", &dst))
    }

    fn delete_sync(&self, id: &BlobId) -> Result<(), StoreError> {
        match fs::remove_file(self.object_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("delete object {id}"), e)),
        }
    }

    /// Open (creating) a store rooted at `root`.
    pub fn open(root: &Path, compression: Compression) -> Result<Self, StoreError> {
        for i in 0..=255u8 {
            let d = root.join("blobs").join(hex::encode([i]));
            fs::create_dir_all(&d).map_err(|e| StoreError::io(format!("create {}", d.display()), e))?;
        }
        Ok(LocalStore { root: root.to_path_buf(), compression })
    }

    /// Path of the object holding a blob.
    pub fn object_path(&self, id: &BlobId) -> PathBuf {
        self.root.join("blobs").join(id.fanout()).join(id.to_hex())
    }

    fn tmp_path(&self) -> PathBuf {
        self.root.join(format!(".tmp-{}-{:x}", std::process::id(), rand_u64()))
    }
}

fn rand_u64() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    u64::from_le_bytes(blake3::hash(&[t.to_le_bytes().as_slice(), &c.to_le_bytes()].concat()).as_bytes()[..8].try_into().unwrap_or([0; 8]))
}
static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let what = format!("{what} {}", path.display());
    move |e| StoreError::io(what, e)
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn check(&self) -> Result<(), StoreError> {
        let probe = self.tmp_path();
        fs::write(&probe, b"wombatfs write probe").map_err(io("cannot write to object store", &self.root))?;
        fs::remove_file(&probe).map_err(io("cannot delete in object store", &self.root))?;
        Ok(())
    }

    fn put_blob_now(&self, id: &BlobId, src: &Path) -> Option<Result<(), StoreError>> {
        Some(self.put_sync(id, src))
    }

    fn is_local(&self) -> bool {
        true
    }

    fn delete_blob_now(&self, id: &BlobId) -> Option<Result<(), StoreError>> {
        Some(self.delete_sync(id))
    }

    async fn put_blob(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        self.put_sync(id, src)
    }

    async fn get_blob(&self, id: &BlobId, dst: &Path) -> Result<u64, StoreError> {
        let src = self.object_path(id);
        let mut f = File::open(&src).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound(*id),
            _ => StoreError::io(format!("open {}", src.display()), e),
        })?;
        let mut head = [0u8; 4];
        let is_env = f.read_exact(&mut head).is_ok() && &head == codec::MAGIC;
        let (raw_id, len) = BlobId::of_reader(File::open(&src).map_err(io("open", &src))?).map_err(io("read", &src))?;
        if raw_id == *id {
            // a raw object (hard link of a flat file): share it again, or copy across filesystems
            if fs::hard_link(&src, dst).is_err() {
                fs::copy(&src, dst).map_err(io("copy", &src))?;
            }
            return Ok(len);
        }
        if !is_env {
            return Err(StoreError::Corrupt {
                id: *id,
                source: codec::CodecError::HashMismatch { expected: *id, actual: raw_id },
            });
        }
        let env = fs::read(&src).map_err(io("read", &src))?;
        let raw = codec::decode(&env, id).map_err(|source| StoreError::Corrupt { id: *id, source })?;
        fs::write(dst, &raw).map_err(io("write", dst))?;
        Ok(raw.len() as u64)
    }

    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError> {
        Ok(self.object_path(id).exists())
    }

    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        self.delete_sync(id)
    }

    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let dst = self.root.join(name);
        if let Some(dir) = dst.parent() {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let tmp = self.tmp_path();
        fs::write(&tmp, &bytes).and_then(|_| fs::rename(&tmp, &dst)).map_err(io("write", &dst))
    }

    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        fs::read(self.root.join(name)).map_err(io("read", &self.root.join(name)))
    }

    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.root.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(format!("delete {name}"), e)),
            _ => Ok(()),
        }
    }

    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let d = self.root.join(dir);
        let mut out: Vec<String> = match fs::read_dir(&d) {
            Ok(rd) => rd.flatten().map(|e| format!("{}/{}", dir.trim_end_matches('/'), e.file_name().to_string_lossy())).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(format!("list {}", d.display()), e)),
        };
        out.sort();
        Ok(out)
    }

    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        let mut out = Vec::new();
        let blobs = self.root.join("blobs");
        for sub in fs::read_dir(&blobs).map_err(io("list", &blobs))? {
            let sub = sub.map_err(io("list", &blobs))?.path();
            if !sub.is_dir() {
                continue;
            }
            for e in fs::read_dir(&sub).map_err(io("list", &sub))? {
                let e = e.map_err(io("list", &sub))?;
                if let Some(id) = e.file_name().to_str().and_then(BlobId::from_hex) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn put_links_get_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("objects"), Compression::Auto(1)).unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"block bytes").unwrap();
        let id = BlobId::of(b"block bytes");
        rt().block_on(async {
            store.put_blob(&id, &src).await.unwrap();
            store.put_blob(&id, &src).await.unwrap(); // idempotent
            assert_eq!(fs::metadata(&src).unwrap().nlink(), 2, "same disk: hard link, not a copy");
            let dst = dir.path().join("dst");
            assert_eq!(store.get_blob(&id, &dst).await.unwrap(), 11);
            assert_eq!(fs::read(&dst).unwrap(), b"block bytes");
            assert_eq!(store.list_blobs().await.unwrap(), vec![id]);
            store.delete_blob(&id).await.unwrap();
            assert!(!store.has_blob(&id).await.unwrap());
            assert!(matches!(store.get_blob(&id, &dir.path().join("x")).await, Err(StoreError::NotFound(_))));
        });
    }

    #[test]
    fn envelope_objects_are_read_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("objects"), Compression::Auto(1)).unwrap();
        let data = vec![1u8; 10_000];
        let id = BlobId::of(&data);
        let p = store.object_path(&id);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, codec::encode(&data, Compression::Zstd(1))).unwrap();
        rt().block_on(async {
            let dst = dir.path().join("dst");
            store.get_blob(&id, &dst).await.unwrap();
            assert_eq!(fs::read(&dst).unwrap(), data);
            fs::write(&p, b"garbage that is not the blob").unwrap();
            assert!(matches!(store.get_blob(&id, &dir.path().join("d2")).await, Err(StoreError::Corrupt { .. })));
        });
    }
}
