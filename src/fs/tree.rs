//! The in-memory namespace tree: inodes, directory entries and blob reference counts, with
//! every mutation recorded into a [`Tx`] that is committed to the index under the same lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::blob::BlobId;
use crate::fs::error::{FsError, FsResult};
use crate::fs::inodes::InodeTable;
use crate::fs::links::{Inode, Links, Name};
use crate::fs::open::OpenInode;
use crate::fs::publish::Outbox;
use crate::index::keys;
use crate::index::records::{self, BlobRecord, InodeKind, InodeRecord, Ts};
use crate::index::{Index, Op, Records};
use crate::store::BlobStore;
use crate::hlc::{Clock, Stamp};
use crate::sync::apply;
use crate::sync::change::{Attrs, Change};

/// A hash map for the tables that grow with the tree (keys are inode numbers and blob ids,
/// which this daemon or BLAKE3 chose): foldhash instead of SipHash, the default's cost showed
/// in a million-name remount.
pub type Map<K, V> = HashMap<K, V, hashbrown::DefaultHashBuilder>;

/// The root directory's inode number.
pub const ROOT: u64 = 1;

pub use crate::fs::blobs::{BlobEntry, BlobTable};

/// An open inode's registration.
pub struct OpenEntry {
    /// number of open handles
    pub count: u32,
    /// shared per-inode I/O state
    pub file: Arc<OpenInode>,
}

/// Pending index mutations plus side effects to run once they are committed.
#[derive(Default)]
pub struct Tx {
    ops: Vec<Op>,
    uploads: Vec<BlobId>,
    changes: Vec<(Change, Stamp)>,
    /// blobs no name refers to any more: removed once the commit that says so is written
    reclaims: Vec<(BlobId, u64)>,
    /// the removals are the daemon's own (budget eviction, another node's change), which the
    /// kernel did not see: inodes it still holds are freed at once instead of kept until its
    /// `forget` (its later requests on them get ENOENT, as for any removed file)
    daemon_removal: bool,
}

impl Tx {
    /// A transaction of removals the daemon makes on its own account (see `daemon_removal`).
    pub fn daemon_removal() -> Self {
        Tx { daemon_removal: true, ..Tx::default() }
    }

    /// Record an inode.
    pub fn put_inode(&mut self, rec: &InodeRecord) {
        self.ops.push(Op::Put(keys::inode(rec.ino), records::encode_inode(rec)));
    }
    /// Record a raw key/value.
    pub fn put_raw(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push(Op::Put(k, v));
    }
    fn del_inode(&mut self, ino: u64) {
        self.ops.push(Op::Delete(keys::inode(ino)));
    }
    fn put_dirent(&mut self, parent: u64, name: &[u8], ino: u64) {
        self.ops.push(Op::Put(keys::dirent(parent, name), ino.to_be_bytes().to_vec()));
    }
    fn del_dirent(&mut self, parent: u64, name: &[u8]) {
        self.ops.push(Op::Delete(keys::dirent(parent, name)));
    }
}

/// The whole namespace, guarded by one lock in the core.
#[derive(Default)]
pub struct Tree {
    /// every live inode (record and links), including unlinked-but-open ones
    pub inodes: InodeTable,
    /// children of each directory
    pub dirs: Map<u64, BTreeMap<Name, u64>>,
    /// blobs referenced by inodes
    pub blobs: BlobTable,
    /// next inode number
    pub next_ino: u64,
    /// open inodes
    pub open: HashMap<u64, OpenEntry>,
    /// unlinked inodes kept alive by open handles or by the kernel's references
    pub orphans: HashSet<u64>,
    /// the kernel's references to inodes
    pub lookups: crate::fs::lookups::Lookups,
    /// the blob whose pages the kernel may hold for an inode (KEEP_CACHE is only safe for it)
    pub kernel_cached: HashMap<u64, BlobId>,
    /// committed changes since mount (tells a snapshot writer whether anything changed)
    pub changes: u64,
    /// changes waiting to be published to the other nodes, and the journal cursors
    pub outbox: Outbox,
    /// this node's clock for version stamps
    pub clock: Clock,
    /// removed names and the version they had, for [`apply::TOMB_TTL`]
    pub tombs: HashMap<Vec<u8>, Stamp>,
    /// when expired tombstones were last dropped (ms)
    tombs_pruned_ms: u64,
}

