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
        let mut kv = vec![
            (keys::format_version(), keys::FORMAT.to_be_bytes().to_vec()),
            (keys::next_ino(), t.next_ino.to_be_bytes().to_vec()),
        ];
        for (ino, rec) in &t.inodes {
            if !t.orphans.contains(ino) {
                kv.push((keys::inode(*ino), records::encode_inode(rec)));
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
        // removals a node restoring from this snapshot must still order late writes against
        for (path, stamp) in &t.tombs {
            kv.push((keys::tomb(path), stamp.to_bytes().to_vec()));
        }
        // where each node's journal continues after this snapshot
        for (node, seq) in &t.outbox.cursors {
            kv.push((keys::cursor(node), seq.to_be_bytes().to_vec()));
        }
        kv.sort();
        kv
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

