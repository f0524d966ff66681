//! File I/O of the core: open/create, read, write, truncate, fallocate, and the seal that
//! turns a staging file into an immutable content-addressed blob.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::blob::BlobId;
use crate::fs::core::FsCore;
use crate::fs::error::{FsError, FsResult};
use crate::fs::open::{FileState, Handle, OpenInode, Stamp, Staging};
use crate::fs::read_buf::ReadBuf;
use crate::fs::seqhash::SeqHash;
use crate::store::BlobReader;
use crate::fs::tree::{OpenEntry, Tx};
use crate::fs::{Attr, Caller, Opened};
use crate::index::records::{InodeKind, Ts};

/// atime is refreshed on open-for-read when older than this (relatime-like, but fine-grained
/// enough for LRU evictors that read `st_atime`).
const ATIME_SLACK_SECS: i64 = 1;

/// A passthrough reader's open brings a blob of at most this many bytes from foyer into the
/// flat tier before it answers ([`FsCore::foyer_only_blob`]).
pub const FETCH_AT_OPEN_MAX: u64 = 8 << 20;

impl FsCore {
    /// Register a handle on an inode, creating its shared state on first open.
    fn register(&self, ino: u64, write: bool) -> FsResult<(u64, Arc<OpenInode>)> {
        let mut t = self.write_tree();
        let rec = t.get(ino)?;
        let (blob, size) = match rec.kind {
            InodeKind::File { blob } => (blob, rec.size),
            InodeKind::Dir { .. } => return Err(FsError::IsDir),
            InodeKind::Symlink { .. } => return Err(FsError::Invalid("cannot open a symlink")),
            // the kernel opens FIFOs and sockets itself, and devices not at all (nodev)
            InodeKind::Special { .. } => return Err(FsError::NotPermitted("a special file has no contents here")),
        };
        let entry = t.open.entry(ino).or_insert_with(|| OpenEntry { count: 0, file: Arc::new(OpenInode::new(ino, blob, size)) });
        entry.count += 1;
        let file = entry.file.clone();
        let fh = self.handles.open_file(Handle { file: file.clone(), write });
        Ok((fh, file))
    }

