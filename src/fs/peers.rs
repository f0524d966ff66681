//! Applying other nodes' changes (see [`crate::fs::publish`]) to this node's tree, by the
//! rules every follower shares ([`crate::sync::apply`]). A bound name gets a new inode, so
//! open handles keep the old one (as after a local rename over an open file).
//!
//! Applied changes are not published again. The kernel's cached entries and attributes for
//! every touched name are invalidated after the tree lock is released.

use crate::fs::namespace::Namespace;
use crate::fs::error::{FsError, FsResult};
use crate::fs::tree::{Tree, Tx, ROOT};
use crate::fs::{Caller, Inval};
use crate::index::keys;
use crate::hlc::Stamp;
use crate::index::records::{InodeKind, Ts};
use crate::sync::apply::{self, Found, Outcome, Target};
use crate::sync::change::{self, Attrs, Batch, Change};

impl Namespace {
    /// Apply the changes of `batch` that are newer than this node's cursor for `node`, and
    /// advance the cursor in the same commit. Returns how many changes were applied.
    pub fn apply_peer_batch(&self, node: &str, batch: &Batch) -> FsResult<usize> {
        let mut inval = Vec::new();
        let mut applied = 0;
        // small blobs the batch carries go to the flat tier first (a name bound to one reads
        // locally at once, even before its writer's upload of it is done)
        let carried = self.adopt_carried(node, batch);
        {
            let mut t = self.write_tree();
            let cursor = t.outbox.cursors.get(node).copied().unwrap_or(0);
            let mut tx = Tx::daemon_removal();
            for (i, (seq, c)) in batch.changes.iter().enumerate().filter(|(_, (s, _))| *s > cursor) {
                let stamp = batch.stamp(i);
                // this node's later changes are stamped past every change it applied or left out
                t.clock.observe(stamp);
                let mut target = TreeTarget { core: self, t: &mut t, tx: &mut tx, inval: &mut inval };
                match apply::apply(&mut target, c, stamp) {
                    Ok(Outcome::Applied) => applied += 1,
                    Ok(Outcome::Skipped(why)) => tracing::debug!(node, seq, change = ?c, why, "a change of another node is left out by the rules"),
                    Err(e) => tracing::warn!(node, seq, change = ?c, error = %e, "a change of another node does not apply here; skipped"),
                }
            }
            let last = batch.last_seq().max(cursor);
            t.outbox.cursors.insert(node.to_string(), last);
            tx.put_raw(keys::cursor(node), last.to_be_bytes().to_vec());
            t.commit(tx, &self.index, &self.store)?;
            // carried blobs no applied change bound (the rules left it out, or it was applied
            // before) do not stay; under the tree lock, as a seal adopts under it
            for (id, _pin) in carried {
                if !t.blobs.contains_key(&id) {
                    if let Err(e) = self.store.flat().remove(&id) {
                        tracing::warn!(%id, error = %e, "could not remove a carried blob no name took");
                    }
                }
            }
        }
        self.invalidate(&inval);
        let m = crate::metrics::get();
        m.journal_applied.inc_by(applied as u64);
        if let (Some(sealed), true) = (batch.sealed_ms, applied > 0) {
            // another node's clock: a batch "from the future" counts as no delay
            m.journal_apply_delay.observe(change::now_ms().saturating_sub(sealed) as f64 / 1000.0);
        }
        Ok(applied)
    }

