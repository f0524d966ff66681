//! Serving a mount: the layers built bottom up, the background work, the wait for the
//! unmount (or a signal) and the clean shutdown.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::preflight::{detach, write_pid};
use crate::config::{defaults, Settings, StoreUrl};
use crate::fs::core::{CoreOptions, FsCore};
use crate::index::Index;
use crate::store::{BlobStore, StoreOptions};
use crate::tiers::local::LocalStore;
use crate::tiers::s3::{S3Config, S3Store};
use crate::tiers::ObjectStore;

/// Serve the mount until it is unmounted; `report` hears "OK" once it is live.
pub(super) fn serve(s: &Settings, report: Option<&mut File>, mut lock: File, metrics: Option<std::net::TcpListener>) -> Result<()> {
    write_pid(&mut lock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wombatfs-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (core, objects) = open_layers(s, &rt)?;
    if let Some(l) = metrics {
        super::metrics_http::serve(&rt, l, core.clone())?;
    }
    // a remote store: slow operations leave the FUSE workers (see WombatFuse::new)
    let offload = matches!(s.store, StoreUrl::S3 { .. }).then(|| rt.handle().clone());
    let spec = crate::fs::mount::MountSpec {
        mountpoint: &s.mountpoint,
        fsname: super::fsname(s),
        options: &s.mount_options,
        threads: s.threads,
        attr_ttl: s.attr_ttl,
        offload,
        passthrough: s.passthrough,
    };
    let session = crate::fs::mount::mount(core.clone(), &spec).with_context(|| format!("cannot mount on {}", s.mountpoint.display()))?;
    set_readahead(&s.mountpoint, s.readahead_kb);
    tracing::info!(mountpoint = %s.mountpoint.display(), cache = %s.cache_dir.display(), store = %objects.describe(), "mounted");
    if let Some(r) = report {
        let _ = r.write_all(b"OK");
    }
    let mut bg = Background::start(s, &rt, &core, &objects);
    wait_for_unmount(&session, &bg.signalled, &s.mountpoint);
    if let Err(e) = session.join() {
        tracing::warn!(error = %e, "FUSE session ended with an error");
    }
    bg.stop_following();
    tracing::info!("unmounted; flushing");
    core.shutdown(Duration::from_secs(30))?;
    bg.stop_publishing();
    let _ = std::fs::remove_file(super::metrics_http::addr_file(&s.cache_dir));
    tracing::info!("clean shutdown");
    drop(lock);
    Ok(())
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
    let store = open_store(s, &objects, rt)?;
    let (index, mut records) = Index::open(&s.cache_dir.join("index"), rt.handle())?;
    if records.is_empty() && !objects.is_local() {
        // an empty cache dir on an existing bucket: rebuild the tree from its newest snapshot
        // (the journals after it are applied by the first poll, before the mount goes live)
        tracing::info!(store = %objects.describe(), "empty cache dir: looking for a tree snapshot in the object store");
        records = rt.block_on(crate::sync::snapshot::restore(objects.as_ref(), &index))?;
    }
    let opts = CoreOptions { max_file_size: s.max_file_size, budgets: s.tiers.budgets.clone(), ..CoreOptions::default() };
    let core = Arc::new(FsCore::load(&s.cache_dir, store, index, records, opts)?);
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

/// Raise the kernel's readahead for this mount (FUSE starts at 128 KiB): sequential reads then
/// arrive as 1 MiB requests, several in flight, which is what lets a cold read keep up with
/// the download. Needs root (sysfs); without it the kernel default stays, which is only slower.
fn set_readahead(mountpoint: &Path, kb: u32) {
    if kb == 0 {
        return;
    }
    // the newest mount on the path is last
    let Some(dev) = crate::sys::mounts().into_iter().filter(|m| m.point == mountpoint).map(|m| m.dev).next_back() else { return };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, kb.to_string()) {
        Ok(()) => tracing::debug!(%path, kb, "readahead raised"),
        Err(e) => tracing::debug!(%path, error = %e, "cannot raise the readahead; keeping the kernel default"),
    }
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
    /// SIGINT or SIGTERM arrived
    signalled: Arc<AtomicBool>,
    snapshots: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    following: Arc<AtomicBool>,
    publishing: Arc<AtomicBool>,
}

impl Background {
    fn start(s: &Settings, rt: &tokio::runtime::Runtime, core: &Arc<FsCore>, objects: &Arc<dyn ObjectStore>) -> Self {
        let signalled = Arc::new(AtomicBool::new(false));
        let flag = signalled.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            flag.store(true, Ordering::SeqCst);
        });
        let snapshots = spawn_snapshotter(s, core, objects);
        let (following, publishing) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        {
            // every second: namespace budgets (also enforced at once when one is set), and the
            // flat tier's bound (blobs become evictable when their upload completes)
            let (core, stop) = (core.clone(), following.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let c = core.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        c.enforce_budgets();
                        c.store().maybe_evict();
                    })
                    .await;
                }
            });
        }
        if !objects.is_local() {
            rt.spawn(core.namespace().clone().publish_loop(publishing.clone()));
            if !s.poll_interval.is_zero() {
                rt.spawn(core.namespace().clone().poll_loop(s.poll_interval, following.clone()));
            }
        }
        Background { signalled, snapshots, following, publishing }
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

    /// After the shutdown flushed: the publisher ends too.
    fn stop_publishing(self) {
        self.publishing.store(true, Ordering::SeqCst);
    }
}

/// Block until the session ends; a signal unmounts (once).
fn wait_for_unmount(session: &crate::fs::mount::Mounted, signalled: &AtomicBool, mountpoint: &Path) {
    let mut unmount_sent = false;
    while !session.is_finished() {
        if signalled.load(Ordering::SeqCst) && !unmount_sent {
            tracing::info!("signal received; unmounting");
            if let Err(e) = detach(mountpoint) {
                tracing::error!(error = %e, "unmount failed");
            }
            unmount_sent = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
