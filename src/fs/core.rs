//! The fuser-free filesystem core: namespace operations (lookup, mkdir, create, rename, …).
//! File I/O is in [`crate::fs::io`], extended attributes in [`crate::fs::xattr`].
//!
//! Concurrency: one `RwLock<Tree>` orders every metadata change and its index commit; each
//! open inode has its own mutex for I/O. Lock order: inode state → tree, never the reverse.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};


use crate::blob::BlobId;
use crate::fs::budget::{namespace_of, Budgets};
use crate::fs::error::{FsError, FsResult};
use crate::fs::open::Handles;
use crate::fs::tree::{Tree, Tx, ROOT};
use crate::fs::{check_name, Attr, Caller, DirEntry, Kind, SetAttr, SetTime, StatFs, BLOCK_SIZE};
use crate::index::records::{InodeKind, InodeRecord, Ts};
use crate::index::Index;
use crate::store::BlobStore;

/// Largest file accepted unless configured otherwise: 1 TiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 40;

/// Tunables of the core.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// largest file accepted (EFBIG beyond)
    pub max_file_size: u64,
    /// owner of a new root directory
    pub root_uid: u32,
    /// group of a new root directory
    pub root_gid: u32,
    /// namespace budgets from the config file (an attribute on the namespace wins)
    pub budgets: std::collections::BTreeMap<String, u64>,
}

impl Default for CoreOptions {
    fn default() -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        CoreOptions { max_file_size: DEFAULT_MAX_FILE_SIZE, root_uid: uid, root_gid: gid, budgets: Default::default() }
    }
}

/// The filesystem core.
pub struct FsCore {
    pub(super) tree: RwLock<Tree>,
    pub(super) handles: Handles,
    pub(super) store: Arc<BlobStore>,
    pub(super) index: Index,
    pub(super) opts: CoreOptions,
    /// drops the kernel's cached entries (installed by the mount; replaced by a later one)
    pub(super) invalidator: RwLock<Option<crate::fs::Invalidator>>,
    /// namespace budgets (they see the tree read-only; removals go through `unlink`)
    pub(super) budgets: Budgets,
    /// hashes large sequential writes behind the writers
    pub(super) hasher: Arc<crate::fs::seqhash::HashWorker>,
    cache_dir: PathBuf,
}

pub(super) fn attr_of(rec: &InodeRecord) -> Attr {
    let kind = match rec.kind {
        InodeKind::Dir { .. } => Kind::Dir,
        InodeKind::File { .. } => Kind::File,
        InodeKind::Symlink { .. } => Kind::Symlink,
    };
    Attr {
        ino: rec.ino,
        size: rec.size,
        blocks: rec.size.div_ceil(512),
        atime: rec.atime.to_system(),
        mtime: rec.mtime.to_system(),
        ctime: rec.ctime.to_system(),
        kind,
        perm: rec.perm,
        nlink: rec.nlink,
        uid: rec.uid,
        gid: rec.gid,
    }
}

fn set_time(t: SetTime) -> Ts {
    match t {
        SetTime::Now => Ts::now(),
        SetTime::At(s) => Ts::from_system(s),
    }
}

impl FsCore {
    /// Load the tree from the index and the store (repairing crash leftovers).
    pub fn load(cache_dir: &Path, store: Arc<BlobStore>, index: Index, records: crate::index::Records, opts: CoreOptions) -> FsResult<Self> {
        let now = Ts::now();
        let root = InodeRecord {
            ino: ROOT,
            kind: InodeKind::Dir { parent: ROOT },
            perm: 0o755,
            uid: opts.root_uid,
            gid: opts.root_gid,
            nlink: 2,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            xattrs: Default::default(),
        };
        let mut tree = Tree::load(records, &store, &index, root)?;
        // a remote store may be shared: publish this node's changes for the others
        let node = crate::sync::snapshot::node_id(cache_dir)?;
        tree.outbox.init(&node, !store.objects().is_local());
        let idx = index.clone();
        store.set_uploaded_hook(Arc::new(move |id: BlobId| {
            if let Err(e) = idx.commit(vec![crate::index::Op::Delete(crate::index::keys::upload(&id))]) {
                tracing::error!(%id, error = %e, "could not record a finished upload");
            }
        }))?;
        let budgets = Budgets::new(opts.budgets.clone());
        Ok(FsCore {
            budgets,
            tree: RwLock::new(tree),
            handles: Handles::default(),
            store,
            index,
            opts,
            invalidator: RwLock::new(None),
            hasher: crate::fs::seqhash::HashWorker::start(),
            cache_dir: cache_dir.to_path_buf(),
        })
    }