    /// Open a file. `O_TRUNC` with write access empties it (atomic-o-trunc).
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let acc = flags & libc::O_ACCMODE;
        let (read, write) = (acc != libc::O_WRONLY, acc != libc::O_RDONLY);
        let (fh, file) = self.register(ino, write)?;
        self.budgets.note_use(ino);
        let res = (|| {
            if write && flags & libc::O_TRUNC != 0 {
                let mut st = file.lock();
                self.resize_locked(&file, &mut st, 0)?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            self.release(fh);
            return Err(e);
        }
        Ok(self.open_reply(fh, &file, read && !write, write, flags))
    }

    /// Decide the kernel cache flags and refresh atime.
    ///
    /// Writable handles are direct-I/O: every write reaches the daemon without a page-cache
    /// copy in between, and the kernel skips its per-inode `security.capability` lookup
    /// before the first write (a FUSE round trip per new file). Their pages are not cached;
    /// the sealed blob is cached by later read-only opens.
    fn open_reply(&self, fh: u64, file: &OpenInode, read_only: bool, writable: bool, flags: i32) -> Opened {
        let (blob, writing) = {
            let st = file.lock();
            (st.blob, st.staging.is_some())
        };
        let mut t = self.write_tree();
        let keep_cache = !writing && t.kernel_cached.get(&file.ino) == Some(&blob);
        if writing {
            t.kernel_cached.remove(&file.ino);
        } else {
            t.kernel_cached.insert(file.ino, blob);
        }
        let mut attr_changed = false;
        if read_only {
            let now = Ts::now();
            if let Ok(rec) = t.get_mut(file.ino) {
                if rec.atime <= rec.mtime || now.secs() - rec.atime.secs() >= ATIME_SLACK_SECS {
                    rec.atime = now;
                    let mut tx = Tx::default();
                    tx.put_inode(rec);
                    attr_changed = true;
                    if let Err(e) = t.commit(tx, &self.index, &self.store) {
                        tracing::warn!(ino = file.ino, error = %e, "could not persist atime");
                    }
                }
            }
        }
        Opened { fh, keep_cache, direct_io: writable || flags & libc::O_DIRECT != 0, attr_changed }
    }

    /// Create and open a regular file.
    pub fn create(&self, caller: Caller, parent: u64, name: &[u8], mode: u32, umask: u32, flags: i32) -> FsResult<(Attr, Opened)> {
        let attr = self.mknod(caller, parent, name, libc::S_IFREG | (mode & 0o7777), umask, 0)?;
        let acc = flags & libc::O_ACCMODE;
        let (fh, file) = self.register(attr.ino, acc != libc::O_RDONLY)?;
        self.budgets.note_use(attr.ino);
        Ok((attr, self.open_reply(fh, &file, false, acc != libc::O_RDONLY, flags)))
    }

    /// For a passthrough reader of `ino`: its blob, when it is at most [`FETCH_AT_OPEN_MAX`]
    /// bytes, not in the flat tier and in foyer. The open then brings it into the flat tier
    /// first ([`FsCore::fetch_to_flat`]) so that the kernel serves the reads: foyer's disk
    /// returns a small blob in a few ms, and a reader of it through the daemon would wait
    /// that long for its first READ anyway and then pay a FUSE copy for every byte.
    pub fn foyer_only_blob(&self, ino: u64) -> Option<BlobId> {
        let (blob, size) = {
            let t = self.read_tree();
            let rec = t.get(ino).ok()?;
            let InodeKind::File { blob } = rec.kind else { return None };
            (blob, rec.size)
        };
        let store = &self.store;
        (size > 0 && size <= FETCH_AT_OPEN_MAX && !store.flat().contains(&blob) && store.foyer().is_some_and(|f| f.contains(&blob))).then_some(blob)
    }

    /// Bring `blob` from foyer into the flat tier, waiting for foyer's disk, never for the
    /// object store (see [`FsCore::foyer_only_blob`]). A blob foyer no longer has, or a
    /// failure, only means the open goes the daemon's way.
    pub fn fetch_to_flat(&self, blob: &BlobId) {
        match self.store.adopt_from_foyer(blob) {
            Ok(true) => {}
            Ok(false) => tracing::debug!(%blob, "foyer no longer had a blob at open; its reads go through the daemon"),
            Err(e) => tracing::debug!(%blob, error = %e, "a blob could not be brought into the flat tier at open; its reads go through the daemon"),
        }
    }

    /// For FUSE passthrough: the blob a read-only handle reads when its inode is sealed (no
    /// writer is staging it) and not empty; `None` otherwise.
    pub fn sealed_blob(&self, fh: u64) -> Option<crate::blob::BlobId> {
        let (file, write) = self.handles.file(fh)?;
        let st = file.lock();
        (!write && st.staging.is_none() && st.size > 0).then_some(st.blob)
    }

    /// For FUSE passthrough of writes: the staging file the kernel may write into itself.
    /// A write handle gets it when the file is new or was truncated (no copy-on-write of old
    /// bytes is due) or the kernel writes the inode's staging file already; a read-only
    /// handle only in that last case (it must share the inode's backing file). From then on
    /// the core takes the file's own length and times as the truth, and a seal snapshots
    /// and hashes it. `None`: the handle goes through the daemon.
    pub fn kernel_writer(&self, fh: u64) -> FsResult<Option<Arc<File>>> {
        let (file, write) = self.handle(fh)?;
        let mut st = file.lock();
        if !write || st.staging.as_ref().is_some_and(|s| s.kernel_writes) {
            return Ok(st.staging.as_ref().filter(|s| s.kernel_writes).map(|s| s.file.clone()));
        }
        if st.staging.is_none() {
            if st.size != 0 {
                // a rewrite in place: its first write copies the old bytes (through the daemon)
                return Ok(None);
            }
            // a new (empty) file: nothing to seal until the kernel writes
            let (f, path) = self.store.new_staging()?;
            st.staging = Some(Staging::new(f, path, 0, SeqHash::broken(), false));
        }
        let Some(s) = st.staging.as_mut() else { return Ok(None) };
        s.hash.mark_broken();
        s.sealed = if s.dirty { None } else { Some(Stamp::of(&s.file)?) };
        s.kernel_writes = true;
        let f = s.file.clone();
        let _ = file.kernel_file.set(f.clone());
        Ok(Some(f))
    }

    fn handle(&self, fh: u64) -> FsResult<(Arc<OpenInode>, bool)> {
        self.handles.file(fh).ok_or(FsError::BadHandle)
    }

    /// Read up to `size` bytes at `offset`: the staging file while the inode is being written,
    /// the sealed blob otherwise (waiting for verified bytes of a blob still downloading).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_buf(fh, offset, size).map(ReadBuf::into_vec)
    }

