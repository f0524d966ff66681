//! The namespace of a bucket as a table of paths, rebuilt without FUSE and without a cache
//! dir: the newest tree snapshot, then every node's journal after the cursors it carries.
//! This is the library's `restore`, and what the collector uses to know which blobs names
//! still refer to.

use std::collections::{BTreeMap, HashMap};

use crate::blob::BlobId;
use crate::hlc::Stamp;
use crate::index::records::{self, InodeKind, InodeRecord};
use crate::index::{keys, Records};
use crate::sync::apply::{self, Found, Outcome};
use crate::sync::change::{self, Attrs, Batch, Change};
use crate::tiers::{ObjectStore, StoreError};

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// a regular file
    File {
        /// its content
        blob: BlobId,
        /// raw size
        size: u64,
        /// attributes
        attrs: Attrs,
        /// version
        stamp: Stamp,
    },
    /// a symbolic link
    Symlink {
        /// target
        target: Vec<u8>,
        /// attributes
        attrs: Attrs,
        /// version
        stamp: Stamp,
    },
    /// a directory
    Dir {
        /// attributes
        attrs: Attrs,
    },
}

/// Every name of a bucket's namespace (`ns/dir/file` → entry), and how far each node's
/// journal has been applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTable {
    /// path → entry, sorted
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// node id → last change applied
    pub cursors: BTreeMap<String, u64>,
    /// removed names → the version removed ([`apply`]'s tombstones)
    pub tombs: BTreeMap<Vec<u8>, Stamp>,
}

fn attrs_of(r: &InodeRecord) -> Attrs {
    Attrs { perm: r.perm, uid: r.uid, gid: r.gid, mtime: r.mtime }
}

fn is_within(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

impl NameTable {
    /// The names of a tree snapshot (index records of one node).
    pub fn from_snapshot(kv: &Records) -> Self {
        let mut inodes = HashMap::new();
        let mut children: HashMap<u64, Vec<(Vec<u8>, u64)>> = HashMap::new();
        let mut t = NameTable::default();
        for (k, v) in kv {
            match k.first() {
                Some(&keys::INODE) => {
                    if let Some(r) = records::decode_inode(v) {
                        inodes.insert(r.ino, r);
                    }
                }
                Some(&keys::DIRENT) => {
                    if let (Some((p, name)), Ok(b)) = (keys::split_dirent(k), <[u8; 8]>::try_from(v)) {
                        children.entry(p).or_default().push((name.to_vec(), u64::from_be_bytes(b)));
                    }
                }
                Some(&keys::TOMB) => {
                    if let Some(s) = Stamp::from_bytes(v) {
                        t.tombs.insert(k[1..].to_vec(), s);
                    }
                }
                Some(&keys::CURSOR) => {
                    if let Some((node, seq)) = keys::decode_cursor(k, v) {
                        t.cursors.insert(node.to_string(), seq);
                    }
                }
                _ => {}
            }
        }
        // walk from the root; a directory is visited once even if a corrupt snapshot loops
        let mut stack = vec![(1u64, Vec::new())];
        let mut seen = std::collections::HashSet::new();
        while let Some((dir, path)) = stack.pop() {
            if !seen.insert(dir) {
                continue;
            }
            for (name, ino) in children.get(&dir).into_iter().flatten() {
                let Some(r) = inodes.get(ino) else { continue };
                let p = if path.is_empty() { name.clone() } else { [&path[..], b"/", name].concat() };
                let e = match &r.kind {
                    InodeKind::File { blob } => Entry::File { blob: *blob, size: r.size, attrs: attrs_of(r), stamp: r.stamp },
                    InodeKind::Symlink { target } => Entry::Symlink { target: target.clone(), attrs: attrs_of(r), stamp: r.stamp },
                    InodeKind::Special { .. } => continue, // a node's own, never published
                    InodeKind::Dir { .. } => {
                        stack.push((*ino, p.clone()));
                        Entry::Dir { attrs: attrs_of(r) }
                    }
                };
                t.entries.insert(p, e);
            }
        }
        t
    }

    fn take_subtree(&mut self, path: &[u8]) -> Vec<(Vec<u8>, Entry)> {
        let keys: Vec<Vec<u8>> = self.entries.range(path.to_vec()..).map(|(k, _)| k.clone()).take_while(|k| k == path || k.starts_with(path)).filter(|k| k == path || is_within(k, path)).collect();
        keys.into_iter().filter_map(|k| self.entries.remove(&k).map(|e| (k, e))).collect()
    }

    /// Apply one change of version `stamp` by the rules every follower uses
    /// ([`crate::sync::apply`]).
    pub fn apply(&mut self, c: &Change, stamp: Stamp) -> Outcome {
        match apply::apply(self, c, stamp) {
            Ok(o) => o,
            Err(why) => Outcome::Skipped(why),
        }
    }

    /// Create the missing directories above `path` (with default attributes, as a mounted
    /// node does); refused when a file is in the way.
    fn make_parents(&mut self, path: &[u8]) -> Result<(), &'static str> {
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|b| *b == b'/') {
            end += i;
            match self.entries.get(&path[..end]) {
                Some(Entry::Dir { .. }) => {}
                Some(_) => return Err("a file is where a parent directory should be"),
                None => {
                    self.entries.insert(path[..end].to_vec(), Entry::Dir { attrs: Attrs { perm: 0o755, uid: 0, gid: 0, mtime: Default::default() } });
                }
            }
            end += 1;
        }
        Ok(())
    }

    /// Apply a node's batch past this table's cursor for it.
    pub fn apply_batch(&mut self, batch: &Batch) {
        let cursor = self.cursors.get(&batch.node).copied().unwrap_or(0);
        for (i, (_, c)) in batch.changes.iter().enumerate().filter(|(_, (s, _))| *s > cursor) {
            let _ = self.apply(c, batch.stamp(i));
        }
        self.cursors.insert(batch.node.clone(), batch.last_seq().max(cursor));
    }

    /// The blobs the names refer to.
    pub fn blobs(&self) -> std::collections::HashSet<BlobId> {
        self.entries.values().filter_map(|e| match e {
            Entry::File { blob, .. } => Some(*blob),
            _ => None,
        }).collect()
    }
}

