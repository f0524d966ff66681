//! Serving a mount: the layers built bottom up, the background work, the wait for the
//! unmount (or a signal) and the clean shutdown.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::node::Node;
use super::preflight::detach;
use crate::config::{Settings, StoreUrl};

/// Serve the mount until it is unmounted; `report` hears "OK" once it is live.
pub(super) fn serve(s: &Settings, report: Option<&mut File>, lock: File, metrics: Option<std::net::TcpListener>) -> Result<()> {
    let node = Node::start(s, lock)?;
    let (core, rt) = (node.core().clone(), node.runtime());
    if let Some(l) = metrics {
        super::metrics_http::serve(rt, l, core.clone())?;
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
        uring: s.uring,
    };
    // SIGINT and SIGTERM are caught from before the mount goes live: a signal that arrived
    // between the mount and a later registration killed the daemon and left a dead mount
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_rt = rt.enter();
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    };
    let (mut int, mut term) = (int.context("catch SIGINT")?, term.context("catch SIGTERM")?);
    let session = crate::fs::mount::mount(core.clone(), &spec).with_context(|| format!("cannot mount on {}", s.mountpoint.display()))?;
    set_readahead(&s.mountpoint, s.readahead_kb);
    tracing::info!(mountpoint = %s.mountpoint.display(), cache = %s.cache_dir.display(), store = %node.objects().describe(), "mounted");
    if let Some(r) = report {
        let _ = r.write_all(b"OK");
    }
    let signalled = Arc::new(AtomicBool::new(false));
    let flag = signalled.clone();
    rt.spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        flag.store(true, Ordering::SeqCst);
    });
    wait_for_unmount(&session, &signalled, &s.mountpoint);
    if let Err(e) = session.join() {
        tracing::warn!(error = %e, "FUSE session ended with an error");
    }
    tracing::info!("unmounted; flushing");
    node.shutdown()?;
    let _ = std::fs::remove_file(super::metrics_http::addr_file(&s.cache_dir));
    tracing::info!("clean shutdown");
    Ok(())
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