    /// Like `read`, in a reply buffer reused across reads (see [`ReadBuf`]).
    pub fn read_buf(&self, fh: u64, offset: u64, size: u32) -> FsResult<ReadBuf> {
        let src = self.read_source(fh, offset, size, true)?.expect("a waiting read always has its bytes");
        src.read()
    }

    /// Like `read_buf`, but `Ok(None)` instead of waiting for bytes still downloading — the
    /// FUSE adapter answers those reads inline and hands only the others to a blocking thread.
    pub fn try_read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Option<ReadBuf>> {
        self.read_source(fh, offset, size, false)?.map(|s| s.read()).transpose()
    }

    /// Like `read_buf`, into `out` (at most `out.len()` bytes): the io_uring transport reads
    /// straight into a ring entry's payload. With `wait` false, `Ok(None)` instead of waiting
    /// for bytes still downloading.
    pub fn read_into(&self, fh: u64, offset: u64, out: &mut [u8], wait: bool) -> FsResult<Option<usize>> {
        let size = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let Some(src) = self.read_source(fh, offset, size, wait)? else { return Ok(None) };
        // SAFETY: `out` has room for `src.want` (at most `size`) bytes.
        unsafe { src.pread_to(out.as_mut_ptr()) }.map(Some)
    }

    /// Where the bytes are, once they are readable; `None` when they are still downloading and
    /// `wait` is false. A reader takes its buffer only after any wait.
    fn read_source(&self, fh: u64, offset: u64, size: u32, wait: bool) -> FsResult<Option<ReadSource>> {
        let (file, _) = self.handle(fh)?;
        let (src, len, pending) = {
            let mut st = file.lock();
            match &st.staging {
                Some(s) => (s.file.clone(), s.current_len()?, None),
                None => {
                    let len = st.size;
                    let r = self.reader(&mut st)?;
                    (r.file().clone(), len, Some(r))
                }
            }
        };
        let want = if offset >= len { 0 } else { (size as u64).min(len - offset) as usize };
        let mut from_flat = false;
        if let Some(r) = pending.filter(|_| want > 0) {
            if !wait && !r.ready(offset, want as u64) {
                return Ok(None);
            }
            // a blob still downloading: wait (without the inode lock) for verified bytes
            r.wait(offset, want as u64)?;
            from_flat = matches!(r, BlobReader::Local(_));
        }
        Ok(Some(ReadSource { file: src, offset, want, from_flat }))
    }

    fn reader(&self, st: &mut FileState) -> FsResult<BlobReader> {
        if let Some(r) = st.reader.as_ref().filter(|r| !r.failed()) {
            return Ok(r.clone());
        }
        let r = self.store.open_reader(&st.blob, st.size)?;
        st.reader = Some(r.clone());
        Ok(r)
    }

