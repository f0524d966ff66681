//! Test fixture: an `FsCore` on a temp cache dir with the local object store, driven by paths,
//! with clean remounts and simulated crashes. No kernel involved.
#![allow(dead_code)]

pub mod mount;
pub mod s3;
pub mod scrape;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wombatfs::codec::Compression;
use wombatfs::fs::core::{CoreOptions, FsCore};
use wombatfs::fs::error::FsError;
use wombatfs::fs::{Attr, Caller, Kind};
use wombatfs::index::Index;
use wombatfs::store::{BlobStore, StoreOptions};
use wombatfs::tiers::local::LocalStore;
use wombatfs::tiers::ObjectStore;

pub const ROOT: u64 = 1;
pub const CALLER: Caller = Caller { uid: 0, gid: 0 };

/// Fields drop in order: the core, then its runtime (background index work ends), then the
/// temp dir, so nothing writes into the dir after it was removed.
pub struct Fixture {
    core: Option<Arc<FsCore>>,
    rt: Option<tokio::runtime::Runtime>,
    /// a shared object store (several fixtures = several nodes); the local store otherwise
    shared: Option<Arc<dyn ObjectStore>>,
    opts: StoreOptions,
    pub dir: tempfile::TempDir,
}

pub type R<T> = Result<T, i32>;