/// How often a commit looks for expired tombstones.
const TOMB_PRUNE_EVERY_MS: u64 = 60_000;

impl Tree {
    /// Inode by number.
    pub fn get(&self, ino: u64) -> FsResult<&InodeRecord> {
        self.inodes.get(&ino).map(|r| &r.rec).ok_or(FsError::NotFound)
    }

    /// Mutable inode by number.
    pub fn get_mut(&mut self, ino: u64) -> FsResult<&mut InodeRecord> {
        self.inodes.get_mut(&ino).map(|r| &mut r.rec).ok_or(FsError::NotFound)
    }

    /// Children of a directory (ENOTDIR for anything else).
    pub fn children(&self, ino: u64) -> FsResult<&BTreeMap<Name, u64>> {
        match self.inodes.get(&ino) {
            None => Err(FsError::NotFound),
            Some(_) => self.dirs.get(&ino).ok_or(FsError::NotDir),
        }
    }

    /// Look a name up in a directory.
    pub fn child(&self, parent: u64, name: &[u8]) -> FsResult<Option<u64>> {
        Ok(self.children(parent)?.get(name).copied())
    }

    /// Allocate an inode number.
    pub fn alloc_ino(&mut self, tx: &mut Tx) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        tx.ops.push(Op::Put(keys::next_ino(), self.next_ino.to_be_bytes().to_vec()));
        ino
    }

    /// Insert a directory entry.
    pub fn link_entry(&mut self, tx: &mut Tx, parent: u64, name: &[u8], ino: u64) {
        let name: Name = name.into();
        if let Some(old) = self.dirs.entry(parent).or_default().insert(name.clone(), ino) {
            self.forget_name(old, parent, &name);
        }
        tx.put_dirent(parent, &name, ino);
        self.add_name(ino, parent, name);
    }

    /// Remove a directory entry (not the inode).
    pub fn unlink_entry(&mut self, tx: &mut Tx, parent: u64, name: &[u8]) {
        if let Some(ino) = self.dirs.get_mut(&parent).and_then(|d| d.remove(name)) {
            self.forget_name(ino, parent, name);
        }
        tx.del_dirent(parent, name);
    }

    fn forget_name(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.links.remove(parent, name);
        }
    }

    /// (The inode is in the table before any entry names it.)
    fn add_name(&mut self, ino: u64, parent: u64, name: Name) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.links.push(parent, name);
        }
    }

    /// The links of an inode.
    pub fn links(&self, ino: u64) -> Option<&Links> {
        self.inodes.get(&ino).map(|i| &i.links)
    }

    /// Path of a directory relative to the root (empty for the root itself).
    pub fn dir_path(&self, ino: u64) -> Option<Vec<u8>> {
        if ino == ROOT {
            return Some(Vec::new());
        }
        let (parent, name) = self.links(ino)?.first()?;
        self.path(parent, name)
    }

    /// Path of the entry `name` in directory `parent`, as published to other nodes.
    pub fn path(&self, parent: u64, name: &[u8]) -> Option<Vec<u8>> {
        let mut p = self.dir_path(parent)?;
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        Some(p)
    }

    /// The change that publishes the current state of `ino` under `path`.
    /// FIFOs, sockets and device nodes are this node's own: they are not published.
    pub fn state_change(&self, ino: u64, path: Vec<u8>) -> Option<Change> {
        let rec = self.inodes.get(&ino)?;
        let attrs = Attrs { perm: rec.perm, uid: rec.uid, gid: rec.gid, mtime: rec.mtime };
        Some(match &rec.kind {
            InodeKind::File { blob } => Change::File { path, blob: *blob, size: rec.size, attrs },
            InodeKind::Symlink { target } => Change::Symlink { path, target: target.clone(), attrs },
            InodeKind::Dir { .. } => Change::Dir { path, attrs },
            InodeKind::Special { .. } => return None,
        })
    }

    /// Publish the current state of `ino` under each of its names. A file or symlink gets a
    /// new version stamp first (greater than every stamp this node has made or seen), which
    /// every node compares to pick the same winner among concurrent writes of a name.
    pub fn note_state(&mut self, tx: &mut Tx, ino: u64) {
        if !self.outbox.enabled {
            return;
        }
        let Some(rec) = self.inodes.get_mut(&ino) else { return };
        let stamp = if matches!(rec.kind, InodeKind::File { .. } | InodeKind::Symlink { .. }) {
            rec.stamp = self.clock.tick();
            tx.put_inode(rec);
            rec.stamp
        } else {
            Stamp::ZERO
        };
        let paths: Vec<Vec<u8>> = self.links(ino).into_iter().flat_map(|l| l.iter()).filter_map(|(parent, name)| self.path(parent, name)).collect();
        for path in paths {
            if stamp.is_set() {
                self.clear_tomb(tx, &path, stamp);
            }
            if let Some(c) = self.state_change(ino, path) {
                tx.changes.push((c, stamp));
            }
        }
    }

    /// Publish the state of the entry `name` in `parent` (with every other name of its inode).
    pub fn note_entry(&mut self, tx: &mut Tx, parent: u64, name: &[u8]) {
        if let Some(ino) = self.dirs.get(&parent).and_then(|d| d.get(name)).copied() {
            self.note_state(tx, ino);
        }
    }

    /// Publish the removal of `name` from `parent` (call before removing it). The removal of a
    /// file or symlink names the version it removes, and leaves a tombstone of it.
    pub fn note_remove(&mut self, tx: &mut Tx, parent: u64, name: &[u8]) {
        if !self.outbox.enabled {
            return;
        }
        let Some(ino) = self.dirs.get(&parent).and_then(|d| d.get(name)).copied() else { return };
        if let Some(path) = self.path(parent, name) {
            self.note_remove_path(tx, ino, path);
        }
    }

    fn note_remove_path(&mut self, tx: &mut Tx, ino: u64, path: Vec<u8>) {
        let (blob, stamp) = match self.inodes.get(&ino) {
            Some(r) => match &r.kind {
                InodeKind::File { blob } => (Some(*blob), r.stamp),
                InodeKind::Symlink { .. } => (None, r.stamp),
                _ => (None, Stamp::ZERO),
            },
            None => return,
        };
        if stamp.is_set() {
            self.set_tomb(tx, &path, stamp);
        }
        tx.changes.push((Change::Remove { path, blob }, stamp));
    }

    /// Publish the rename of `ino` (paths computed before the move). A directory travels as
    /// a rename; a file or symlink as the removal of its old name (of the version it had):
    /// the caller then publishes its new name with [`Self::note_state`], a new version.
    pub fn note_rename(&mut self, tx: &mut Tx, ino: u64, from: Option<Vec<u8>>, to: Option<Vec<u8>>) {
        let (true, Some(from), Some(to)) = (self.outbox.enabled, from, to) else { return };
        if self.dirs.contains_key(&ino) {
            tx.changes.push((Change::Rename { from, to }, Stamp::ZERO));
        } else {
            self.note_remove_path(tx, ino, from);
        }
    }

    /// The stamp of the newest removal of `path` this node knows ([`Stamp::ZERO`]: none).
    pub fn tomb(&self, path: &[u8]) -> Stamp {
        self.tombs.get(path).copied().unwrap_or(Stamp::ZERO)
    }

    /// Record that the version `stamp` of `path` was removed (keeping a newer tombstone).
    pub fn set_tomb(&mut self, tx: &mut Tx, path: &[u8], stamp: Stamp) {
        self.clock.observe(stamp);
        let t = self.tombs.entry(path.to_vec()).or_default();
        if stamp > *t {
            *t = stamp;
            tx.ops.push(Op::Put(keys::tomb(path), stamp.to_bytes().to_vec()));
        }
    }

    /// `path` is bound again with the version `stamp`: a tombstone it supersedes goes.
    pub fn clear_tomb(&mut self, tx: &mut Tx, path: &[u8], stamp: Stamp) {
        if self.tombs.get(path).is_some_and(|t| *t < stamp) {
            self.tombs.remove(path);
            tx.ops.push(Op::Delete(keys::tomb(path)));
        }
    }

    /// Forget tombstones older than [`apply::TOMB_TTL`] by this node's clock (a change that
    /// arrives later than that is past what the rules promise to order; see `sync::apply`).
    pub fn prune_tombs(&mut self, tx: &mut Tx, now_ms: u64) -> usize {
        let horizon = now_ms.saturating_sub(apply::TOMB_TTL.as_millis() as u64);
        let old: Vec<Vec<u8>> = self.tombs.iter().filter(|(_, s)| s.ms() < horizon).map(|(p, _)| p.clone()).collect();
        for p in &old {
            self.tombs.remove(p);
            tx.ops.push(Op::Delete(keys::tomb(p)));
        }
        old.len()
    }

    /// Touch mtime+ctime of a directory and record it.
    pub fn touch_dir(&mut self, tx: &mut Tx, ino: u64, now: Ts) {
        if let Some(d) = self.inodes.get_mut(&ino) {
            d.mtime = now;
            d.ctime = now;
            tx.put_inode(d);
        }
    }

    /// Take a reference on a blob that is already in the flat tier. A blob new to this node is
    /// recorded and queued for upload.
    pub fn incref(&mut self, tx: &mut Tx, store: &BlobStore, id: BlobId, size: u64) {
        self.incref_stored(tx, id, size, || store.put_now(&id));
    }

    /// Like [`Tree::incref`], with the cheap local put decided by `stored` (called only for a
    /// blob new to this node): a seal makes that put before it takes the tree lock.
    pub fn incref_stored(&mut self, tx: &mut Tx, id: BlobId, size: u64, stored: impl FnOnce() -> bool) {
        if self.blobs.incref(id, size) {
            tx.ops.push(Op::Put(keys::blob(&id), records::encode(&BlobRecord { size })));
            if !stored() {
                tx.ops.push(Op::Put(keys::upload(&id), Vec::new()));
                tx.uploads.push(id);
            }
        }
    }

    /// Whether the inode lost its last name (unlinked while open, or gone).
    pub fn unlinked(&self, ino: u64) -> bool {
        self.orphans.contains(&ino) || !self.inodes.contains_key(&ino)
    }

    /// Whether this node knows the blob (some name refers to it).
    pub fn knows_blob(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    /// Take a reference on a blob already in the object store — another node published it, or
    /// this node's seal uploaded it (`--upload sync`) — so it is recorded without an upload
    /// (and, if not local, fetched on first read).
    pub fn incref_published(&mut self, tx: &mut Tx, id: BlobId, size: u64) {
        if self.blobs.incref(id, size) {
            tx.ops.push(Op::Put(keys::blob(&id), records::encode(&BlobRecord { size })));
        }
    }

    /// Drop a reference; the last one reclaims the blob everywhere — after the transaction's
    /// commit (a destructive step only once the record that justifies it is written) and still
    /// under the tree lock, so no concurrent seal can re-adopt the same blob in between.
    pub fn decref(&mut self, tx: &mut Tx, id: BlobId) {
        let Some(e) = self.blobs.decref(&id) else { return };
        // the empty blob is pinned: every new file starts bound to it
        if e.refs == 0 && id != BlobId::empty() {
            let size = e.size;
            self.blobs.remove(&id);
            tx.ops.push(Op::Delete(keys::blob(&id)));
            // the upload intent stays until the upload is done (its hook deletes it): after a
            // crash the upload resumes, and changes naming the blob can still be published
            tx.reclaims.push((id, size));
        }
    }

    /// Drop one hard link of a non-directory inode; frees it (and its blob reference) once no
    /// link, no open handle and (unless the daemon removes it itself) no kernel reference
    /// remains.
    pub fn drop_link(&mut self, tx: &mut Tx, ino: u64, now: Ts) -> FsResult<()> {
        let rec = self.get_mut(ino)?;
        rec.nlink = rec.nlink.saturating_sub(1);
        rec.ctime = now;
        if rec.nlink > 0 {
            tx.put_inode(rec);
            return Ok(());
        }
        tx.del_inode(ino);
        if self.open.contains_key(&ino) || (!tx.daemon_removal && self.lookups.holds(ino)) {
            self.orphans.insert(ino);
        } else {
            self.forget_inode(tx, ino);
        }
        Ok(())
    }

    /// Free an orphan once nothing holds it any more; true when it was freed.
    pub fn release_orphan(&mut self, tx: &mut Tx, ino: u64) -> bool {
        let free = self.orphans.contains(&ino) && !self.open.contains_key(&ino) && !self.lookups.holds(ino);
        if free {
            self.forget_inode(tx, ino);
        }
        free
    }

    /// Remove an inode that has no links and no handles.
    pub fn forget_inode(&mut self, tx: &mut Tx, ino: u64) {
        self.orphans.remove(&ino);
        self.kernel_cached.remove(&ino);
        if let Some(rec) = self.inodes.remove(&ino) {
            if let InodeKind::File { blob } = rec.kind {
                self.decref(tx, blob);
            }
        }
    }

    /// Remove an (empty) directory inode.
    pub fn remove_dir(&mut self, tx: &mut Tx, ino: u64) {
        self.inodes.remove(&ino);
        self.dirs.remove(&ino);
        tx.del_inode(ino);
    }

    /// Whether `ino` is `ancestor` or lies below it.
    pub fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.inodes.get(&ino).map(|r| &r.kind) {
                Some(InodeKind::Dir { parent }) if *parent != ino => ino = *parent,
                _ => return false,
            }
        }
    }

    /// Commit a transaction to the index and start its uploads. Called with the lock held.
    /// A failed commit deletes nothing: a blob it would have reclaimed stays (a stray flat
    /// file the next mount removes if no record names it).
    pub fn commit(&mut self, mut tx: Tx, index: &Index, store: &BlobStore) -> FsResult<()> {
        if !self.tombs.is_empty() {
            let now = crate::sync::change::now_ms();
            if now >= self.tombs_pruned_ms + TOMB_PRUNE_EVERY_MS {
                self.tombs_pruned_ms = now;
                self.prune_tombs(&mut tx, now);
            }
        }
        let staged = self.outbox.stage(&mut tx.ops, std::mem::take(&mut tx.changes));
        fail::fail_point!("tree-commit", |_| {
            self.outbox.abort();
            Err(FsError::Io(std::io::Error::other("failpoint tree-commit")))
        });
        if let Err(e) = index.commit(tx.ops) {
            self.outbox.abort();
            return Err(e.into());
        }
        self.outbox.push(staged);
        self.changes += 1;
        for id in tx.uploads {
            store.enqueue_upload(id);
        }
        // crash window: committed, the blobs it unreferenced not reclaimed yet
        fail::fail_point!("reclaim-after-commit");
        for (id, size) in tx.reclaims {
            if self.blobs.contains_key(&id) {
                continue; // named again later in the same transaction
            }
            if let Err(e) = store.reclaim(id, size) {
                tracing::warn!(%id, error = %e, "could not remove an unreferenced blob");
            }
        }
        Ok(())
    }

    /// Rebuild the tree from the index records, repairing what a crash can leave behind:
    /// entries to missing inodes, inodes without entries, link counts, unreferenced blobs,
    /// stray flat files. Pending uploads are re-queued.
    pub fn load(records: Records, store: &BlobStore, index: &Index, root: InodeRecord) -> FsResult<Tree> {
        let clock = std::time::Instant::now();
        let lap = |what: &str| tracing::debug!(secs = clock.elapsed().as_secs_f64(), "tree load: {what}");
        let (mut t, found) = Self::decode(records, BlobTable::in_catalog(store.flat().catalog()));
        lap("decoded");
        let mut tx = Tx::default();
        match found.format {
            Some(keys::FORMAT) => {}
            None => tx.ops.push(Op::Put(keys::format_version(), keys::FORMAT.to_be_bytes().to_vec())),
            Some(_) => return Err(FsError::NotSupported("the index was written by a newer wombatfs format")),
        }
        t.inodes.get_or_insert_with(ROOT, || {
            tx.put_inode(&root);
            Inode::new(root)
        });
        if let Some(max) = t.inodes.keys().max() {
            t.next_ino = t.next_ino.max(max + 1);
        }
        // the clock starts past every version stamp recorded here, whatever the wall clock says
        for s in t.inodes.values().map(|r| r.stamp).chain(t.tombs.values().copied()) {
            t.clock.observe(s);
        }
        t.tombs_pruned_ms = crate::sync::change::now_ms();
        t.prune_tombs(&mut tx, t.tombs_pruned_ms);
        t.link_entries(found.dirents, &mut tx);
        lap("linked");
        t.derive_counts(&mut tx);
        lap("counted");
        let unreferenced = t.reconcile_blobs(&found.blobs, &mut tx);
        lap("reconciled");
        // pending uploads resume — also of blobs no name refers to any more: an unpublished
        // change may still name them (their reclaim then waits for the upload); an intent
        // whose blob is neither referenced nor local has nothing left to upload
        let (resume, dropped): (Vec<BlobId>, Vec<BlobId>) = found.pending.into_iter().partition(|id| t.blobs.contains_key(id) || store.flat().contains(id));
        for id in &dropped {
            tx.ops.push(Op::Delete(keys::upload(id)));
        }
        index.commit(tx.ops)?;
        for id in resume {
            store.enqueue_upload(id);
        }
        // destructive steps only after the commit that records them
        for (id, size) in unreferenced {
            store.reclaim(id, size)?;
        }
        lap("committed");
        t.remove_stray_flat_files(store)?;
        lap("strays removed");
        Ok(t)
    }

    /// Sort the index records into the tree's inodes, journal cursors and outbox, and what the
    /// repair steps need.
    fn decode(records: Records, blobs: BlobTable) -> (Tree, Found) {
        let mut t = Tree { next_ino: ROOT + 1, blobs, ..Default::default() };
        let mut found = Found::default();
        // the tables are sized once: a million names grew them by doubling ~20 times each
        let mut per_prefix = [0usize; 256];
        for (k, _) in records.iter() {
            if let Some(&p) = k.first() {
                per_prefix[p as usize] += 1;
            }
        }
        let [inodes, dirents, blobs] = [keys::INODE, keys::DIRENT, keys::BLOB].map(|p| per_prefix[p as usize]);
        t.inodes.reserve(inodes);
        found.dirents.reserve(dirents);
        found.blobs.reserve(blobs);
        t.blobs.reserve(blobs);
        for (k, v) in records.iter() {
            if k.first() != Some(&keys::INODE) {
                t.decode_other(&mut found, k, v);
                continue;
            }
            match records::decode_inode(v) {
                Some(rec) => {
                    t.inodes.insert(Inode::new(rec));
                }
                None => tracing::error!(key = %hex::encode(k), "undecodable inode record skipped"),
            }
        }
        (t, found)
    }

    /// A record of [`Tree::decode`] other than an inode.
    fn decode_other(&mut self, found: &mut Found, k: &[u8], v: &[u8]) {
        match k.first() {
            Some(&keys::DIRENT) => {
                if let (Some((p, name)), Ok(b)) = (keys::split_dirent(k), <[u8; 8]>::try_from(v)) {
                    found.dirents.push((p, name.into(), u64::from_be_bytes(b)));
                }
            }
            Some(&keys::BLOB) => {
                if let (Some(id), Some(r)) = (keys::blob_after_prefix(k), records::decode::<BlobRecord>(v)) {
                    found.blobs.insert(id, r);
                }
            }
            Some(&keys::UPLOAD) => found.pending.extend(keys::blob_after_prefix(k)),
            Some(&keys::CURSOR) => self.outbox.load_cursor(k, v),
            Some(&keys::OUTBOX) => self.outbox.load_change(k, v),
            Some(&keys::TOMB) => match Stamp::from_bytes(v) {
                Some(s) => {
                    self.tombs.insert(k[1..].to_vec(), s);
                }
                None => tracing::error!(key = %hex::encode(k), "undecodable tombstone skipped"),
            },
            Some(&keys::META) if k == keys::format_version() => {
                found.format = <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes);
            }
            Some(&keys::META) if k == keys::next_ino() => {
                if let Ok(b) = <[u8; 8]>::try_from(v) {
                    self.next_ino = self.next_ino.max(u64::from_be_bytes(b));
                }
            }
            _ => {}
        }
    }

    /// Link the directory entries (dropping dangling ones) and the inodes nobody links to (a
    /// crash between an unlink and its forget).
    fn link_entries(&mut self, dirents: Vec<(u64, Name, u64)>, tx: &mut Tx) {
        for rec in self.inodes.values() {
            if matches!(rec.kind, InodeKind::Dir { .. }) {
                self.dirs.insert(rec.ino, BTreeMap::new());
            }
        }
        // each directory's entries are gathered and its B-tree built in one go: built from
        // sorted entries its nodes are full, inserted one by one in name order they stay about
        // half full (~25 bytes more per name)
        let mut children: Vec<(Name, u64)> = Vec::new();
        let mut dirents = dirents.into_iter().peekable();
        while let Some((p, name, ino)) = dirents.next() {
            if ino == ROOT || !self.dirs.contains_key(&p) || !self.inodes.contains_key(&ino) {
                tracing::warn!(parent = p, ino, "dangling directory entry removed");
                tx.del_dirent(p, &name);
            } else {
                if self.dirs.contains_key(&ino) {
                    if let Some(InodeKind::Dir { parent }) = self.inodes.get_mut(&ino).map(|r| &mut r.kind) {
                        *parent = p;
                    }
                }
                children.push((name.clone(), ino));
                self.add_name(ino, p, name);
            }
            if dirents.peek().is_none_or(|(next, _, _)| *next != p) && !children.is_empty() {
                // (the index lists entries by directory, so a directory's run is contiguous;
                // were it not, the later run's entries join the earlier ones)
                if let Some(dir) = self.dirs.get_mut(&p) {
                    let built: BTreeMap<Name, u64> = std::mem::take(&mut children).into_iter().collect();
                    if dir.is_empty() {
                        *dir = built;
                    } else {
                        dir.extend(built);
                    }
                }
            }
        }
        let unlinked: Vec<u64> = self.inodes.iter().filter(|(i, n)| *i != ROOT && n.links.is_empty()).map(|(i, _)| i).collect();
        for ino in unlinked {
            self.inodes.remove(&ino);
            self.dirs.remove(&ino);
            tx.del_inode(ino);
        }
    }

    /// Link counts and blob references are derived from the entries, never trusted.
    fn derive_counts(&mut self, tx: &mut Tx) {
        let mut subdirs: Map<u64, u32> = Map::default();
        for rec in self.inodes.values() {
            if let InodeKind::Dir { parent } = rec.kind {
                if rec.ino != ROOT {
                    *subdirs.entry(parent).or_default() += 1;
                }
            }
        }
        for rec in self.inodes.values_mut() {
            let want = match rec.kind {
                InodeKind::Dir { .. } => 2 + subdirs.get(&rec.ino).copied().unwrap_or(0),
                _ => rec.links.len().max(1) as u32,
            };
            if rec.nlink != want {
                rec.nlink = want;
                tx.put_inode(rec);
            }
            if let InodeKind::File { blob } = rec.kind {
                let size = rec.size;
                self.blobs.incref(blob, size);
            }
        }
    }

    /// Blob records the names need are written, the others deleted; returns the blobs no
    /// name refers to (reclaimed once the commit is durable).
    fn reconcile_blobs(&mut self, recs: &Map<BlobId, BlobRecord>, tx: &mut Tx) -> Vec<(BlobId, u64)> {
        self.blobs.for_each(|id, e| {
            if !recs.contains_key(id) {
                tx.ops.push(Op::Put(keys::blob(id), records::encode(&BlobRecord { size: e.size })));
            }
        });
        let empty = BlobId::empty();
        if let Some(r) = recs.get(&empty) {
            self.blobs.name(empty, r.size);
        }
        let mut gone = Vec::new();
        for (id, r) in recs.iter().filter(|(id, _)| !self.blobs.contains_key(id)) {
            tx.ops.push(Op::Delete(keys::blob(id)));
            gone.push((*id, r.size));
        }
        gone
    }

    /// Flat files no blob record knows: leftovers of a crash mid-seal.
    fn remove_stray_flat_files(&self, store: &BlobStore) -> FsResult<()> {
        // the tier's own scan at open removed files that are no blob at all
        for id in self.blobs.unnamed_in_flat().into_iter().filter(|id| !store.upload_pending(id)) {
            tracing::debug!(%id, "removing stray flat file");
            store.flat().remove(&id)?;
        }
        Ok(())
    }
}

/// What `Tree::decode` found besides the tree itself.
#[derive(Default)]
struct Found {
    dirents: Vec<(u64, Name, u64)>,
    blobs: Map<BlobId, BlobRecord>,
    pending: Vec<BlobId>,
    format: Option<u32>,
}