    pub(super) fn read_tree(&self) -> RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write_tree(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The blob store underneath.
    pub fn store(&self) -> &Arc<BlobStore> {
        &self.store
    }

    /// Look up a name; `Ok(None)` is a (cacheable) negative answer.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Option<Attr>> {
        if name.len() > crate::fs::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let t = self.read_tree();
        match t.child(parent, name)? {
            Some(ino) => Ok(Some(attr_of(t.get(ino)?))),
            None => Ok(None),
        }
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        Ok(attr_of(self.read_tree().get(ino)?))
    }

    /// Change attributes. A size change rewrites the file through a staging file.
    pub fn setattr(&self, ino: u64, ch: SetAttr, fh: Option<u64>) -> FsResult<Attr> {
        if let Some(size) = ch.size {
            self.truncate(ino, size, fh)?;
        }
        let mut t = self.write_tree();
        let mut tx = Tx::default();
        let now = Ts::now();
        let rec = t.get_mut(ino)?;
        if let Some(mode) = ch.mode {
            rec.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = ch.uid {
            rec.uid = uid;
        }
        if let Some(gid) = ch.gid {
            rec.gid = gid;
        }
        if let Some(a) = ch.atime {
            rec.atime = set_time(a);
        }
        if let Some(m) = ch.mtime {
            rec.mtime = set_time(m);
        }
        if ch.mode.is_some() || ch.uid.is_some() || ch.gid.is_some() || ch.atime.is_some() || ch.mtime.is_some() {
            rec.ctime = now;
        }
        tx.put_inode(rec);
        let attr = attr_of(rec);
        t.note_state(&mut tx, ino);
        t.commit(tx, &self.index, &self.store)?;
        Ok(attr)
    }

    pub(super) fn new_inode(&self, t: &mut Tree, tx: &mut Tx, caller: Caller, parent: u64, kind: InodeKind, perm: u16) -> FsResult<InodeRecord> {
        let now = Ts::now();
        let p = t.get(parent)?;
        // BSD group semantics for setgid directories, as ext4 does
        let (gid, perm) = if p.perm & 0o2000 != 0 {
            let extra = if matches!(kind, InodeKind::Dir { .. }) { 0o2000 } else { 0 };
            (p.gid, perm | extra)
        } else {
            (caller.gid, perm)
        };
        let ino = t.alloc_ino(tx);
        let nlink = if matches!(kind, InodeKind::Dir { .. }) { 2 } else { 1 };
        let size = match &kind {
            InodeKind::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        Ok(InodeRecord { ino, kind, perm, uid: caller.uid, gid, nlink, size, atime: now, mtime: now, ctime: now, xattrs: Default::default() })
    }

    pub(super) fn check_new_entry(t: &Tree, parent: u64, name: &[u8], is_dir: bool) -> FsResult<()> {
        check_name(name)?;
        if parent == ROOT && !is_dir {
            return Err(FsError::NotPermitted("only namespace directories may live at the root"));
        }
        if t.child(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        Ok(())
    }

    fn insert(&self, t: &mut Tree, mut tx: Tx, parent: u64, name: &[u8], rec: InodeRecord) -> FsResult<Attr> {
        let ino = rec.ino;
        let attr = Self::insert_in(t, &mut tx, parent, name, rec)?;
        t.note_state(&mut tx, ino);
        t.commit(tx, &self.index, &self.store)?;
        Ok(attr)
    }

    /// Link a new inode under `parent` (no commit).
    pub(super) fn insert_in(t: &mut Tree, tx: &mut Tx, parent: u64, name: &[u8], rec: InodeRecord) -> FsResult<Attr> {
        let now = rec.ctime;
        let attr = attr_of(&rec);
        let ino = rec.ino;
        let is_dir = matches!(rec.kind, InodeKind::Dir { .. });
        tx.put_inode(&rec);
        if is_dir {
            t.dirs.insert(ino, Default::default());
        }
        t.inodes.insert(ino, rec);
        t.link_entry(tx, parent, name, ino);
        if is_dir {
            t.get_mut(parent)?.nlink += 1;
        }
        t.touch_dir(tx, parent, now);
        Ok(attr)
    }

    /// Create a directory.
    pub fn mkdir(&self, caller: Caller, parent: u64, name: &[u8], mode: u32, umask: u32) -> FsResult<Attr> {
        let mut t = self.write_tree();
        Self::check_new_entry(&t, parent, name, true)?;
        let mut tx = Tx::default();
        let rec = self.new_inode(&mut t, &mut tx, caller, parent, InodeKind::Dir { parent }, (mode & !umask & 0o7777) as u16)?;
        self.insert(&mut t, tx, parent, name, rec)
    }

    /// Create an empty regular file (`mknod` with `S_IFREG`; other node types are refused).
    pub fn mknod(&self, caller: Caller, parent: u64, name: &[u8], mode: u32, umask: u32) -> FsResult<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(FsError::NotPermitted("only regular files, directories and symlinks are supported"));
        }
        let mut t = self.write_tree();
        Self::check_new_entry(&t, parent, name, false)?;
        let mut tx = Tx::default();
        let empty = self.ensure_empty_blob(&t)?;
        let rec = self.new_inode(&mut t, &mut tx, caller, parent, InodeKind::File { blob: empty }, (mode & !umask & 0o7777) as u16)?;
        t.incref(&mut tx, &self.store, empty, 0);
        self.insert(&mut t, tx, parent, name, rec)
    }

    /// Make sure the empty blob is in the flat tier (every new file starts bound to it).
    fn ensure_empty_blob(&self, t: &Tree) -> FsResult<BlobId> {
        let empty = BlobId::empty();
        if !t.blobs.contains_key(&empty) && !self.store.flat().contains(&empty) {
            let (_f, path) = self.store.new_staging()?;
            self.store.adopt(&path, &empty)?;
        }
        Ok(empty)
    }

    /// Create a symbolic link.
    pub fn symlink(&self, caller: Caller, parent: u64, name: &[u8], target: &[u8]) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() >= libc::PATH_MAX as usize {
            return Err(FsError::NameTooLong);
        }
        let mut t = self.write_tree();
        Self::check_new_entry(&t, parent, name, false)?;
        let mut tx = Tx::default();
        let rec = self.new_inode(&mut t, &mut tx, caller, parent, InodeKind::Symlink { target: target.to_vec() }, 0o777)?;
        self.insert(&mut t, tx, parent, name, rec)
    }