    /// Make sure the inode has a staging file, copying the blob's bytes into it (copy-on-write).
    fn staging<'a>(&self, st: &'a mut FileState) -> FsResult<&'a mut Staging> {
        if st.staging.is_none() {
            let (mut f, path) = self.store.new_staging()?;
            let hash = if st.size == 0 {
                SeqHash::new(&self.hasher)
            } else {
                let mut src = self.store.open_blob(&st.blob)?;
                std::io::copy(&mut src, &mut f)?;
                SeqHash::broken()
            };
            st.staging = Some(Staging::new(f, path, st.size, hash, false));
        }
        st.staging.as_mut().ok_or(FsError::BadHandle)
    }

    /// Write bytes at `offset`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.write_inner(fh, offset, data, false).map(|n| n.unwrap_or_default())
    }

    /// Like `write`, but `Ok(None)` instead of a copy-on-write of the inode's blob first
    /// (which may have to come from the object store): the FUSE adapter answers the other
    /// writes (a new file, or one that has its staging file) on its own thread.
    pub fn try_write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<Option<u32>> {
        self.write_inner(fh, offset, data, true)
    }

    fn write_inner(&self, fh: u64, offset: u64, data: &[u8], local_only: bool) -> FsResult<Option<u32>> {
        let (file, write) = self.handle(fh)?;
        if !write {
            return Err(FsError::BadHandle);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(FsError::TooBig)?;
        if end > self.opts.max_file_size {
            return Err(FsError::TooBig);
        }
        let mut st = file.lock();
        if local_only && st.staging.is_none() && st.size != 0 {
            return Ok(None);
        }
        let s = self.staging(&mut st)?;
        let len = s.current_len()?;
        s.file.write_all_at(data, offset)?;
        s.hash.on_write(&s.file, offset, data);
        s.size = len.max(end);
        s.dirty = true;
        let size = s.size;
        drop(st);
        self.touch_file(file.ino, size);
        Ok(Some(data.len() as u32))
    }

    /// Reflect a written size and mtime in the tree (memory only; the seal persists them).
    fn touch_file(&self, ino: u64, size: u64) {
        let now = Ts::now();
        let mut t = self.write_tree();
        if let Ok(rec) = t.get_mut(ino) {
            rec.size = size;
            rec.mtime = now;
            rec.ctime = now;
        }
    }

    fn resize_locked(&self, file: &OpenInode, st: &mut FileState, size: u64) -> FsResult<()> {
        if size > self.opts.max_file_size {
            return Err(FsError::TooBig);
        }
        if st.staging.is_none() && st.size == size {
            return Ok(());
        }
        if size == 0 && st.staging.is_none() {
            // O_TRUNC: no copy of the old bytes
            let (f, path) = self.store.new_staging()?;
            st.staging = Some(Staging::new(f, path, 0, SeqHash::new(&self.hasher), true));
        } else {
            let s = self.staging(st)?;
            s.file.set_len(size)?;
            s.hash.on_resize(size);
            s.size = size;
            s.dirty = true;
        }
        self.touch_file(file.ino, size);
        Ok(())
    }

    /// Set a file's size; without a handle the change is sealed at once.
    pub(super) fn truncate(&self, ino: u64, size: u64, fh: Option<u64>) -> FsResult<()> {
        let temp = match fh.filter(|fh| self.handles.file(*fh).is_some_and(|(_, write)| write)) {
            Some(fh) => (fh, false),
            None => (self.register(ino, true)?.0, true),
        };
        let res = (|| {
            let (file, _) = self.handle(temp.0)?;
            let mut st = file.lock();
            self.resize_locked(&file, &mut st, size)?;
            if temp.1 {
                self.seal_locked(&file, &mut st)?;
            }
            Ok(())
        })();
        if temp.1 {
            self.release(temp.0);
        }
        res
    }

    /// `fallocate` mode 0: allocate and extend; other modes are not supported.
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        if mode != 0 {
            return Err(FsError::NotSupported("fallocate modes other than 0"));
        }
        let (file, write) = self.handle(fh)?;
        if !write {
            return Err(FsError::BadHandle);
        }
        let end = offset.checked_add(len).ok_or(FsError::TooBig)?;
        if end > self.opts.max_file_size {
            return Err(FsError::TooBig);
        }
        let mut st = file.lock();
        let s = self.staging(&mut st)?;
        s.size = s.current_len()?;
        // SAFETY: fallocate on a valid descriptor we own; no memory is passed.
        let rc = unsafe { libc::fallocate(s.file.as_raw_fd(), 0, offset as i64, len as i64) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if end > s.size {
            s.hash.mark_broken();
            s.size = end;
            s.dirty = true;
        }
        let size = s.size;
        drop(st);
        self.touch_file(file.ino, size);
        Ok(())
    }

    /// Seal a dirty staging file: hash it, move it into the flat tier under its hash (dropping
    /// it if that blob exists), and atomically rebind the inode. Called with the inode locked.
    ///
    /// A staging file the kernel writes (passthrough) cannot move: the kernel may still write
    /// it through a duplicated descriptor or a shared mapping, and those bytes must never
    /// reach a blob's file. Its seal snapshots it into a new staging file (a reflink where
    /// the filesystem can), hashes the snapshot and adopts that; the staging file stays the
    /// inode's until its last handle closes, and a later seal with an unchanged stamp is free.
    ///
    /// Returns whether the inode's blob now holds the file's content (false only for a file
    /// unlinked while open, which is not sealed).
    fn seal_locked(&self, file: &OpenInode, st: &mut FileState) -> FsResult<bool> {
        let Some(s) = st.staging.as_mut() else { return Ok(true) };
        let mut snapshot = None;
        let (id, size, src) = if s.kernel_writes {
            let stamp = Stamp::of(&s.file)?;
            if s.sealed == Some(stamp) {
                return Ok(true);
            }
            let (copy, path) = self.store.staging_copy(&s.file, stamp.len)?;
            let guard = RemoveUnlessAdopted(path.clone());
            let (id, n) = BlobId::of_reader(&copy)?;
            snapshot = Some((stamp, guard));
            (id, n, path)
        } else {
            if !s.dirty {
                st.staging = None;
                return Ok(true);
            }
            match s.hash.finish(s.size) {
                Some(id) => (id, s.size, s.path.clone()),
                None => {
                    let mut f: &File = &s.file;
                    f.seek(SeekFrom::Start(0))?;
                    let (id, n) = BlobId::of_reader(f.take(s.size))?;
                    (id, n, s.path.clone())
                }
            }
        };
        // --upload sync: durable in the object store before anything is published; on
        // failure the writer gets EIO and the staging file stays for a retry. A small blob
        // travels in the journal batch the closer waits for (one PUT on its path), and is
        // uploaded as its own object from the queue afterwards.
        let upload_now = self.store.sync_uploads() && (self.store.objects().is_local() || size > crate::sync::change::INLINE_MAX);
        if upload_now {
            self.store.upload_now(&id, &src)?;
        }
        let (unlinked, known) = {
            let t = self.read_tree();
            (t.unlinked(file.ino), t.knows_blob(&id))
        };
        if unlinked {
            // unlinked while open: nothing to publish; the staging file stays for open readers
            s.hash.mark_broken();
            return Ok(false);
        }
        // The seal's filesystem calls — the rename into the flat tier and, with the local
        // store, the link into it — are made before the tree lock, so that lookups, creates
        // and other seals do not wait behind them. Pinned, the blob is neither evicted nor
        // reclaimed (a delete of the same content meanwhile leaves it) until the commit below
        // has named it and queued its upload.
        let pinned = self.store.adopt(&src, &id)?;
        let stored = !upload_now && !known && self.store.put_now(&id);
        // test hook: a request that runs between the adoption and the lock
        fail::fail_point!("seal-adopted");
        let mut t = self.write_tree();
        if t.unlinked(file.ino) {
            // unlinked meanwhile: nothing names the adopted blob for this file
            drop(pinned);
            if !t.knows_blob(&id) {
                // nor any other name: its files go again (unless another seal holds it)
                if let Err(e) = self.store.reclaim(id, size) {
                    tracing::warn!(%id, error = %e, "could not remove an unreferenced blob");
                }
            }
            drop(t);
            s.hash.mark_broken();
            if !s.kernel_writes {
                self.detach_from_blob(s)?;
            }
            return Ok(false);
        }
        let mut tx = Tx::default();
        if upload_now {
            // uploaded above: queueing it again would cost a second PUT, and the publisher,
            // which waits for queued uploads, would keep the waiting closer for it
            t.incref_published(&mut tx, id, size);
        } else {
            // new to this node: stored above; or known then and reclaimed meanwhile, so new
            // again: stored now; a put that failed above is queued as an upload instead
            t.incref_stored(&mut tx, id, size, || stored || (known && self.store.put_now(&id)));
        }
        let rec = t.get_mut(file.ino)?;
        let old = match &mut rec.kind {
            InodeKind::File { blob } => std::mem::replace(blob, id),
            _ => return Err(FsError::IsDir),
        };
        rec.size = size;
        if let Some((stamp, _)) = &snapshot {
            // the kernel's writes set the file's times; the daemon never saw them
            rec.mtime = stamp.mtime;
            rec.ctime = stamp.ctime;
        }
        tx.put_inode(rec);
        t.note_state(&mut tx, file.ino);
        t.decref(&mut tx, old);
        t.kernel_cached.remove(&file.ino);
        // crash window: the new blob is in the flat tier, nothing records it yet
        fail::fail_point!("seal-before-commit");
        t.commit(tx, &self.index, &self.store)?;
        drop(t);
        match snapshot {
            Some((stamp, mut guard)) => {
                // adopted: the snapshot's path is the flat file's now
                guard.0 = std::path::PathBuf::new();
                s.sealed = Some(stamp);
                s.dirty = false;
            }
            None => {
                // the staging path now names the flat file: forget it without deleting
                if let Some(mut s) = st.staging.take() {
                    s.path = std::path::PathBuf::new();
                }
            }
        }
        st.blob = id;
        st.size = size;
        st.reader = None;
        Ok(true)
    }

    /// The staging file `s` was renamed into the flat tier by a seal that then found its file
    /// unlinked, and the file's writers may still write it: they get a copy of their own. With
    /// no room for a copy the file stays readable but takes no more writes (EIO), since a
    /// write would change a blob's file; the error is returned.
    fn detach_from_blob(&self, s: &mut Staging) -> FsResult<()> {
        let copied = (|| {
            fail::fail_point!("seal-unlinked-copy", |_| Err(crate::tiers::StoreError::io("failpoint", std::io::Error::other("no space"))));
            self.store.staging_copy(&s.file, s.size)
        })();
        match copied {
            Ok((copy, path)) => {
                s.file = Arc::new(copy);
                s.path = path;
                Ok(())
            }
            Err(e) => {
                s.file = Arc::new(reopen_read_only(&s.file)?);
                s.path = std::path::PathBuf::new();
                Err(e.into())
            }
        }
    }

    /// `close()` of a descriptor: seal if the file was written, so close ⇒ durable.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let (file, write) = self.handle(fh)?;
        if write {
            let mut st = file.lock();
            self.seal_locked(&file, &mut st)?;
            drop(st);
            self.publish_if_sync()?;
        }
        Ok(())
    }

    /// `--upload sync`: the name, not only the blob, must be in the bucket before `close` or
    /// `fsync` returns, so the file survives the loss of this node.
    fn publish_if_sync(&self) -> FsResult<()> {
        if self.store.sync_uploads() {
            self.wait_published(self.store.wait_limit())?;
        }
        Ok(())
    }

    /// `fsync`: seal, then make the blob and the metadata durable on disk.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (file, _) = self.handle(fh)?;
        let mut st = file.lock();
        // an empty blob has no file to sync
        if self.seal_locked(&file, &mut st)? && st.size > 0 {
            self.store.flat().sync(&st.blob)?;
        }
        drop(st);
        self.index.sync()?;
        self.publish_if_sync()
    }

    /// Last close of a handle.
    pub fn release(&self, fh: u64) {
        let Some(h) = self.handles.close_file(fh) else { return };
        if h.write {
            let mut st = h.file.lock();
            if let Err(e) = self.seal_locked(&h.file, &mut st) {
                tracing::error!(ino = h.file.ino, error = %e, "sealing at release failed; the written bytes are lost");
            }
        }
        let ino = h.file.ino;
        drop(h);
        let mut t = self.write_tree();
        let last = match t.open.get_mut(&ino) {
            Some(e) => {
                e.count -= 1;
                e.count == 0
            }
            None => false,
        };
        if last {
            t.open.remove(&ino);
            self.ns.free_if_orphan(&mut t, ino);
        }
    }

    /// `fsyncdir`: make every committed metadata change durable on disk.
    pub fn sync_metadata(&self) -> FsResult<()> {
        Ok(self.index.sync()?)
    }
}

