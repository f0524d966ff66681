//! A running node without FUSE: the layers built bottom up (object store, tiers, index, core)
//! and the work a node does beside answering requests (publishing its changes, following the
//! other nodes, snapshots, budgets and the flat bound). A mount ([`super::serve`]) and the
//! embedded key-value API ([`crate::kv`]) are both one of these.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::preflight::write_pid;
use crate::config::{defaults, Settings, StoreUrl};
use crate::fs::core::{CoreOptions, FsCore};
use crate::index::Index;
use crate::store::{BlobStore, StoreOptions};
use crate::tiers::local::LocalStore;
use crate::tiers::s3::{S3Config, S3Store};
use crate::tiers::ObjectStore;

/// One node on a cache dir (holding its lock) and an object store.
pub struct Node {
    rt: tokio::runtime::Runtime,
    core: Arc<FsCore>,
    objects: Arc<dyn ObjectStore>,
    bg: Background,
    lock: File,
}

impl Node {
    /// Open the layers on `s.cache_dir` (whose lock the caller took) and start the background
    /// work. A node with an empty cache dir on an existing bucket restores the tree first.
    pub fn start(s: &Settings, mut lock: File) -> Result<Node> {
        write_pid(&mut lock);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wombatfs-rt")
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (core, objects) = open_layers(s, &rt)?;
        let bg = Background::start(s, &rt, &core, &objects);
        Ok(Node { rt, core, objects, bg, lock })
    }

    /// The filesystem core.
    pub fn core(&self) -> &Arc<FsCore> {
        &self.core
    }

    /// The object store (metered).
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// The node's async runtime.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Stop following the other nodes, seal and drain (waiting up to 30 s for uploads), publish
    /// the last changes, stop the background tasks, checkpoint and close the index, release
    /// the cache dir. The index closes only after every task that changes the tree has ended.
    pub fn shutdown(mut self) -> Result<()> {
        self.bg.stop_following();
        self.core.settle(Duration::from_secs(30));
        self.bg.stop(&self.rt);
        self.core.close()?;
        drop(self.lock);
        Ok(())
    }
}

/// Object store, blob store, index and core, bottom up; a node with an empty cache dir on an
/// existing bucket restores the tree and catches up with the other nodes first.
fn open_layers(s: &Settings, rt: &tokio::runtime::Runtime) -> Result<(Arc<FsCore>, Arc<dyn ObjectStore>)> {
    let objects: Arc<dyn ObjectStore> = match &s.store {
        StoreUrl::Local(dir) => Arc::new(LocalStore::open(dir, s.compression)?),
        StoreUrl::S3 { bucket, prefix } => {
            let cfg = S3Config { bucket: bucket.clone(), prefix: prefix.clone(), ..s.s3.clone() };
            Arc::new(S3Store::new(&cfg)?)
        }
    };
    // every call counted in /metrics
    let objects: Arc<dyn ObjectStore> = Arc::new(crate::tiers::metered::MeteredStore::new(objects));
    rt.block_on(objects.check()).with_context(|| format!("object store {} is not usable", objects.describe()))?;
    if !objects.is_local() {
        let node = crate::sync::snapshot::node_id(&s.cache_dir)?;
        if let Some(why) = rt.block_on(crate::sync::gc::gone_record(objects.as_ref(), &node))? {
            anyhow::bail!(
                "this cache dir belongs to node {node}, which the bucket's collector recorded as gone ({why}), so the bucket may no longer hold what its tree names. \
                 Move {} away and mount with an empty cache dir: every file the other nodes saw comes back from the bucket (changes this node never published are only in the old dir)",
                s.cache_dir.display()
            );
        }
    }
    // the tiers and the index are independent until the tree is built: opened side by side
    let (store, opened) = std::thread::scope(|scope| {
        let tiers = scope.spawn(|| {
            let t0 = std::time::Instant::now();
            let store = open_store(s, &objects, rt)?;
            tracing::info!(blobs = store.flat().len(), secs = t0.elapsed().as_secs_f64(), "flat tier opened");
            Ok::<_, anyhow::Error>(store)
        });
        let t0 = std::time::Instant::now();
        let opened = Index::open(&s.cache_dir.join("index"), rt.handle());
        if let Ok((_, records)) = &opened {
            tracing::info!(records = records.len(), secs = t0.elapsed().as_secs_f64(), "index opened");
        }
        (tiers.join().unwrap_or_else(|_| Err(anyhow::anyhow!("opening the local tiers panicked"))), opened)
    });
    let store = store?;
    let (index, mut records) = opened?;
    if records.is_empty() && !objects.is_local() {
        // an empty cache dir on an existing bucket: rebuild the tree from its newest snapshot
        // (the journals after it are applied by the first poll, before the mount goes live)
        tracing::info!(store = %objects.describe(), "empty cache dir: looking for a tree snapshot in the object store");
        records = rt.block_on(crate::sync::snapshot::restore(objects.as_ref(), &index))?;
    }
    let opts = CoreOptions { max_file_size: s.max_file_size, budgets: s.tiers.budgets.clone(), ..CoreOptions::default() };
    let t0 = std::time::Instant::now();
    let core = Arc::new(FsCore::load(&s.cache_dir, store, index, records, opts)?);
    crate::sys::trim_heap();
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "tree loaded");
    if !objects.is_local() && !s.poll_interval.is_zero() {
        // catch up with the other nodes before serving
        match rt.block_on(core.poll_once()) {
            Ok(n) => tracing::info!(changes = n, "caught up with the other nodes' change journals"),
            Err(e) => tracing::warn!(error = %e, "could not read the other nodes' change journals yet; will keep trying"),
        }
    }
    Ok((core, objects))
}

