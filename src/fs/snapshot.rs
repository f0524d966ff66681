//! Tree snapshots in the object store, so a node with an empty cache dir can rebuild the tree
//! from the bucket with a handful of requests (list the snapshot names, GET the newest).
//!
//! A snapshot is the index's own records for the linked tree — inodes, directory entries,
//! blob sizes, the inode counter — bincode-encoded and wrapped in the object envelope (zstd
//! when it pays, blake3-verified), at `<prefix>/snapshots/<time>-<node id>`. It is written at
//! a clean unmount and periodically, only while no upload is pending, so every blob it names
//! is in the bucket.
//! Restoring loads those records as the new node's index; blobs come from the bucket on
//! first read. (Changes after the newest snapshot need the change journal: not written yet.)

use std::sync::atomic::Ordering;

use crate::codec;
use crate::fs::core::FsCore;
use crate::fs::error::{FsError, FsResult};
use crate::fs::tree::Tree;
use crate::index::records::{self, BlobRecord};
use crate::index::{keys, Snapshot};
use crate::tiers::{ObjectStore, StoreError};

/// Where snapshots live under the store prefix.
pub const DIR: &str = "snapshots";
/// Snapshots of this node kept in the store; older ones are deleted.
pub const KEEP: usize = 3;

impl FsCore {
    /// The index records of the linked tree (unlinked-but-open inodes are left out).
    pub fn export_records(&self) -> Snapshot {
        export(&self.read_tree())
    }

    /// Write a snapshot if the tree changed since `last_change` and every blob it names is
    /// already durable in the object store (no upload pending: an upload is queued under the
    /// same lock that publishes its blob). Returns the change count the snapshot covers.
    pub fn snapshot_if_changed(&self, node: &str, last_change: u64) -> FsResult<Option<u64>> {
        let (changes, kv) = {
            let t = self.read_tree();
            let unpublished = !t.outbox.queue.is_empty();
            if t.changes == last_change || unpublished || self.store().upload_stats().pending.load(Ordering::SeqCst) != 0 {
                return Ok(None);
            }
            (t.changes, export(&t))
        };
        self.put_snapshot(node, kv)?;
        Ok(Some(changes))
    }
}

fn export(t: &Tree) -> Snapshot {
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
        // where each node's journal continues after this snapshot
        for (node, seq) in &t.outbox.cursors {
            kv.push((keys::cursor(node), seq.to_be_bytes().to_vec()));
        }
        kv.sort();
        kv
}

impl FsCore {
    /// Write a snapshot of the tree to the object store (the caller ensures every upload is
    /// durable) and delete this node's older ones beyond `KEEP`; returns its name.
    pub fn write_snapshot(&self, node: &str) -> FsResult<String> {
        self.put_snapshot(node, self.export_records())
    }

    fn put_snapshot(&self, node: &str, kv: Snapshot) -> FsResult<String> {
        let body = bincode::serialize(&kv).map_err(|e| FsError::Io(std::io::Error::other(e)))?;
        let env = codec::seal_meta(&body);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let name = format!("{DIR}/{:012}-{:09}-{node}", now.as_secs(), now.subsec_nanos());
        let remote = self.store().remote().clone();
        self.store().block_on(async {
            remote.put_meta(&name, env).await?;
            let mine: Vec<String> = remote.list_meta(DIR).await?.into_iter().filter(|n| n.ends_with(&format!("-{node}"))).collect();
            for old in mine.iter().take(mine.len().saturating_sub(KEEP)) {
                remote.delete_meta(old).await?;
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(name)
    }
}

/// This node's id, kept in `<cache>/node-id` (created on first use).
pub fn node_id(cache: &std::path::Path) -> std::io::Result<String> {
    let p = cache.join("node-id");
    match std::fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            let id = hex::encode(&blake3::hash(seed.as_bytes()).as_bytes()[..8]);
            std::fs::write(&p, &id)?;
            Ok(id)
        }
    }
}

/// Fetch and verify the newest snapshot in the store, if there is one.
pub async fn newest(remote: &dyn ObjectStore) -> Result<Option<(String, Snapshot)>, StoreError> {
    let Some(name) = remote.list_meta(DIR).await?.pop() else { return Ok(None) };
    let env = remote.get_meta(&name).await?;
    Ok(Some((name.clone(), open_snapshot(&name, &env)?)))
}

/// Verify and decode a snapshot object (self-verifying: its envelope records the blake3 of
/// its content).
pub fn open_snapshot(name: &str, env: &[u8]) -> Result<Snapshot, StoreError> {
    let bad = |why: String| StoreError::Config(format!("snapshot {name} is unusable: {why}"));
    let body = codec::open_meta(env).map_err(|e| bad(e.to_string()))?;
    bincode::deserialize(&body).map_err(|_| bad("undecodable records".into()))
}

/// Load the newest snapshot in the store into an empty index (the library's and the daemon's
/// restore of a node with an empty cache dir). Returns the records loaded, empty when the
/// store has no snapshot. Changes published after it are applied by polling the journals
/// from the cursors the snapshot carries ([`FsCore::poll_once`]).
pub async fn restore(remote: &dyn ObjectStore, index: &crate::index::Index) -> FsResult<Snapshot> {
    let Some((name, kv)) = newest(remote).await? else {
        tracing::info!("no tree snapshot in the object store; starting from the change journals");
        return Ok(Vec::new());
    };
    let inodes = kv.iter().filter(|(k, _)| k.first() == Some(&keys::INODE)).count();
    tracing::info!(%name, inodes, records = kv.len(), "restoring the tree");
    let mut done = 0;
    for chunk in kv.chunks(10_000) {
        index.commit(chunk.iter().map(|(k, v)| crate::index::Op::Put(k.clone(), v.clone())).collect())?;
        done += chunk.len();
        tracing::info!(%name, done, of = kv.len(), "restoring the tree");
    }
    index.sync()?;
    tracing::info!(%name, inodes, "tree restored; file contents come from the object store on first read");
    Ok(kv)
}
