//! Running a mount: preflight checks, daemonizing, building the layers, serving until an
//! unmount or a signal, and a clean shutdown; and the `gc` command.

pub mod metrics_http;
pub mod node;
mod preflight;
mod serve;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::{Settings, StoreUrl};
use crate::tiers::s3::{S3Config, S3Store};
use crate::tiers::ObjectStore;
use preflight::{lock_cache_dir, preflight};
use serve::serve;

/// Mount and serve until unmounted. Without `foreground`, returns in the parent once the mount
/// is live (or fails with the child's error).
pub fn mount(s: Settings, log: &LogSpec) -> Result<()> {
    crate::sys::bound_allocator();
    preflight(&s)?;
    let lock = lock_cache_dir(&s.cache_dir)?;
    let metrics = s.metrics_addr.map(metrics_http::bind).transpose()?;
    if s.foreground {
        init_logging(log, None);
        return serve(&s, None, lock, metrics);
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
            let res = serve(&s, Some(&mut report), lock, metrics);
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

/// A node without a mount (the library, [`crate::kv::Kv`]): the cache dir made and locked,
/// the layers open, the background work running.
pub fn open_node(s: &Settings) -> Result<node::Node> {
    preflight::make_cache_dir(&s.cache_dir)?;
    let lock = lock_cache_dir(&s.cache_dir)?;
    node::Node::start(s, lock)
}

/// Whether `s.mountpoint` is already served by a live daemon of `s.cache_dir`: `mount -a`
/// calls the helper again for an fstab line that is mounted (the mount table's source is
/// `wombatfs:<cache-dir>`, not the line's), and that call succeeds without a second mount.
pub fn already_serving(s: &Settings) -> bool {
    // a dead daemon's mount answers statfs with ENOTCONN; the normal mount clears it
    preflight::fuse_mount_at(&s.mountpoint).is_some_and(|m| m.source == fsname(s)) && crate::sys::space(&s.mountpoint).is_ok()
}

/// The mount's source in the mount table; `wombatfs stats` and `warm` find the cache dir in it.
fn fsname(s: &Settings) -> String {
    format!("wombatfs:{}", s.cache_dir.display())
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

/// How the daemon logs: a filter (`info`, `wombatfs=debug`) and the line format.
#[derive(Debug, Clone)]
pub struct LogSpec {
    /// an `EnvFilter` directive
    pub filter: String,
    /// one JSON object per line instead of text
    pub json: bool,
}

fn init_logging(log: &LogSpec, file: Option<File>) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // colours only for a person at a terminal, never into a redirected log
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = match file {
        Some(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = if log.json {
        // the span fields (request id, op, inode) go with each event
        builder.json().with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.with_ansi(ansi).try_init()
    };
}

/// `wombatfs gc`: collect unreferenced blobs of a shared bucket (see [`crate::sync::gc`]).
pub fn gc(args: &crate::cli::GcArgs, log: &LogSpec) -> Result<()> {
    init_logging(log, None);
    let StoreUrl::S3 { bucket, prefix } = StoreUrl::parse(&args.store)? else {
        anyhow::bail!("gc works on a shared s3:// bucket; a local store's node deletes unreferenced blobs itself");
    };
    let cfg = S3Config { bucket, prefix, ..args.s3.config(crate::codec::Compression::Auto(3), &Default::default()) };
    let objects = S3Store::new(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(objects.check()).with_context(|| format!("object store {} is not usable", objects.describe()))?;
    for node in &args.forget_nodes {
        if args.dry_run {
            anyhow::bail!("--forget-node records the node as gone at once; run it without --dry-run");
        }
        rt.block_on(crate::sync::gc::forget_node(&objects, node)).with_context(|| format!("forgetting node {node}"))?;
        println!("node {node} is recorded as gone");
    }
    let policy = crate::sync::gc::Policy { grace: Duration::from_secs(args.grace), lease: Duration::from_secs(args.node_lease), dry_run: args.dry_run };
    let r = rt.block_on(crate::sync::gc::collect(&objects, &policy))?;
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    if !r.gone.is_empty() {
        println!("gone nodes (not waited for): {}; {verb} {} of their snapshots; removed (journal applied everywhere): {}", r.gone.join(", "), r.snapshots_deleted, if r.nodes_removed.is_empty() { "none".to_string() } else { r.nodes_removed.join(", ") });
    }
    println!(
        "{} nodes, {} blobs, {} referenced, {} unreferenced within the {} s grace period, {verb} {}; {verb} {} journal batches covered by every snapshot and {} expired change-feed markers",
        r.nodes, r.blobs, r.referenced, r.waiting, args.grace, r.deleted.len(), r.journal_batches_deleted, r.feed_markers_deleted
    );
    for id in &r.deleted {
        tracing::info!(%id, "{verb}");
    }
    Ok(())
}