    /// Adopt the verified blobs `batch` carries that its changes past the cursor name and the
    /// flat tier lacks; a blob whose bytes are not its own is left out (read from the bucket).
    fn adopt_carried(&self, node: &str, batch: &Batch) -> Vec<(crate::blob::BlobId, crate::store::Pinned<'_>)> {
        if batch.inline.is_empty() {
            return Vec::new();
        }
        let cursor = self.read_tree().outbox.cursors.get(node).copied().unwrap_or(0);
        let mut out = Vec::new();
        for id in batch.changes.iter().filter(|(s, _)| *s > cursor).filter_map(|(_, c)| c.blob()) {
            let Some(i) = batch.inline_blob(&id) else { continue };
            if out.iter().any(|(o, _)| *o == id) {
                continue;
            }
            if !i.verified() {
                tracing::warn!(node, %id, "a carried blob does not hash to its id; it is read from the bucket instead");
                continue;
            }
            match self.store.adopt_bytes(&id, &i.bytes) {
                Ok(Some(pin)) => out.push((id, pin)),
                Ok(None) => {}
                Err(e) => tracing::warn!(node, %id, error = %e, "could not keep a carried blob; it is read from the bucket instead"),
            }
        }
        out
    }

    /// Bind `path` to a new file or symlink inode (the rules checked it is not a directory).
    #[allow(clippy::too_many_arguments)]
    fn peer_put(&self, t: &mut Tree, tx: &mut Tx, path: &[u8], kind: InodeKind, size: u64, attrs: &Attrs, stamp: Stamp, inval: &mut Vec<Inval>) -> FsResult<()> {
        let (parent, name) = self.peer_parent(t, tx, path, inval)?;
        if parent == ROOT {
            return Err(FsError::NotPermitted("only namespace directories may live at the root"));
        }
        if t.child(parent, name)?.is_some() {
            self.unlink_in(t, tx, parent, name)?;
        }
        let caller = Caller { uid: attrs.uid, gid: attrs.gid };
        let mut rec = self.new_inode(t, tx, caller, parent, kind, attrs.perm)?;
        rec.size = size;
        rec.mtime = attrs.mtime;
        rec.stamp = stamp;
        t.clear_tomb(tx, path, stamp);
        if let InodeKind::File { blob } = rec.kind {
            t.incref_published(tx, blob, size);
        }
        Self::insert_in(t, tx, parent, name, rec)?;
        inval.push(Inval::Entry(parent, name.to_vec()));
        Ok(())
    }

    /// Take the published attributes (and a file's or symlink's version) if they differ.
    fn peer_attrs(t: &mut Tree, tx: &mut Tx, ino: u64, a: &Attrs, stamp: Stamp, inval: &mut Vec<Inval>) -> FsResult<()> {
        let rec = t.get_mut(ino)?;
        let mut changed = false;
        if (rec.perm, rec.uid, rec.gid, rec.mtime) != (a.perm, a.uid, a.gid, a.mtime) {
            (rec.perm, rec.uid, rec.gid, rec.mtime, rec.ctime) = (a.perm, a.uid, a.gid, a.mtime, Ts::now());
            inval.push(Inval::Inode(ino));
            changed = true;
        }
        if stamp.is_set() && rec.stamp != stamp {
            rec.stamp = stamp;
            changed = true;
        }
        if changed {
            tx.put_inode(rec);
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

    /// The parent, name and inode at an existing `path`.
    fn peer_ino<'p>(t: &Tree, path: &'p [u8]) -> FsResult<Option<(u64, &'p [u8], u64)>> {
        let Some((parent, name)) = Self::resolve(t, path)? else { return Ok(None) };
        Ok(t.child(parent, name)?.map(|ino| (parent, name, ino)))
    }

    /// Drop the kernel's cached entries/attributes (set by the FUSE adapter).
    pub fn invalidate(&self, inval: &[Inval]) {
        if inval.is_empty() {
            return;
        }
        if let Some(f) = self.invalidator.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            f(inval);
        }
    }

    /// [`Self::invalidate`] from another thread: a caller inside a FUSE request (a `setxattr`
    /// that sets a budget holds the directory's lock in the kernel) must not wait on the
    /// kernel's invalidation of an entry in that directory.
    pub fn invalidate_later(&self, inval: Vec<Inval>) {
        let f = self.invalidator.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some(f), false) = (f, inval.is_empty()) {
            std::thread::spawn(move || f(&inval));
        }
    }

    /// Install the function that invalidates kernel caches (a later mount of this core
    /// replaces the earlier one's).
    pub fn set_invalidator(&self, f: crate::fs::Invalidator) {
        *self.invalidator.write().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }
}

