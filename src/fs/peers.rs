//! Applying other nodes' changes (see [`crate::fs::publish`]) to this node's tree.
//!
//! Rules, chosen so that applying is idempotent and a stale change never destroys newer data:
//! - `File`/`Symlink`: the name is (re)bound to a new inode with the published content; a name
//!   that already holds the same blob only takes the attributes. Open handles keep the old
//!   inode (as after a local rename over an open file). Missing parent directories are created.
//! - `Remove`: a file is removed only if it still holds the blob the remover saw; a directory
//!   only if it is empty.
//! - `Rename`: done if the source exists here; files are followed by their `File` state, so a
//!   node that never saw the old name still gets the new one.
//!
//! Applied changes are not published again. The kernel's cached entries and attributes for
//! every touched name are invalidated after the tree lock is released.

use crate::fs::core::FsCore;
use crate::fs::error::{FsError, FsResult};
use crate::fs::tree::{Tree, Tx, ROOT};
use crate::fs::{Caller, Inval};
use crate::index::keys;
use crate::index::records::{InodeKind, Ts};
use crate::sync::change::{self, Attrs, Batch, Change};

impl FsCore {
    /// Apply the changes of `batch` that are newer than this node's cursor for `node`, and
    /// advance the cursor in the same commit. Returns how many changes were applied.
    pub fn apply_peer_batch(&self, node: &str, batch: &Batch) -> FsResult<usize> {
        let mut inval = Vec::new();
        let mut applied = 0;
        {
            let mut t = self.write_tree();
            let cursor = t.outbox.cursors.get(node).copied().unwrap_or(0);
            let mut tx = Tx::default();
            for (seq, c) in batch.changes.iter().filter(|(s, _)| *s > cursor) {
                match self.apply_one(&mut t, &mut tx, c, &mut inval) {
                    Ok(()) => applied += 1,
                    Err(e) => tracing::warn!(node, seq, change = ?c, error = %e, "a change of another node does not apply here; skipped"),
                }
            }
            let last = batch.last_seq().max(cursor);
            t.outbox.cursors.insert(node.to_string(), last);
            tx.put_raw(keys::cursor(node), last.to_be_bytes().to_vec());
            t.commit(tx, &self.index, &self.store)?;
        }
        self.invalidate(&inval);
        Ok(applied)
    }

    fn apply_one(&self, t: &mut Tree, tx: &mut Tx, c: &Change, inval: &mut Vec<Inval>) -> FsResult<()> {
        match c {
            Change::Dir { path, attrs } => {
                let ino = self.peer_dir(t, tx, path, Some(attrs), inval)?;
                Self::peer_attrs(t, tx, ino, attrs, inval)
            }
            Change::File { path, blob, size, attrs } => {
                self.peer_put(t, tx, path, InodeKind::File { blob: *blob }, *size, attrs, inval)
            }
            Change::Symlink { path, target, attrs } => {
                let kind = InodeKind::Symlink { target: target.clone() };
                self.peer_put(t, tx, path, kind, target.len() as u64, attrs, inval)
            }
            Change::Remove { path, blob } => {
                let Some((parent, name)) = Self::resolve(t, path)? else { return Ok(()) };
                let Some(ino) = t.child(parent, name)? else { return Ok(()) };
                match &t.get(ino)?.kind {
                    InodeKind::Dir { .. } => Self::rmdir_in(t, tx, parent, name)?,
                    InodeKind::File { blob: mine } if blob.is_some_and(|b| b != *mine) => {
                        return Err(FsError::Invalid("the file here has newer content"));
                    }
                    _ => self.unlink_in(t, tx, parent, name)?,
                }
                inval.push(Inval::Entry(parent, name.to_vec()));
                Ok(())
            }
            Change::Rename { from, to } => {
                let Some((parent, name)) = Self::resolve(t, from)? else { return Ok(()) };
                if t.child(parent, name)?.is_none() {
                    return Ok(());
                }
                let (newparent, newname) = self.peer_parent(t, tx, to, inval)?;
                self.rename_in(t, tx, parent, name, newparent, newname, 0)?;
                inval.push(Inval::Entry(parent, name.to_vec()));
                inval.push(Inval::Entry(newparent, newname.to_vec()));
                Ok(())
            }
        }
    }