pub fn e(err: FsError) -> i32 {
    err.errno()
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("wombat-core-").tempdir().unwrap();
        let mut f = Fixture { dir, rt: None, core: None, shared: None, opts: StoreOptions::default() };
        f.open();
        f
    }

    /// A node on its own cache dir over a shared (non-local) object store.
    pub fn node(objects: Arc<dyn ObjectStore>) -> Self {
        Self::node_with(objects, StoreOptions::default())
    }

    /// A node with store options (`--upload sync`, `--store-timeout`).
    pub fn node_with(objects: Arc<dyn ObjectStore>, opts: StoreOptions) -> Self {
        let dir = tempfile::Builder::new().prefix("wombat-node-").tempdir().unwrap();
        let mut f = Fixture { dir, rt: None, core: None, shared: Some(objects), opts };
        f.open();
        f.block_on(async { assert!(f.core().start_publishing(&Default::default()).await) });
        f
    }

    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(fut)
    }

    /// Upload what is queued, then publish this node's changes.
    pub fn publish(&self) -> usize {
        self.drain();
        self.block_on(self.core().publish_ready()).unwrap()
    }

    /// Apply the other nodes' published changes.
    pub fn poll(&self) -> usize {
        self.block_on(self.core().poll_once()).unwrap()
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn open(&mut self) -> wombatfs::index::Records {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let cache = self.cache();
        std::fs::create_dir_all(&cache).unwrap();
        let objects: Arc<dyn ObjectStore> = match &self.shared {
            Some(r) => r.clone(),
            None => Arc::new(LocalStore::open(&cache.join("objects"), Compression::Auto(1)).unwrap()),
        };
        let store = Arc::new(BlobStore::open_with(&cache, objects, rt.handle(), self.opts.clone()).unwrap());
        let (index, mut snap) = Index::open(&cache.join("index"), rt.handle()).unwrap();
        if let (true, Some(r)) = (snap.is_empty(), &self.shared) {
            snap = rt.block_on(wombatfs::sync::snapshot::restore(r.as_ref(), &index)).unwrap();
        }
        let loaded = snap.clone();
        let core = FsCore::load(&cache, store, index, snap, CoreOptions::default()).unwrap();
        self.core = Some(Arc::new(core));
        self.rt = Some(rt);
        loaded
    }

    /// After a clean shutdown that wrote an index checkpoint: what a scan of the index (a copy
    /// without the checkpoint file) reads.
    fn scan_behind_checkpoint(&self) -> Option<wombatfs::index::Records> {
        let index = self.cache().join("index");
        if !index.join("checkpoint").exists() {
            return None;
        }
        let copy = self.dir.path().join("index-scanned");
        let _ = std::fs::remove_dir_all(&copy);
        let status = std::process::Command::new("cp").arg("-a").arg(&index).arg(&copy).status().unwrap();
        assert!(status.success());
        std::fs::remove_file(copy.join("checkpoint")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (idx, records) = Index::open(&copy, rt.handle()).unwrap();
        idx.close().unwrap();
        drop(rt);
        std::fs::remove_dir_all(&copy).unwrap();
        Some(records)
    }

    pub fn core(&self) -> &FsCore {
        self.core.as_ref().unwrap()
    }

    /// The core, shared (for tasks and threads).
    pub fn core_arc(&self) -> Arc<FsCore> {
        self.core.as_ref().unwrap().clone()
    }

    /// The runtime the core's background work runs on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.as_ref().unwrap().handle().clone()
    }

    /// Clean unmount and mount again.
    /// The index checkpoint a clean shutdown writes must hold exactly what the index holds:
    /// every clean remount here compares what the mount loaded with a scan of the index.
    pub fn remount(&mut self) {
        self.core().shutdown(Duration::from_secs(10)).unwrap();
        self.core = None;
        self.rt = None;
        let scanned = self.scan_behind_checkpoint();
        assert!(scanned.is_some() || self.shared.is_some(), "a clean shutdown on the local store writes an index checkpoint");
        let mut loaded = self.open().to_pairs();
        if let Some(scanned) = scanned {
            let mut scanned = scanned.to_pairs();
            loaded.sort();
            scanned.sort();
            assert_eq!(loaded, scanned, "the index checkpoint differs from the index");
        }
    }

    /// Drop everything without any shutdown work (as kill -9 would), then mount again.
    pub fn crash(&mut self) {
        self.core = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        self.open();
    }

    /// Like `crash`, with `f` run on the cache dir while nothing is running.
    pub fn crash_with(&mut self, f: impl FnOnce(&std::path::Path)) {
        self.core = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        f(&self.cache());
        self.open();
    }

    /// Wait until queued uploads are done.
    pub fn drain(&self) {
        assert!(self.core().store().drain(Duration::from_secs(10)));
    }

    pub fn resolve(&self, path: &str) -> R<u64> {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.core().lookup(ino, part.as_bytes()).map_err(e)?.ok_or(libc::ENOENT)?.ino;
        }
        Ok(ino)
    }

    pub fn split<'a>(&self, path: &'a str) -> R<(u64, &'a str)> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Ok((self.resolve(dir)?, name))
    }

    pub fn stat(&self, path: &str) -> R<Attr> {
        self.core().getattr(self.resolve(path)?).map_err(e)
    }

    pub fn mkdir(&self, path: &str) -> R<u64> {
        let (p, n) = self.split(path)?;
        Ok(self.core().mkdir(CALLER, p, n.as_bytes(), 0o755, 0o022).map_err(e)?.ino)
    }

    pub fn mkdir_p(&self, path: &str) {
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = if cur.is_empty() { part.to_string() } else { format!("{cur}/{part}") };
            if self.resolve(&cur).is_err() {
                self.mkdir(&cur).unwrap();
            }
        }
    }

    /// Open (creating if needed) for writing; returns the handle.
    pub fn open_write(&self, path: &str, trunc: bool) -> R<u64> {
        let flags = libc::O_RDWR | if trunc { libc::O_TRUNC } else { 0 };
        match self.resolve(path) {
            Ok(ino) => Ok(self.core().open(ino, flags).map_err(e)?.fh),
            Err(libc::ENOENT) => {
                let (p, n) = self.split(path)?;
                Ok(self.core().create(CALLER, p, n.as_bytes(), 0o644, 0o022, flags).map_err(e)?.1.fh)
            }
            Err(x) => Err(x),
        }
    }

    pub fn close(&self, fh: u64) -> R<()> {
        let r = self.core().flush(fh).map_err(e);
        self.core().release(fh);
        r
    }

    /// create/truncate + one write + close, like `open('wb').write(data)`.
    pub fn write_file(&self, path: &str, data: &[u8]) -> R<()> {
        let fh = self.open_write(path, true)?;
        if !data.is_empty() {
            self.core().write(fh, 0, data).map_err(e)?;
        }
        self.close(fh)
    }

    pub fn pwrite(&self, path: &str, off: u64, data: &[u8]) -> R<()> {
        let fh = self.open_write(path, false)?;
        self.core().write(fh, off, data).map_err(e)?;
        self.close(fh)
    }

    pub fn read_fh(&self, fh: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let chunk = self.core().read(fh, out.len() as u64, 1 << 20).unwrap();
            if chunk.is_empty() {
                return out;
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// Like `read_file`, with a failed read as its errno.
    pub fn try_read_file(&self, path: &str) -> R<Vec<u8>> {
        let ino = self.resolve(path)?;
        let fh = self.core().open(ino, libc::O_RDONLY).map_err(e)?.fh;
        let mut out = Vec::new();
        let res = loop {
            match self.core().read(fh, out.len() as u64, 1 << 20) {
                Ok(chunk) if chunk.is_empty() => break Ok(out),
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(err) => break Err(e(err)),
            }
        };
        self.core().release(fh);
        res
    }

    pub fn read_file(&self, path: &str) -> R<Vec<u8>> {
        let ino = self.resolve(path)?;
        let fh = self.core().open(ino, libc::O_RDONLY).map_err(e)?.fh;
        let data = self.read_fh(fh);
        self.core().release(fh);
        Ok(data)
    }

    pub fn unlink(&self, path: &str) -> R<()> {
        let (p, n) = self.split(path)?;
        self.core().unlink(p, n.as_bytes()).map_err(e)
    }

    pub fn rmdir(&self, path: &str) -> R<()> {
        let (p, n) = self.split(path)?;
        self.core().rmdir(p, n.as_bytes()).map_err(e)
    }

    pub fn rename(&self, from: &str, to: &str, flags: u32) -> R<()> {
        let (p, n) = self.split(from)?;
        let (np, nn) = self.split(to)?;
        self.core().rename(p, n.as_bytes(), np, nn.as_bytes(), flags).map_err(e)
    }

    pub fn link(&self, from: &str, to: &str) -> R<()> {
        let ino = self.resolve(from)?;
        let (np, nn) = self.split(to)?;
        self.core().link(ino, np, nn.as_bytes()).map(|_| ()).map_err(e)
    }

    pub fn truncate(&self, path: &str, size: u64) -> R<()> {
        let ino = self.resolve(path)?;
        let ch = wombatfs::fs::SetAttr { size: Some(size), ..Default::default() };
        self.core().setattr(ino, ch, None).map(|_| ()).map_err(e)
    }

    pub fn list(&self, path: &str) -> R<Vec<(String, Kind)>> {
        let ino = self.resolve(path)?;
        let fh = self.core().opendir(ino).map_err(e)?;
        let entries = self.core().readdir(fh).unwrap();
        self.core().releasedir(fh);
        Ok(entries.iter().skip(2).map(|d| (String::from_utf8(d.name.clone()).unwrap(), d.kind)).collect())
    }

    /// Blob files in the flat tier (in its fan-out directories; the tier's own files, such as
    /// its recency hint, sit beside them).
    pub fn flat_count(&self) -> usize {
        let fanouts = std::fs::read_dir(self.cache().join("flat")).into_iter().flatten().flatten();
        fanouts.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| walk_files(&e.path())).sum()
    }

    /// Objects in the local store.
    pub fn object_count(&self) -> usize {
        walk_files(&self.cache().join("objects").join("blobs"))
    }
}

