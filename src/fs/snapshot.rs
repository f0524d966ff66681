//! Taking a tree snapshot of this node: the index records of the linked tree, written to the
//! bucket by [`crate::sync::snapshot`] only while every blob they name is durable there.

use std::sync::atomic::Ordering;

use crate::fs::namespace::Namespace;
use crate::fs::error::FsResult;
use crate::fs::tree::Tree;
use crate::index::records::{self, BlobRecord};
use crate::index::{keys, Records};
use crate::sync::snapshot;

impl Namespace {
    /// The index records of the linked tree (unlinked-but-open inodes are left out).
    pub fn export_records(&self) -> Records {
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

fn export(t: &Tree) -> Records {
    let mut kv = Records::default();
    export_to(t, false, |k, v| kv.push(k, v));
    kv.sorted()
}

/// Hand every record of the tree to `put`: its inodes (unlinked-but-open ones with
/// `orphans`), directory entries, blobs, tombstones and journal cursors.
fn export_to(t: &Tree, orphans: bool, mut put: impl FnMut(&[u8], &[u8])) {
    put(&keys::format_version(), &keys::FORMAT.to_be_bytes());
    // (never written while no inode was allocated: a missing key means the same)
    if t.next_ino != crate::fs::tree::ROOT + 1 {
        put(&keys::next_ino(), &t.next_ino.to_be_bytes());
    }
    for (ino, rec) in t.inodes.iter() {
        if orphans || !t.orphans.contains(&ino) {
            put(&keys::inode(ino), &records::encode_inode(rec));
        }
    }
    for (parent, children) in &t.dirs {
        for (name, ino) in children {
            put(&keys::dirent(*parent, name), &ino.to_be_bytes());
        }
    }
    t.blobs.for_each(|id, e| put(&keys::blob(id), &records::encode(&BlobRecord { size: e.size })));
    // removals a node restoring from this snapshot must still order late writes against
    for (path, stamp) in &t.tombs {
        put(&keys::tomb(path), &stamp.to_bytes());
    }
    // where each node's journal continues after this snapshot
    for (node, seq) in &t.outbox.cursors {
        put(&keys::cursor(node), &seq.to_be_bytes());
    }
}

impl Namespace {
    /// Close the index, with a checkpoint of the tree for the next mount when the tree holds
    /// everything the index does: no change waits to be published, no upload is pending (their
    /// records are the index's alone). The tree is locked while the checkpoint is written, so
    /// no commit lands between its token and the export; it is unlocked before the close,
    /// which waits on the runtime whose tasks (the publisher, a metrics scrape) read the tree.
    /// A commit after the checkpoint makes the close drop it.
    pub fn close_index(&self) -> FsResult<()> {
        {
            let t = self.write_tree();
            let pending = self.store().upload_stats().pending.load(Ordering::SeqCst);
            if !t.outbox.queue.is_empty() || pending != 0 {
                tracing::info!(unpublished = t.outbox.queue.len(), pending_uploads = pending, "no index checkpoint: the next mount scans the index");
            } else if let Err(e) = self.index.write_checkpoint(|w| export_to(&t, true, |k, v| w.put(k, v))) {
                tracing::warn!(error = %e, "no index checkpoint: the next mount scans the index");
            }
        }
        Ok(self.index.close()?)
    }
}

impl Namespace {
    /// Write a snapshot of the tree to the object store (the caller ensures every upload is
    /// durable) and delete this node's older ones beyond `KEEP`; returns its name.
    pub fn write_snapshot(&self, node: &str) -> FsResult<String> {
        self.put_snapshot(node, self.export_records())
    }

    fn put_snapshot(&self, node: &str, kv: Records) -> FsResult<String> {
        let objects = self.store().objects().clone();
        Ok(self.store().block_on(snapshot::put(objects.as_ref(), node, &kv))?)
    }
}