    /// Bind `path` to a new file or symlink inode unless it already holds the same content.
    #[allow(clippy::too_many_arguments)]
    fn peer_put(&self, t: &mut Tree, tx: &mut Tx, path: &[u8], kind: InodeKind, size: u64, attrs: &Attrs, inval: &mut Vec<Inval>) -> FsResult<()> {
        let (parent, name) = self.peer_parent(t, tx, path, inval)?;
        if parent == ROOT {
            return Err(FsError::NotPermitted("only namespace directories may live at the root"));
        }
        if let Some(ino) = t.child(parent, name)? {
            let rec = t.get(ino)?;
            if rec.kind == kind {
                return Self::peer_attrs(t, tx, ino, attrs, inval);
            }
            if matches!(rec.kind, InodeKind::Dir { .. }) {
                return Err(FsError::IsDir);
            }
            self.unlink_in(t, tx, parent, name)?;
        }
        let caller = Caller { uid: attrs.uid, gid: attrs.gid };
        let mut rec = self.new_inode(t, tx, caller, parent, kind, attrs.perm)?;
        rec.size = size;
        rec.mtime = attrs.mtime;
        if let InodeKind::File { blob } = rec.kind {
            t.incref_published(tx, blob, size);
        }
        Self::insert_in(t, tx, parent, name, rec)?;
        inval.push(Inval::Entry(parent, name.to_vec()));
        Ok(())
    }

    /// Take the published attributes if they differ.
    fn peer_attrs(t: &mut Tree, tx: &mut Tx, ino: u64, a: &Attrs, inval: &mut Vec<Inval>) -> FsResult<()> {
        let rec = t.get_mut(ino)?;
        if (rec.perm, rec.uid, rec.gid, rec.mtime) != (a.perm, a.uid, a.gid, a.mtime) {
            (rec.perm, rec.uid, rec.gid, rec.mtime, rec.ctime) = (a.perm, a.uid, a.gid, a.mtime, Ts::now());
            tx.put_inode(rec);
            inval.push(Inval::Inode(ino));
        }
        Ok(())
    }

    /// The parent directory of `path` (created as needed) and the last component.
    fn peer_parent<'p>(&self, t: &mut Tree, tx: &mut Tx, path: &'p [u8], inval: &mut Vec<Inval>) -> FsResult<(u64, &'p [u8])> {
        let parts = change::components(path).ok_or(FsError::Invalid("bad published path"))?;
        let (name, dirs) = parts.split_last().ok_or(FsError::Invalid("empty published path"))?;
        let parent = if dirs.is_empty() {
            ROOT
        } else {
            // the directories' path: everything before the last '/'
            self.peer_dir(t, tx, &path[..path.len() - name.len() - 1], None, inval)?
        };
        Ok((parent, name))
    }

    /// The directory at `path`, created (with its parents) if missing.
    fn peer_dir(&self, t: &mut Tree, tx: &mut Tx, path: &[u8], attrs: Option<&Attrs>, inval: &mut Vec<Inval>) -> FsResult<u64> {
        let parts = change::components(path).ok_or(FsError::Invalid("bad published path"))?;
        let mut dir = ROOT;
        for (i, part) in parts.iter().enumerate() {
            dir = match t.child(dir, part)? {
                Some(ino) if t.dirs.contains_key(&ino) => ino,
                Some(_) => return Err(FsError::NotDir),
                None => {
                    let last = i + 1 == parts.len();
                    let (uid, gid, perm) = match attrs.filter(|_| last) {
                        Some(a) => (a.uid, a.gid, a.perm),
                        None => (self.opts.root_uid, self.opts.root_gid, 0o755),
                    };
                    let rec = self.new_inode(t, tx, Caller { uid, gid }, dir, InodeKind::Dir { parent: dir }, perm)?;
                    let ino = rec.ino;
                    Self::insert_in(t, tx, dir, part, rec)?;
                    inval.push(Inval::Entry(dir, part.to_vec()));
                    ino
                }
            };
        }
        Ok(dir)
    }

    /// The parent directory and name of an existing `path`, if its directories exist.
    fn resolve<'p>(t: &Tree, path: &'p [u8]) -> FsResult<Option<(u64, &'p [u8])>> {
        let parts = change::components(path).ok_or(FsError::Invalid("bad published path"))?;
        let (name, dirs) = parts.split_last().ok_or(FsError::Invalid("empty published path"))?;
        let mut dir = ROOT;
        for part in dirs {
            match t.child(dir, part)? {
                Some(ino) if t.dirs.contains_key(&ino) => dir = ino,
                _ => return Ok(None),
            }
        }
        Ok(Some((dir, name)))
    }

    /// Drop the kernel's cached entries/attributes (set by the FUSE adapter).
    pub fn invalidate(&self, inval: &[Inval]) {
        if let (Some(f), false) = (self.invalidator.get(), inval.is_empty()) {
            f(inval);
        }
    }

    /// Install the function that invalidates kernel caches.
    pub fn set_invalidator(&self, f: crate::fs::Invalidator) {
        let _ = self.invalidator.set(f);
    }
}