impl apply::Target for NameTable {
    type Error = &'static str;

    fn find(&self, path: &[u8]) -> Result<Found, Self::Error> {
        Ok(match self.entries.get(path) {
            None => Found::Nothing,
            Some(Entry::File { blob, stamp, .. }) => Found::File(*blob, *stamp),
            Some(Entry::Symlink { target, stamp, .. }) => Found::Symlink(target.clone(), *stamp),
            Some(Entry::Dir { .. }) => {
                let under = [path, b"/"].concat();
                Found::Dir { empty: !self.entries.range(under.clone()..).next().is_some_and(|(k, _)| k.starts_with(&under)) }
            }
        })
    }

    fn tomb(&self, path: &[u8]) -> Result<Stamp, Self::Error> {
        Ok(self.tombs.get(path).copied().unwrap_or(Stamp::ZERO))
    }

    fn set_tomb(&mut self, path: &[u8], stamp: Stamp) -> Result<(), Self::Error> {
        let t = self.tombs.entry(path.to_vec()).or_default();
        *t = (*t).max(stamp);
        Ok(())
    }

    fn bind(&mut self, c: &Change, stamp: Stamp) -> Result<(), Self::Error> {
        let (path, e) = match c {
            Change::File { path, blob, size, attrs } => (path, Entry::File { blob: *blob, size: *size, attrs: *attrs, stamp }),
            Change::Symlink { path, target, attrs } => (path, Entry::Symlink { target: target.clone(), attrs: *attrs, stamp }),
            _ => return Err("not a file change"),
        };
        self.make_parents(path)?;
        self.entries.insert(path.clone(), e);
        if self.tombs.get(path).is_some_and(|t| *t < stamp) {
            self.tombs.remove(path);
        }
        Ok(())
    }

    fn set_attrs(&mut self, path: &[u8], a: &Attrs, s: Stamp) -> Result<(), Self::Error> {
        match self.entries.get_mut(path) {
            Some(Entry::File { attrs, stamp, .. } | Entry::Symlink { attrs, stamp, .. }) => {
                *attrs = *a;
                if s.is_set() {
                    *stamp = s;
                }
            }
            Some(Entry::Dir { attrs }) => *attrs = *a,
            None => return Err("no such name"),
        }
        if self.tombs.get(path).is_some_and(|t| *t < s) {
            self.tombs.remove(path);
        }
        Ok(())
    }

    fn make_dir(&mut self, path: &[u8], attrs: &Attrs) -> Result<(), Self::Error> {
        self.make_parents(path)?;
        self.entries.insert(path.to_vec(), Entry::Dir { attrs: *attrs });
        Ok(())
    }

    fn remove(&mut self, path: &[u8]) -> Result<(), Self::Error> {
        self.entries.remove(path);
        Ok(())
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<(), Self::Error> {
        self.make_parents(to)?;
        let moved = self.take_subtree(from);
        self.take_subtree(to);
        for (k, e) in moved {
            self.entries.insert([to, &k[from.len()..]].concat(), e);
        }
        Ok(())
    }
}

/// The node ids registered in a bucket.
pub async fn nodes(objects: &dyn ObjectStore) -> Result<Vec<String>, StoreError> {
    Ok(objects
        .list_meta(change::NODES)
        .await?
        .iter()
        .filter_map(|n| n.strip_prefix(change::NODES)?.strip_prefix('/'))
        .filter(|n| change::valid_node_id(n))
        .map(str::to_string)
        .collect())
}

/// The batches of `node` after change `cursor`, in order.
pub async fn batches_after(objects: &dyn ObjectStore, node: &str, cursor: u64) -> Result<Vec<Batch>, StoreError> {
    let mut out = Vec::new();
    for key in objects.list_meta_after(&change::journal_dir(node), &change::batch_key(node, cursor)).await? {
        let b = Batch::open(&objects.get_meta(&key).await?).map_err(|why| StoreError::Config(format!("{key}: {why}")))?;
        if b.node != node {
            return Err(StoreError::Config(format!("{key} holds changes of another node")));
        }
        out.push(b);
    }
    Ok(out)
}

/// Rebuild a bucket's namespace: its newest snapshot, then every node's journal from the
/// snapshot's cursors. `O(1)` requests for the snapshot plus one LIST per node and one GET
/// per journal batch published after it.
pub async fn restore(objects: &dyn ObjectStore) -> Result<NameTable, StoreError> {
    let mut t = match crate::sync::snapshot::newest(objects).await? {
        Some((_, kv)) => NameTable::from_snapshot(&kv),
        None => NameTable::default(),
    };
    for node in nodes(objects).await? {
        let cursor = t.cursors.get(&node).copied().unwrap_or(0);
        for b in batches_after(objects, &node, cursor).await? {
            t.apply_batch(&b);
        }
    }
    Ok(t)
}