/// Open the blob store: the flat tier with its bound and, with a remote store, the foyer tier
/// (RAM + SSD) between the flat tier and the object store. With the local store, blobs already
/// sit on local disk in the store, so foyer would only hold them a second time.
fn open_store(s: &Settings, objects: &Arc<dyn ObjectStore>, rt: &tokio::runtime::Runtime) -> Result<Arc<BlobStore>> {
    let t = &s.tiers;
    let cap = |p: &Path| crate::sys::capacity(p).unwrap_or(0);
    let flat = t.flat_size.unwrap_or_else(|| defaults::flat_size(cap(&s.cache_dir)));
    let mut opts = StoreOptions { sync_uploads: s.sync_uploads, foyer: None, store_timeout: Some(s.store_timeout) };
    let mut foyer = (0, 0);
    if !objects.is_local() {
        let mem = t.foyer_memory.unwrap_or(defaults::FOYER_MEMORY);
        let disk = t.foyer_disk.unwrap_or_else(|| defaults::foyer_disk(cap(&t.foyer_dir)));
        let f = rt.block_on(crate::tiers::foyer::FoyerTier::open(&t.foyer_dir, mem, disk)).context("cannot open the foyer cache")?;
        opts.foyer = Some(Arc::new(f));
        foyer = (mem, disk);
    }
    let store = Arc::new(BlobStore::open_with(&s.cache_dir, objects.clone(), rt.handle(), opts)?);
    store.flat().set_limit(flat);
    tracing::info!(flat_size = flat, foyer_memory = foyer.0, foyer_disk = foyer.1, "local tier bounds");
    store.maybe_evict();
    Ok(store)
}

/// With a remote store and a non-zero interval: a thread that snapshots the tree into the
/// store whenever it changed and every upload is durable.
fn spawn_snapshotter(s: &Settings, core: &Arc<FsCore>, objects: &Arc<dyn ObjectStore>) -> Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    if objects.is_local() || s.snapshot_interval.is_zero() {
        return None;
    }
    let node = core.node_id();
    let (stop, core, every) = (Arc::new(AtomicBool::new(false)), core.clone(), s.snapshot_interval);
    let stop2 = stop.clone();
    let handle = std::thread::Builder::new()
        .name("wombatfs-snapshot".into())
        .spawn(move || {
            let mut last = 0u64;
            let mut next = std::time::Instant::now() + every;
            while !stop2.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if std::time::Instant::now() < next {
                    continue;
                }
                next = std::time::Instant::now() + every;
                match core.snapshot_if_changed(&node, last) {
                    Ok(Some(changes)) => {
                        last = changes;
                        tracing::info!(changes, "tree snapshot written to the object store");
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "periodic tree snapshot failed; will retry"),
                }
            }
        })
        .ok()?;
    Some((stop, handle))
}

/// The work a mount does beside answering requests, and how to stop it.
struct Background {
    snapshots: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    following: Arc<AtomicBool>,
    publishing: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn start(s: &Settings, rt: &tokio::runtime::Runtime, core: &Arc<FsCore>, objects: &Arc<dyn ObjectStore>) -> Self {
        let snapshots = spawn_snapshotter(s, core, objects);
        let (following, publishing) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let mut tasks = Vec::new();
        {
            // every second: namespace budgets (also enforced at once when one is set), the flat
            // tier's bound (blobs become evictable when their upload completes), and every few
            // minutes its recency hint (what an open after a crash starts from)
            let (core, stop) = (core.clone(), following.clone());
            tasks.push(rt.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let c = core.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        c.enforce_budgets();
                        c.store().maybe_evict();
                        if let Err(e) = c.store().flat().save_hint_if_due() {
                            tracing::warn!(error = %e, "could not write the flat tier's recency hint; a crash would scan the tier");
                        }
                    })
                    .await;
                }
            }));
        }
        if !objects.is_local() {
            tasks.push(rt.spawn(core.namespace().clone().publish_loop(publishing.clone())));
            if !s.poll_interval.is_zero() {
                tasks.push(rt.spawn(core.namespace().clone().poll_loop(s.poll_interval, s.poll_idle_max, following.clone())));
            }
        }
        Background { snapshots, following, publishing, tasks }
    }

    /// After the unmount: no more periodic snapshots (the shutdown writes the last one),
    /// polls, budget or bound passes.
    fn stop_following(&mut self) {
        if let Some((stop, handle)) = self.snapshots.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
        self.following.store(true, Ordering::SeqCst);
    }

    /// After the shutdown flushed: the publisher ends too, and the shutdown waits (up to 2 s:
    /// a task stuck on an unreachable bucket is not waited for; nothing it commits later can
    /// spoil the index checkpoint, whose close drops it then) for every task to end, so
    /// normally nothing changes the tree while the index closes.
    fn stop(&mut self, rt: &tokio::runtime::Runtime) {
        self.following.store(true, Ordering::SeqCst);
        self.publishing.store(true, Ordering::SeqCst);
        let tasks = std::mem::take(&mut self.tasks);
        // (the timer is made inside the runtime: it needs its clock)
        let ended = rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(tasks)).await });
        if ended.is_err() {
            tracing::warn!("background tasks still running after 2 s; closing the index anyway");
        }
    }
}