pub fn walk_files(p: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                n += walk_files(&e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// Incompressible bytes (the blake3 output stream of `seed`): zstd cannot shrink them, so the
/// store keeps them raw and large ones carry a proof table (envelope version 2).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

/// Compressible bytes (numbered text lines): the store keeps them zstd-compressed.
pub fn compressible_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(format!("kv block {seed} line {i:012}\n").as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// Blob sizes on both sides of every boundary of the formats: one byte, the 1 MiB proof chunk
/// (version 1 below, version 2 above), several chunks, and a raw object of exactly one 16 MiB
/// download range and one byte more.
pub fn boundary_sizes() -> Vec<usize> {
    const MIB: usize = 1 << 20;
    let one_range_raw = 16 * MIB - (wombatfs::codec::HEADER_LEN + 4 + 32 * 16);
    vec![1, 4095, MIB - 1, MIB, MIB + 1, 2 * MIB + 1, 4 * MIB, one_range_raw, one_range_raw + 1]
}

/// The test data sets: every boundary size, random and compressible.
pub fn boundary_blobs() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (i, n) in boundary_sizes().into_iter().enumerate() {
        v.push((format!("random-{n}"), random_bytes(n, i as u64)));
        v.push((format!("text-{n}"), compressible_bytes(n, i as u64)));
    }
    v
}
