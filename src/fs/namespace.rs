//! The namespace: the tree of namespaces, directories, files and symlinks, its index and the
//! blob store it names — the state every concern of the filesystem shares — and the operations
//! on names (lookup, mkdir, link, unlink, rename, …). Open files and their I/O are
//! [`crate::fs::io`]; the change journal is [`crate::fs::publish`] and [`crate::fs::peers`].
//!
//! Concurrency: one `RwLock<Tree>` orders every metadata change and its index commit; each
//! open inode has its own mutex for I/O. Lock order: inode state → tree, never the reverse.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::blob::BlobId;
use crate::fs::core::CoreOptions;
use crate::fs::error::{FsError, FsResult};
use crate::fs::tree::{Tree, Tx, ROOT};
use crate::fs::{check_name, Attr, Caller, DirEntry, Kind, SetAttr, SetTime};
use crate::index::records::{InodeKind, InodeRecord, Ts};
use crate::index::Index;
use crate::store::BlobStore;

/// The namespace and what it is stored in.
pub struct Namespace {
    pub(super) tree: RwLock<Tree>,
    pub(super) store: Arc<BlobStore>,
    pub(super) index: Index,
    pub(super) opts: CoreOptions,
    /// drops the kernel's cached entries (installed by the mount; replaced by a later one)
    pub(super) invalidator: RwLock<Option<crate::fs::Invalidator>>,
    /// reading and writing the change feed
    pub(super) feed: std::sync::Mutex<crate::fs::publish::FeedState>,
}

pub(super) fn attr_of(rec: &InodeRecord) -> Attr {
    let (kind, rdev) = match rec.kind {
        InodeKind::Dir { .. } => (Kind::Dir, 0),
        InodeKind::File { .. } => (Kind::File, 0),
        InodeKind::Symlink { .. } => (Kind::Symlink, 0),
        InodeKind::Special { format, rdev } => (Kind::special(format).unwrap_or(Kind::Fifo), rdev),
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
        rdev,
    }
}

/// The attributes of `rec` as the kernel should see them: a file whose staging file the
/// kernel writes itself (passthrough) has that file's length and times, which the daemon
/// learns only at the seal.
pub(super) fn live_attr(t: &crate::fs::tree::Tree, rec: &InodeRecord) -> Attr {
    let mut a = attr_of(rec);
    if let Some(f) = t.open.get(&rec.ino).and_then(|e| e.file.kernel_file.get()) {
        if let Ok(s) = crate::fs::open::Stamp::of(f) {
            a.size = s.len;
            a.blocks = s.len.div_ceil(512);
            a.mtime = s.mtime.to_system();
            a.ctime = s.ctime.to_system();
        }
    }
    a
}

fn set_time(t: SetTime) -> Ts {
    match t {
        SetTime::Now => Ts::now(),
        SetTime::At(s) => Ts::from_system(s),
    }
}