/// Readable bytes of an open file: `want` at `offset` of `file`.
struct ReadSource {
    file: Arc<File>,
    offset: u64,
    want: usize,
    from_flat: bool,
}

impl ReadSource {
    /// `pread` them (fewer only at end of file) into a pooled buffer that is not zeroed
    /// first: reads are the hot path and each can be 1 MiB.
    fn read(self) -> FsResult<ReadBuf> {
        let mut out = ReadBuf::take();
        if self.want == 0 {
            return Ok(out);
        }
        let buf = out.vec();
        buf.reserve(self.want);
        // SAFETY: the spare capacity of `buf`, which we own, holds `want` bytes; the first
        // `done` are initialised by pread.
        unsafe {
            let done = self.pread_to(buf.as_mut_ptr())?;
            buf.set_len(done);
        }
        Ok(out)
    }

    /// `pread` the bytes to `dst`; returns how many (fewer only at end of file).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `want` bytes.
    unsafe fn pread_to(&self, dst: *mut u8) -> FsResult<usize> {
        let mut done = 0;
        while done < self.want {
            // SAFETY: pread writes at most `want - done` bytes at `dst + done`, which the
            // caller vouches for; `done` only counts bytes pread reported as written.
            let n = unsafe { libc::pread(self.file.as_raw_fd(), dst.add(done).cast(), self.want - done, (self.offset + done as u64) as libc::off_t) };
            match n {
                0 => break,
                n if n > 0 => done += n as usize,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e.into());
                    }
                }
            }
        }
        if self.from_flat {
            crate::metrics::get().tier_bytes("flat", done as u64);
        }
        Ok(done)
    }
}

/// A snapshot file removed on drop unless it was adopted (its path then cleared).
struct RemoveUnlessAdopted(std::path::PathBuf);

impl Drop for RemoveUnlessAdopted {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A second, read-only descriptor of an open file (through `/proc/self/fd`): it needs no
/// space on the file's filesystem.
fn reopen_read_only(f: &File) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))
}
