//! Tree snapshots in the bucket, so a node with an empty cache dir rebuilds the tree with a
//! handful of requests (list the snapshot names, GET the newest), then follows the change
//! journals from the cursors the snapshot carries.
//!
//! A snapshot holds the index records of one node's linked tree — inodes, directory entries,
//! blob sizes, the inode counter, journal cursors — bincode-encoded in a self-verifying
//! envelope (zstd when it pays, blake3), at `<prefix>/snapshots/<time>-<node id>`. Nodes
//! write one at a clean unmount and periodically, only while no upload is pending, so every
//! blob it names is in the bucket. Restoring loads the records as the new node's index;
//! contents come from the bucket on first read.

use crate::codec;
use crate::index::{keys, Index, IndexError, Op, Records};
use crate::tiers::{ObjectStore, StoreError};

/// Where snapshots live under the store prefix.
pub const DIR: &str = "snapshots";
/// Snapshots of this node kept in the store; older ones are deleted.
pub const KEEP: usize = 3;

/// Write a snapshot of `node`'s records and delete its older ones beyond [`KEEP`]; returns
/// its name. The caller ensures every blob the records name is durable in the store.
pub async fn put(objects: &dyn ObjectStore, node: &str, kv: &Records) -> Result<String, StoreError> {
    let body = bincode::serialize(kv).map_err(|e| StoreError::io("encode snapshot", std::io::Error::other(e)))?;
    let env = codec::seal_meta(&body);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let name = format!("{DIR}/{:012}-{:09}-{node}", now.as_secs(), now.subsec_nanos());
    objects.put_meta(&name, env).await?;
    // crash window: the new snapshot is in the bucket, the older ones not yet deleted
    fail::fail_point!("snapshot-after-put");
    let mine: Vec<String> = objects.list_meta(DIR).await?.into_iter().filter(|n| owner(n) == Some(node)).collect();
    for old in mine.iter().take(mine.len().saturating_sub(KEEP)) {
        objects.delete_meta(old).await?;
    }
    Ok(name)
}

/// The node that wrote a snapshot, from its name `snapshots/<secs>-<nanos>-<node>` (node ids
/// may hold `-`).
pub fn owner(name: &str) -> Option<&str> {
    name.strip_prefix(DIR)?.strip_prefix('/')?.splitn(3, '-').nth(2)
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
pub async fn newest(remote: &dyn ObjectStore) -> Result<Option<(String, Records)>, StoreError> {
    let Some(name) = remote.list_meta(DIR).await?.pop() else { return Ok(None) };
    let env = remote.get_meta(&name).await?;
    Ok(Some((name.clone(), open_snapshot(&name, &env)?)))
}

/// Verify and decode a snapshot object (self-verifying: its envelope records the blake3 of
/// its content).
pub fn open_snapshot(name: &str, env: &[u8]) -> Result<Records, StoreError> {
    let bad = |why: String| StoreError::Config(format!("snapshot {name} is unusable: {why}"));
    let body = codec::open_meta(env).map_err(|e| bad(e.to_string()))?;
    bincode::deserialize(&body).map_err(|_| bad("undecodable records".into()))
}

/// Load the newest snapshot in the store into an empty index (the library's and the daemon's
/// restore of a node with an empty cache dir). Returns the records loaded, empty when the
/// store has no snapshot. Changes published after it are applied by polling the journals
/// from the cursors the snapshot carries (`FsCore::poll_once`).
pub async fn restore(remote: &dyn ObjectStore, index: &Index) -> Result<Records, RestoreError> {
    let Some((name, kv)) = newest(remote).await? else {
        tracing::info!("no tree snapshot in the object store; starting from the change journals");
        return Ok(Records::default());
    };
    let inodes = kv.iter().filter(|(k, _)| k.first() == Some(&keys::INODE)).count();
    tracing::info!(%name, inodes, records = kv.len(), "restoring the tree");
    let (mut done, mut ops) = (0, Vec::with_capacity(10_000));
    for (i, (k, v)) in kv.iter().enumerate() {
        ops.push(Op::Put(k.to_vec(), v.to_vec()));
        if ops.len() == 10_000 || i + 1 == kv.len() {
            done += ops.len();
            index.commit(std::mem::take(&mut ops))?;
            tracing::info!(%name, done, of = kv.len(), "restoring the tree");
        }
    }
    index.sync()?;
    tracing::info!(%name, inodes, "tree restored; file contents come from the object store on first read");
    Ok(kv)
}

/// Why a restore failed: the bucket, or the local index it is written into.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// reading the snapshot
    #[error(transparent)]
    Store(#[from] StoreError),
    /// writing the records
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_owner_of_a_snapshot_is_the_whole_node_id() {
        assert_eq!(super::owner("snapshots/001700000000-000000001-0af3"), Some("0af3"));
        assert_eq!(super::owner("snapshots/001700000000-000000001-node-b_2"), Some("node-b_2"));
        assert_eq!(super::owner("journal/001700000000-000000001-0af3"), None);
        assert_eq!(super::owner("snapshots/garbage"), None);
    }
}