impl Namespace {
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
        self.find(parent, name, false)
    }

    /// Look a name up for the kernel: a positive answer counts as one kernel reference
    /// (taken under the tree lock, so a removal cannot free the inode before it is counted).
    pub fn lookup_for_kernel(&self, parent: u64, name: &[u8]) -> FsResult<Option<Attr>> {
        self.find(parent, name, true)
    }

    fn find(&self, parent: u64, name: &[u8], for_kernel: bool) -> FsResult<Option<Attr>> {
        if name.len() > crate::fs::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let t = self.read_tree();
        let Some(ino) = t.child(parent, name)? else { return Ok(None) };
        let a = live_attr(&t, t.get(ino)?);
        if for_kernel {
            t.lookups.add(ino);
        }
        Ok(Some(a))
    }

    /// The kernel got a reference to `ino` in an entry reply other than `lookup`'s.
    pub fn kernel_holds(&self, ino: u64) {
        self.read_tree().lookups.add(ino);
    }

    /// The kernel gave back `n` references to `ino` (`forget`); an unlinked file nothing
    /// else holds is freed.
    pub fn forget(&self, ino: u64, n: u64) {
        if !self.read_tree().lookups.forget(ino, n) {
            return;
        }
        self.free_if_orphan(&mut self.write_tree(), ino);
    }

    /// Free `ino` if it is an orphan nothing holds any more (no handle, no kernel reference),
    /// and record that; after the last `release` and after the kernel's `forget`.
    pub(super) fn free_if_orphan(&self, t: &mut Tree, ino: u64) {
        let mut tx = Tx::default();
        if t.release_orphan(&mut tx, ino) {
            if let Err(e) = t.commit(tx, &self.index, &self.store) {
                tracing::error!(ino, error = %e, "could not record the removal of an unlinked file");
            }
        }
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let t = self.read_tree();
        Ok(live_attr(&t, t.get(ino)?))
    }

    /// Change mode, owner and times (a size change is file I/O: `FsCore::setattr`).
    pub fn set_attrs(&self, ino: u64, ch: SetAttr) -> FsResult<Attr> {
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
        t.note_state(&mut tx, ino);
        t.commit(tx, &self.index, &self.store)?;
        Ok(live_attr(&t, t.get(ino)?))
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
        Ok(InodeRecord { ino, kind, perm, uid: caller.uid, gid, nlink, size, atime: now, mtime: now, ctime: now, xattrs: Default::default(), stamp: Default::default() })
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
        t.inodes.insert(crate::fs::links::Inode::new(rec));
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

    /// Create an empty regular file (`S_IFREG`), or a FIFO, socket or device node (metadata
    /// only; `rdev` is a device node's number).
    pub fn mknod(&self, caller: Caller, parent: u64, name: &[u8], mode: u32, umask: u32, rdev: u32) -> FsResult<Attr> {
        let format = mode & libc::S_IFMT;
        let perm = (mode & !umask & 0o7777) as u16;
        if Kind::special(format).is_some() {
            let mut t = self.write_tree();
            Self::check_new_entry(&t, parent, name, false)?;
            let mut tx = Tx::default();
            let rdev = if matches!(format, libc::S_IFCHR | libc::S_IFBLK) { rdev } else { 0 };
            let rec = self.new_inode(&mut t, &mut tx, caller, parent, InodeKind::Special { format, rdev }, perm)?;
            return self.insert(&mut t, tx, parent, name, rec);
        }
        if format != libc::S_IFREG && format != 0 {
            return Err(FsError::Invalid("unknown file type"));
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
        t.link_entry(&mut tx, newparent, newname, ino);
        t.touch_dir(&mut tx, newparent, now);
        t.note_entry(&mut tx, newparent, newname);
        t.commit(tx, &self.index, &self.store)?;
        Ok(live_attr(&t, t.get(ino)?))
    }

    /// Remove a non-directory name.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let mut t = self.write_tree();
        let mut tx = Tx::default();
        t.note_remove(&mut tx, parent, name);
        self.unlink_in(&mut t, &mut tx, parent, name)?;
        t.commit(tx, &self.index, &self.store)
    }

    /// Remove a non-directory name on the daemon's own account (budget eviction): the inode
    /// is freed even if the kernel still holds it. The caller drops the kernel's cached entry
    /// ([`Self::invalidate_later`]).
    pub fn evict(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        let mut t = self.write_tree();
        let mut tx = Tx::daemon_removal();
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
        t.drop_link(tx, ino, now)?;
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
            t.note_rename(&mut tx, src, from, to);
            if !t.dirs.contains_key(&src) {
                // files travel as a new version under the new name, with their content, so a
                // node that missed the old name still ends up with the new one
                t.note_state(&mut tx, src);
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
                    t.drop_link(tx, dst, now)?;
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

    /// A directory's entries (with `.` and `..`), as `opendir` hands them to a readdir stream.
    pub fn list_dir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
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
                v.push(DirEntry { ino: child, kind: attr_of(rec).kind, name: name.to_vec() });
            }
        }
        Ok(v)
    }
}
