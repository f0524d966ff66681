//! The fuser-free filesystem core: the namespace ([`crate::fs::namespace`]) with open files
//! and their I/O ([`crate::fs::io`]), budgets ([`crate::fs::budget`]) and extended attributes
//! ([`crate::fs::xattr`]). Operations on names are the namespace's, reached through `Deref`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::blob::BlobId;
use crate::fs::budget::{namespace_of, Budgets};
use crate::fs::error::{FsError, FsResult};
use crate::fs::namespace::{live_attr, Namespace};
use crate::fs::open::Handles;
use crate::fs::tree::{Tree, ROOT};
use crate::fs::{Attr, DirEntry, SetAttr, StatFs, BLOCK_SIZE};
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

/// The filesystem core: the namespace, and what open files, budgets and hashing add to it.
pub struct FsCore {
    pub(super) ns: Arc<Namespace>,
    pub(super) handles: Handles,
    /// namespace budgets (they see the tree read-only; removals go through `unlink`)
    pub(super) budgets: Budgets,
    /// hashes large sequential writes behind the writers
    pub(super) hasher: Arc<crate::fs::seqhash::HashWorker>,
    /// the cache dir (statfs reports its filesystem)
    cache_dir: PathBuf,
}

impl std::ops::Deref for FsCore {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.ns
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
            stamp: Default::default(),
        };
        let mut tree = Tree::load(records, &store, &index, root)?;
        // a remote store may be shared: publish this node's changes for the others
        let node = crate::sync::snapshot::node_id(cache_dir)?;
        tree.outbox.init(&node, !store.objects().is_local());
        tree.clock.set_node(&node);
        let idx = index.clone();
        store.set_uploaded_hook(Arc::new(move |id: BlobId| {
            if let Err(e) = idx.commit(vec![crate::index::Op::Delete(crate::index::keys::upload(&id))]) {
                tracing::error!(%id, error = %e, "could not record a finished upload");
            }
        }))?;
        let budgets = Budgets::new(opts.budgets.clone());
        let ns = Namespace { tree: RwLock::new(tree), store, index, opts, invalidator: RwLock::new(None), feed: Default::default() };
        Ok(FsCore { ns: Arc::new(ns), handles: Handles::default(), budgets, hasher: crate::fs::seqhash::HashWorker::start(), cache_dir: cache_dir.to_path_buf() })
    }

    /// The namespace, shared with the background work that publishes and follows changes.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// Change attributes. A size change rewrites the file through a staging file.
    pub fn setattr(&self, ino: u64, ch: SetAttr, fh: Option<u64>) -> FsResult<Attr> {
        if let Some(size) = ch.size {
            self.truncate(ino, size, fh)?;
        }
        self.ns.set_attrs(ino, ch)
    }

    /// Open a directory: its entries are listed now, for a readdir stream.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let v = self.ns.list_dir(ino)?;
        Ok(self.handles.open_dir(v))
    }

    /// The entries of a directory handle.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        self.handles.dir(fh).ok_or(FsError::BadHandle)
    }

    /// Feed the entries of a directory handle from `offset` on, each with its attributes and
    /// the offset after it, to `add` until it returns true (the reply is full). The one loop
    /// behind `readdir` and `readdirplus`; entries whose inode went away since `opendir` are
    /// skipped. With `plus` (readdirplus: the kernel gets a reference to each entry it is
    /// handed, but `.` and `..`), every entry added counts as a kernel reference.
    pub fn readdir_from(&self, fh: u64, offset: u64, plus: bool, mut add: impl FnMut(u64, &DirEntry, &Attr) -> bool) -> FsResult<()> {
        let entries = self.readdir(fh)?;
        let t = self.read_tree();
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let Ok(rec) = t.get(e.ino) else { continue };
            if add(i as u64 + 1, e, &live_attr(&t, rec)) {
                break;
            }
            if plus && e.name != b"." && e.name != b".." {
                t.lookups.add(e.ino);
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

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
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
        let mut inval = Vec::new();
        for v in &victims {
            match self.evict(v.parent, &v.name) {
                Ok(()) => {
                    *removed.entry(v.ns).or_default() += 1;
                    inval.push(crate::fs::Inval::Entry(v.parent, v.name.clone()));
                }
                // renamed or removed meanwhile: the next pass sees what is left
                Err(e) => tracing::debug!(ns = v.ns, error = %e, "budget eviction skipped a name"),
            }
        }
        // the kernel's cached entries of the removed names go too (one thread for them all)
        self.invalidate_later(inval);
        for (ns, n) in &removed {
            let namespace = self.namespace_name(*ns);
            tracing::info!(ns, namespace, removed = n, "namespace over its budget: least recently used files removed");
            crate::metrics::get().budget_removals.get_or_create(&crate::metrics::NamespaceLabel { namespace }).inc_by(*n as u64);
        }
        removed.values().sum()
    }

    /// Flush everything: [`FsCore::settle`], then [`FsCore::close`].
    pub fn shutdown(&self, upload_timeout: std::time::Duration) -> FsResult<()> {
        self.settle(upload_timeout);
        self.close()
    }

    /// The first half of a shutdown, while the publisher still runs: seal open dirty files,
    /// drain uploads, wait for the changes to be published and write a tree snapshot.
    pub fn settle(&self, upload_timeout: std::time::Duration) {
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
    }

    /// The second half, once nothing else works on the tree: close foyer, checkpoint and
    /// close the index, save the flat tier's order.
    pub fn close(&self) -> FsResult<()> {
        if let Some(f) = self.store.foyer() {
            self.store.block_on(f.close());
        }
        self.close_index()?;
        // the next mount reads the flat tier's order from one file instead of stat-ing every blob
        if let Err(e) = self.store.flat().save_recency() {
            tracing::warn!(error = %e, "the next mount will scan the flat tier");
        }
        Ok(())
    }
}
