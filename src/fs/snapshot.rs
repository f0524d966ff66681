//! Tree snapshots in the object store, so a node with an empty cache dir can rebuild the tree
//! from the bucket with a handful of requests (list the snapshot names, GET the newest).
//!
//! A snapshot is the index's own records for the linked tree — inodes, directory entries,
//! blob sizes, the inode counter — bincode-encoded and wrapped in the object envelope (zstd
//! when it pays, blake3-verified), at `<prefix>/snapshots/<time>-<pid>`. It is written at a
//! clean unmount once every upload is durable, so every blob it names is in the bucket.
//! Restoring loads those records as the new node's index; blobs come from the bucket on
//! first read. (Changes after the newest snapshot need the change journal: not written yet.)

use crate::blob::BlobId;
use crate::codec::{self, Compression};
use crate::fs::core::FsCore;
use crate::fs::error::{FsError, FsResult};
use crate::index::records::{self, BlobRecord};
use crate::index::{keys, Snapshot};
use crate::tiers::{ObjectStore, StoreError};

/// Where snapshots live under the store prefix.
pub const DIR: &str = "snapshots";

impl FsCore {
    /// The index records of the linked tree (unlinked-but-open inodes are left out).
    pub fn export_records(&self) -> Snapshot {
        let t = self.read_tree();
        let mut kv = vec![
            (keys::format_version(), keys::FORMAT.to_be_bytes().to_vec()),
            (keys::next_ino(), t.next_ino.to_be_bytes().to_vec()),
        ];
        for (ino, rec) in &t.inodes {
            if !t.orphans.contains(ino) {
                kv.push((keys::inode(*ino), records::encode(rec)));
            }
        }
        for (parent, children) in &t.dirs {
            for (name, ino) in children {
                kv.push((keys::dirent(*parent, name), ino.to_be_bytes().to_vec()));
            }
        }
        for (id, e) in &t.blobs {
            kv.push((keys::blob(id), records::encode(&BlobRecord { size: e.size })));
        }
        kv.sort();
        kv
    }

    /// Write a snapshot of the tree to the object store; returns its name.
    pub fn write_snapshot(&self) -> FsResult<String> {
        let body = bincode::serialize(&self.export_records()).map_err(|e| FsError::Io(std::io::Error::other(e)))?;
        let env = codec::encode(&body, Compression::Auto(3));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let name = format!("{DIR}/{:012}-{:09}-{}", now.as_secs(), now.subsec_nanos(), std::process::id());
        let remote = self.store().remote().clone();
        self.store().block_on(remote.put_meta(&name, env))?;
        Ok(name)
    }
}

/// Fetch and verify the newest snapshot in the store, if there is one.
pub async fn newest(remote: &dyn ObjectStore) -> Result<Option<(String, Snapshot)>, StoreError> {
    let Some(name) = remote.list_meta(DIR).await?.pop() else { return Ok(None) };
    let env = remote.get_meta(&name).await?;
    let bad = |why: &'static str| StoreError::Config(format!("snapshot {name} is unusable: {why}"));
    if env.len() < codec::HEADER_LEN {
        return Err(bad("too short"));
    }
    // a snapshot is self-verifying: its envelope records the blake3 of its content
    let id = BlobId(env[16..48].try_into().map_err(|_| bad("header"))?);
    let body = codec::decode(&env, &id).map_err(|source| StoreError::Corrupt { id, source })?;
    let kv: Snapshot = bincode::deserialize(&body).map_err(|_| bad("undecodable records"))?;
    Ok(Some((name, kv)))
}