/// This node's tree as a target of the shared rules, within one commit.
struct TreeTarget<'a> {
    core: &'a Namespace,
    t: &'a mut Tree,
    tx: &'a mut Tx,
    inval: &'a mut Vec<Inval>,
}

impl Target for TreeTarget<'_> {
    type Error = FsError;

    fn find(&self, path: &[u8]) -> FsResult<Found> {
        let Some((_, _, ino)) = Namespace::peer_ino(self.t, path)? else { return Ok(Found::Nothing) };
        let rec = self.t.get(ino)?;
        Ok(match &rec.kind {
            InodeKind::File { blob } => Found::File(*blob, rec.stamp),
            InodeKind::Symlink { target } => Found::Symlink(target.clone(), rec.stamp),
            InodeKind::Special { .. } => Found::Special,
            InodeKind::Dir { .. } => Found::Dir { empty: self.t.children(ino)?.is_empty() },
        })
    }

    fn tomb(&self, path: &[u8]) -> FsResult<Stamp> {
        Ok(self.t.tomb(path))
    }

    fn set_tomb(&mut self, path: &[u8], stamp: Stamp) -> FsResult<()> {
        self.t.set_tomb(self.tx, path, stamp);
        Ok(())
    }

    fn bind(&mut self, c: &Change, stamp: Stamp) -> FsResult<()> {
        let (path, kind, size, attrs) = match c {
            Change::File { path, blob, size, attrs } => (path, InodeKind::File { blob: *blob }, *size, attrs),
            Change::Symlink { path, target, attrs } => (path, InodeKind::Symlink { target: target.clone() }, target.len() as u64, attrs),
            _ => return Err(FsError::Invalid("not a file change")),
        };
        self.core.peer_put(self.t, self.tx, path, kind, size, attrs, stamp, self.inval)
    }

    fn set_attrs(&mut self, path: &[u8], attrs: &Attrs, stamp: Stamp) -> FsResult<()> {
        let (_, _, ino) = Namespace::peer_ino(self.t, path)?.ok_or(FsError::NotFound)?;
        self.t.clear_tomb(self.tx, path, stamp);
        Namespace::peer_attrs(self.t, self.tx, ino, attrs, stamp, self.inval)
    }

    fn make_dir(&mut self, path: &[u8], attrs: &Attrs) -> FsResult<()> {
        let ino = self.core.peer_dir(self.t, self.tx, path, Some(attrs), self.inval)?;
        Namespace::peer_attrs(self.t, self.tx, ino, attrs, Stamp::ZERO, self.inval)
    }

    fn remove(&mut self, path: &[u8]) -> FsResult<()> {
        let Some((parent, name, ino)) = Namespace::peer_ino(self.t, path)? else { return Ok(()) };
        if self.t.dirs.contains_key(&ino) {
            Namespace::rmdir_in(self.t, self.tx, parent, name)?;
        } else {
            self.core.unlink_in(self.t, self.tx, parent, name)?;
        }
        self.inval.push(Inval::Entry(parent, name.to_vec()));
        Ok(())
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> FsResult<()> {
        let (parent, name, _) = Namespace::peer_ino(self.t, from)?.ok_or(FsError::NotFound)?;
        let (newparent, newname) = self.core.peer_parent(self.t, self.tx, to, self.inval)?;
        self.core.rename_in(self.t, self.tx, parent, name, newparent, newname, 0)?;
        self.inval.push(Inval::Entry(parent, name.to_vec()));
        self.inval.push(Inval::Entry(newparent, newname.to_vec()));
        Ok(())
    }
}