    /// Target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match &self.read_tree().get(ino)?.kind {
            InodeKind::Symlink { target } => Ok(target.clone()),
            _ => Err(FsError::Invalid("not a symlink")),
        }
    }

    /// Create a hard link.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        let mut t = self.write_tree();
        Self::check_new_entry(&t, newparent, newname, false)?;
        let rec = t.get(ino)?;
        if matches!(rec.kind, InodeKind::Dir { .. }) {
            return Err(FsError::NotPermitted("hard links to directories"));
        }
        if rec.nlink == 0 {
            return Err(FsError::NotFound);
        }
        let mut tx = Tx::default();
        let now = Ts::now();
        let rec = t.get_mut(ino)?;
        rec.nlink += 1;
        rec.ctime = now;
        tx.put_inode(rec);
        let attr = attr_of(rec);
        t.link_entry(&mut tx, newparent, newname, ino);
        t.touch_dir(&mut tx, newparent, now);
        t.note_entry(&mut tx, newparent, newname);
        t.commit(tx, &self.index, &self.store)?;
        Ok(attr)
    }

    /// Remove a non-directory name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let mut t = self.write_tree();
        let mut tx = Tx::default();
        t.note_remove(&mut tx, parent, name);
        self.unlink_in(&mut t, &mut tx, parent, name)?;
        t.commit(tx, &self.index, &self.store)
    }

    pub(super) fn unlink_in(&self, t: &mut Tree, tx: &mut Tx, parent: u64, name: &[u8]) -> FsResult<()> {
        let ino = t.child(parent, name)?.ok_or(FsError::NotFound)?;
        if t.dirs.contains_key(&ino) {
            return Err(FsError::IsDir);
        }
        let now = Ts::now();
        t.unlink_entry(tx, parent, name);
        t.drop_link(tx, &self.store, ino, now)?;
        t.touch_dir(tx, parent, now);
        Ok(())
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid("rmdir ."));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        let mut t = self.write_tree();
        let mut tx = Tx::default();
        t.note_remove(&mut tx, parent, name);
        Self::rmdir_in(&mut t, &mut tx, parent, name)?;
        t.commit(tx, &self.index, &self.store)
    }

    pub(super) fn rmdir_in(t: &mut Tree, tx: &mut Tx, parent: u64, name: &[u8]) -> FsResult<()> {
        let ino = t.child(parent, name)?.ok_or(FsError::NotFound)?;
        if !t.children(ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        let now = Ts::now();
        t.unlink_entry(tx, parent, name);
        t.remove_dir(tx, ino);
        t.get_mut(parent)?.nlink -= 1;
        t.touch_dir(tx, parent, now);
        Ok(())
    }

    /// Rename, atomically replacing the target; honours `RENAME_NOREPLACE` and
    /// `RENAME_EXCHANGE`.
    pub fn rename(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: u32) -> FsResult<()> {
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange) {
            return Err(FsError::Invalid("unsupported rename flags"));
        }
        check_name(newname)?;
        let mut t = self.write_tree();
        let mut tx = Tx::default();
        let (from, to) = (t.path(parent, name), t.path(newparent, newname));
        let src = self.rename_in(&mut t, &mut tx, parent, name, newparent, newname, flags)?;
        if exchange {
            for (p, n) in [(parent, name), (newparent, newname)] {
                t.note_entry(&mut tx, p, n);
            }
        } else if let Some(src) = src {
            t.note_rename(&mut tx, from, to);
            if !t.dirs.contains_key(&src) {
                // files travel with their content, so a node that missed the old name still
                // ends up with the new one
                t.note_entry(&mut tx, newparent, newname);
            }
        }
        t.commit(tx, &self.index, &self.store)
    }

    /// The body of `rename` (no commit); returns the moved inode, or `None` when nothing
    /// changed (two names of one inode).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rename_in(&self, t: &mut Tree, tx: &mut Tx, parent: u64, name: &[u8], newparent: u64, newname: &[u8], flags: u32) -> FsResult<Option<u64>> {
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let src = t.child(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = t.child(newparent, newname)?;
        let src_dir = t.dirs.contains_key(&src);
        if newparent == ROOT && !src_dir {
            return Err(FsError::NotPermitted("only namespace directories may live at the root"));
        }
        if src_dir && t.is_within(newparent, src) {
            return Err(FsError::Invalid("cannot move a directory into itself"));
        }
        let now = Ts::now();
        if exchange {
            let dst = dst.ok_or(FsError::NotFound)?;
            let dst_dir = t.dirs.contains_key(&dst);
            if parent == ROOT && !dst_dir {
                return Err(FsError::NotPermitted("only namespace directories may live at the root"));
            }
            if dst_dir && t.is_within(parent, dst) {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            t.link_entry(tx, parent, name, dst);
            t.link_entry(tx, newparent, newname, src);
            self.reparent(t, tx, src, parent, newparent, now)?;
            self.reparent(t, tx, dst, newparent, parent, now)?;
        } else {
            if let Some(dst) = dst {
                if noreplace {
                    return Err(FsError::Exists);
                }
                if dst == src {
                    return Ok(None); // two names of one inode: POSIX says do nothing
                }
                let dst_dir = t.dirs.contains_key(&dst);
                match (src_dir, dst_dir) {
                    (true, false) => return Err(FsError::NotDir),
                    (false, true) => return Err(FsError::IsDir),
                    (true, true) if !t.children(dst)?.is_empty() => return Err(FsError::NotEmpty),
                    _ => {}
                }
                t.unlink_entry(tx, newparent, newname);
                if dst_dir {
                    t.remove_dir(tx, dst);
                    t.get_mut(newparent)?.nlink -= 1;
                } else {
                    t.drop_link(tx, &self.store, dst, now)?;
                }
            }
            t.unlink_entry(tx, parent, name);
            t.link_entry(tx, newparent, newname, src);
            self.reparent(t, tx, src, parent, newparent, now)?;
        }
        t.touch_dir(tx, parent, now);
        if newparent != parent {
            t.touch_dir(tx, newparent, now);
        }
        Ok(Some(src))
    }

    /// After an entry moved from `from` to `to`: fix a directory's `..` and link counts, touch ctime.
    fn reparent(&self, t: &mut Tree, tx: &mut Tx, ino: u64, from: u64, to: u64, now: Ts) -> FsResult<()> {
        let rec = t.get_mut(ino)?;
        rec.ctime = now;
        let is_dir = if let InodeKind::Dir { parent } = &mut rec.kind {
            *parent = to;
            true
        } else {
            false
        };
        tx.put_inode(rec);
        if is_dir && from != to {
            t.get_mut(from)?.nlink -= 1;
            t.get_mut(to)?.nlink += 1;
        }
        Ok(())
    }

    /// Snapshot a directory's entries (with `.` and `..`) for a readdir stream.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let t = self.read_tree();
        let children = t.children(ino)?;
        let parent = match t.get(ino)?.kind {
            InodeKind::Dir { parent } => parent,
            _ => return Err(FsError::NotDir),
        };
        let mut v = Vec::with_capacity(children.len() + 2);
        v.push(DirEntry { ino, kind: Kind::Dir, name: b".".to_vec() });
        v.push(DirEntry { ino: parent, kind: Kind::Dir, name: b"..".to_vec() });
        for (name, &child) in children {
            if let Ok(rec) = t.get(child) {
                v.push(DirEntry { ino: child, kind: attr_of(rec).kind, name: name.clone() });
            }
        }
        drop(t);
        Ok(self.handles.open_dir(v))
    }

    /// The entries of a directory handle.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        self.handles.dir(fh).ok_or(FsError::BadHandle)
    }

    /// Feed the entries of a directory handle from `offset` on, each with its attributes and
    /// the offset after it, to `add` until it returns true (the reply is full). The one loop
    /// behind `readdir` and `readdirplus`; entries whose inode went away since `opendir` are
    /// skipped.
    pub fn readdir_from(&self, fh: u64, offset: u64, mut add: impl FnMut(u64, &DirEntry, &Attr) -> bool) -> FsResult<()> {
        let entries = self.readdir(fh)?;
        let t = self.read_tree();
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let Ok(rec) = t.get(e.ino) else { continue };
            if add(i as u64 + 1, e, &attr_of(rec)) {
                break;
            }
        }
        Ok(())
    }

    /// Close a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.handles.close_dir(fh);
    }

    /// Capacity in 4 KiB blocks, as seen from `ino`: inside a namespace with a budget, the
    /// budget and what is left of it; elsewhere, with a remote store, the flat tier's bound
    /// (the bucket is unbounded; the local cache is what fills) with the bytes not yet
    /// uploaded as used (the rest can be evicted to make room); with the local store, the
    /// cache filesystem (blobs live there in the store). Free space is never more than the
    /// cache filesystem has.
    pub fn statfs(&self, ino: u64) -> FsResult<StatFs> {
        let s = crate::sys::space(&self.cache_dir)?;
        let block = BLOCK_SIZE as u64;
        let (fs_total, fs_free, fs_avail) = (s.total / block, s.free / block, s.avail / block);
        let (t, ns) = {
            let t = self.read_tree();
            let ns = namespace_of(&t, ino).and_then(|ns| self.budgets.budget_of(&t, ns).map(|b| (ns, b)));
            (t.inodes.len() as u64, ns)
        };
        let bounded = |total: u64, used: u64| {
            let free = total.saturating_sub(used) / block;
            (total / block, free.min(fs_free), free.min(fs_avail))
        };
        let (blocks, bfree, bavail) = match ns {
            Some((ns, budget)) => bounded(budget, self.namespace_usage(ns)),
            // evictable blobs are free space for new data: only what is not durable yet counts
            None if !self.store.objects().is_local() => bounded(self.store.flat().limit(), self.store.eviction().unevictable_bytes()),
            None => (fs_total, fs_free, fs_avail),
        };
        Ok(StatFs { blocks, bfree, bavail, files: s.files.max(t), ffree: s.ffree })
    }

    /// Bytes used by namespace `ns`.
    pub fn namespace_usage(&self, ns: u64) -> u64 {
        self.budgets.usage(&self.read_tree(), ns)
    }

    /// Bring every namespace over its budget down to 90 % of it, removing least recently
    /// used names through `unlink`. Returns the names removed.
    pub fn enforce_budgets(&self) -> usize {
        let victims = self.budgets.victims(&self.read_tree());
        let mut removed: std::collections::BTreeMap<u64, usize> = Default::default();
        for v in &victims {
            match self.unlink(v.parent, &v.name) {
                Ok(()) => *removed.entry(v.ns).or_default() += 1,
                // renamed or removed meanwhile: the next pass sees what is left
                Err(e) => tracing::debug!(ns = v.ns, error = %e, "budget eviction skipped a name"),
            }
        }
        for (ns, n) in &removed {
            tracing::info!(ns, removed = n, "namespace over its budget: least recently used files removed");
        }
        removed.values().sum()
    }

    /// Flush everything: seal open dirty files, drain uploads, checkpoint and close the index.
    pub fn shutdown(&self, upload_timeout: std::time::Duration) -> FsResult<()> {
        let node = self.node_id();
        let fhs = self.handles.open_files();
        for fh in fhs {
            if let Err(e) = self.flush(fh) {
                tracing::error!(fh, error = %e, "sealing an open file at shutdown failed");
            }
        }
        if !self.store.drain(upload_timeout) {
            tracing::warn!("uploads still pending at shutdown; they resume at the next mount; no tree snapshot written");
        } else if let Err(e) = self.wait_published(upload_timeout) {
            tracing::warn!(error = %e, "changes not yet in the bucket's journal at shutdown; they are published at the next mount; no tree snapshot written");
        } else if !self.store.objects().is_local() {
            match self.write_snapshot(&node) {
                Ok(name) => tracing::info!(%name, "tree snapshot written to the object store"),
                Err(e) => tracing::warn!(error = %e, "could not write a tree snapshot"),
            }
        }
        if let Some(f) = self.store.foyer() {
            self.store.block_on(f.close());
        }
        self.index.close()?;
        Ok(())
    }
}
