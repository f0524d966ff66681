//! Running a mount: preflight checks, daemonizing, building the layers, serving until an
//! unmount or a signal, and a clean shutdown.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::{Settings, StoreUrl};
use crate::fs::core::{CoreOptions, FsCore};
use crate::index::Index;
use crate::store::{BlobStore, StoreOptions};
use crate::tiers::local::LocalStore;
use crate::tiers::s3::{S3Config, S3Store};
use crate::tiers::ObjectStore;

/// Mount and serve until unmounted. Without `foreground`, returns in the parent once the mount
/// is live (or fails with the child's error).
pub fn mount(s: Settings, log: &str) -> Result<()> {
    preflight(&s)?;
    let lock = lock_cache_dir(&s.cache_dir)?;
    if s.foreground {
        init_logging(log, None);
        return serve(&s, None, lock);
    }
    let (rfd, wfd) = pipe()?;
    // SAFETY: no threads exist yet (no runtime, no logging thread), so fork is sound.
    match unsafe { libc::fork() } {
        -1 => bail!("fork failed: {}", std::io::Error::last_os_error()),
        0 => {
            drop(rfd);
            // SAFETY: setsid in the freshly forked child has no preconditions.
            unsafe { libc::setsid() };
            redirect_stdio();
            let log_file = OpenOptions::new().create(true).append(true).open(s.cache_dir.join("wombatfs.log")).ok();
            init_logging(log, log_file);
            let mut report = wfd;
            let res = serve(&s, Some(&mut report), lock);
            if let Err(e) = &res {
                tracing::error!(error = %format!("{e:#}"), "wombatfs stopped");
                let _ = report.write_all(format!("{e:#}").as_bytes());
            }
            std::process::exit(if res.is_ok() { 0 } else { 1 });
        }
        _child => {
            drop(wfd);
            // the child writes "OK" once the mount is live (and keeps the pipe open), or its
            // error and exits
            let mut msg = Vec::new();
            let mut rfd = rfd;
            let mut buf = [0u8; 4096];
            while !msg.starts_with(b"OK") {
                match rfd.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => msg.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let msg = String::from_utf8_lossy(&msg).into_owned();
            match msg.strip_prefix("OK") {
                Some(_) => Ok(()),
                None if msg.is_empty() => bail!("the daemon exited during startup; see {}", s.cache_dir.join("wombatfs.log").display()),
                None => Err(anyhow!(msg)),
            }
        }
    }
}

fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned only here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn redirect_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn init_logging(filter: &str, file: Option<File>) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file {
        Some(f) => builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Checks that need no daemon: the mountpoint, /dev/fuse, stale mounts, the cache dir.
fn preflight(s: &Settings) -> Result<()> {
    let mp = &s.mountpoint;
    if let Some(fstype) = fuse_mount_at(mp) {
        match std::fs::metadata(mp) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                eprintln_stale(mp);
                detach(mp)?;
            }
            _ => bail!("{} is already mounted ({fstype}); unmount it first", mp.display()),
        }
    }
    let md = std::fs::metadata(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !md.is_dir() {
        bail!("mountpoint {} is not a directory", mp.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or pass the device to the container");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&s.cache_dir)
        .with_context(|| format!("cannot create cache dir {}", s.cache_dir.display()))?;
    let probe = s.cache_dir.join(".write-probe");
    std::fs::write(&probe, b"").with_context(|| format!("cache dir {} is not writable", s.cache_dir.display()))?;
    let _ = std::fs::remove_file(probe);
    let _ = std::fs::set_permissions(&s.cache_dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

fn eprintln_stale(mp: &Path) {
    // logging is not initialised yet; this goes to the terminal of whoever mounts
    let _ = writeln!(std::io::stderr(), "wombatfs: clearing a stale mount at {} (its daemon died)", mp.display());
}

/// The fstype of a FUSE mount at `mp`, if any.
fn fuse_mount_at(mp: &Path) -> Option<String> {
    let want = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
    crate::sys::mounts().into_iter().find(|m| m.point == want && m.fstype.starts_with("fuse")).map(|m| m.fstype)
}

/// Lazily detach whatever is mounted at `mp`.
fn detach(mp: &Path) -> Result<()> {
    let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes())?;
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let st = std::process::Command::new("fusermount3").arg("-uz").arg(mp).status();
    match st {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("cannot unmount {}: {}", mp.display(), std::io::Error::last_os_error()),
    }
}

/// Take the cache dir's exclusive lock, naming the holder when it is taken.
fn lock_cache_dir(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        bail!("cache dir {} is in use by another wombatfs (pid {})", dir.display(), holder.trim());
    }
    Ok(f)
}

fn write_pid(lock: &mut File) {
    let _ = lock.set_len(0);
    let _ = std::os::unix::fs::FileExt::write_all_at(lock, std::process::id().to_string().as_bytes(), 0);
}

/// Open the blob store: the flat tier with its bound and, with a remote store, the foyer tier
/// (RAM + SSD) between the flat tier and the object store. With the local store, blobs already
/// sit on local disk in the store, so foyer would only hold them a second time.
fn open_store(s: &Settings, objects: &Arc<dyn ObjectStore>, rt: &tokio::runtime::Runtime) -> Result<Arc<BlobStore>> {
    let t = &s.tiers;
    let cap = |p: &Path| crate::sys::capacity(p).unwrap_or(0);
    let flat = t.flat_size.unwrap_or_else(|| (cap(&s.cache_dir) / 10 * 4).clamp(256 << 20, 16 << 30));
    let mut opts = StoreOptions { sync_uploads: s.sync_uploads, foyer: None };
    let mut foyer = (0, 0);
    if !objects.is_local() {
        let mem = t.foyer_memory.unwrap_or(64 << 20);
        let disk = t.foyer_disk.unwrap_or_else(|| (cap(&t.foyer_dir) / 5).clamp(64 << 20, 8 << 30));
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

fn serve(s: &Settings, report: Option<&mut File>, mut lock: File) -> Result<()> {
    write_pid(&mut lock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wombatfs-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let objects: Arc<dyn ObjectStore> = match &s.store {
        StoreUrl::Local(dir) => Arc::new(LocalStore::open(dir, s.compression)?),
        StoreUrl::S3 { bucket, prefix } => {
            let cfg = S3Config { bucket: bucket.clone(), prefix: prefix.clone(), ..s.s3.clone() };
            Arc::new(S3Store::new(&cfg)?)
        }
    };
    rt.block_on(objects.check()).with_context(|| format!("object store {} is not usable", objects.describe()))?;
    let store = open_store(s, &objects, &rt)?;
    let (index, mut snapshot) = Index::open(&s.cache_dir.join("index"), rt.handle())?;
    if snapshot.is_empty() && !objects.is_local() {
        // an empty cache dir on an existing bucket: rebuild the tree from its newest snapshot
        // (the journals after it are applied by the first poll, before the mount goes live)
        tracing::info!(store = %objects.describe(), "empty cache dir: looking for a tree snapshot in the object store");
        snapshot = rt.block_on(crate::sync::snapshot::restore(objects.as_ref(), &index))?;
    }
    let opts = CoreOptions { max_file_size: s.max_file_size, budgets: s.tiers.budgets.clone(), ..CoreOptions::default() };
    let core = Arc::new(FsCore::load(&s.cache_dir, store, index, snapshot, opts)?);
    if !objects.is_local() && !s.poll_interval.is_zero() {
        // catch up with the other nodes before serving
        match rt.block_on(core.poll_once()) {
            Ok(n) => tracing::info!(changes = n, "caught up with the other nodes' change journals"),
            Err(e) => tracing::warn!(error = %e, "could not read the other nodes' change journals yet; will keep trying"),
        }
    }
    // a remote store: slow operations leave the FUSE workers (see WombatFuse::new)
    let offload = matches!(s.store, StoreUrl::S3 { .. }).then(|| rt.handle().clone());
    let spec = crate::fs::mount::MountSpec {
        mountpoint: &s.mountpoint,
        fsname: format!("wombatfs:{}", s.cache_dir.display()),
        options: &s.mount_options,
        threads: s.threads,
        attr_ttl: s.attr_ttl,
        offload,
    };
    let bg = crate::fs::mount::mount(core.clone(), &spec).with_context(|| format!("cannot mount on {}", s.mountpoint.display()))?;
    set_readahead(&s.mountpoint, s.readahead_kb);
    tracing::info!(mountpoint = %s.mountpoint.display(), cache = %s.cache_dir.display(), store = %objects.describe(), "mounted");
    if let Some(r) = report {
        let _ = r.write_all(b"OK");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        stop2.store(true, Ordering::SeqCst);
    });
    let snapshots = spawn_snapshotter(s, &core, &objects);
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
        rt.spawn(core.clone().publish_loop(publishing.clone()));
        if !s.poll_interval.is_zero() {
            rt.spawn(core.clone().poll_loop(s.poll_interval, following.clone()));
        }
    }
    let mut unmount_sent = false;
    while !bg.is_finished() {
        if stop.load(Ordering::SeqCst) && !unmount_sent {
            tracing::info!("signal received; unmounting");
            if let Err(e) = detach(&s.mountpoint) {
                tracing::error!(error = %e, "unmount failed");
            }
            unmount_sent = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(e) = bg.join() {
        tracing::warn!(error = %e, "FUSE session ended with an error");
    }
    if let Some((stop, handle)) = snapshots {
        stop.store(true, Ordering::SeqCst);
        let _ = handle.join();
    }
    following.store(true, Ordering::SeqCst);
    tracing::info!("unmounted; flushing");
    core.shutdown(Duration::from_secs(30))?;
    publishing.store(true, Ordering::SeqCst);
    tracing::info!("clean shutdown");
    drop(lock);
    Ok(())
}

/// `wombatfs gc`: collect unreferenced blobs of a shared bucket (see [`crate::sync::gc`]).
pub fn gc(args: &crate::cli::GcArgs, log: &str) -> Result<()> {
    init_logging(log, None);
    let StoreUrl::S3 { bucket, prefix } = StoreUrl::parse(&args.store)? else {
        anyhow::bail!("gc works on a shared s3:// bucket; a local store's node deletes unreferenced blobs itself");
    };
    let cfg = S3Config { bucket, prefix, ..args.s3.config(crate::codec::Compression::Auto(3)) };
    let objects = S3Store::new(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(objects.check()).with_context(|| format!("object store {} is not usable", objects.describe()))?;
    let r = rt.block_on(crate::sync::gc::collect(&objects, Duration::from_secs(args.grace), args.dry_run))?;
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    println!(
        "{} nodes, {} blobs, {} referenced, {} unreferenced within the {} s grace period, {verb} {}; {verb} {} journal batches covered by every snapshot",
        r.nodes, r.blobs, r.referenced, r.waiting, args.grace, r.deleted.len(), r.journal_batches_deleted
    );
    for id in &r.deleted {
        tracing::info!(%id, "{verb}");
    }
    Ok(())
}
