//! Putting the core on a mountpoint: the fuser session, its mount options, and the kernel-cache
//! invalidation other nodes' changes need. With [`fuse`](crate::fs::fuse), the only place
//! `fuser` appears.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::fs::core::FsCore;
use crate::fs::fuse::WombatFuse;
use crate::fs::passthrough::Passthrough;
use crate::fs::uring::serve::{Acl, Server};
use crate::fs::uring::Negotiated;

/// How to mount.
pub struct MountSpec<'a> {
    /// where
    pub mountpoint: &'a Path,
    /// the source shown in the mount table (`wombatfs:<cache dir>`)
    pub fsname: String,
    /// `-o` style options (`allow_other`, `ro`, `noatime`, …; others are passed on)
    pub options: &'a [String],
    /// FUSE worker threads
    pub threads: usize,
    /// the kernel's entry/attribute cache lifetime
    pub attr_ttl: Duration,
    /// with a remote object store: the runtime whose blocking pool runs requests that may wait
    /// on the network (see [`WombatFuse::new`])
    pub offload: Option<tokio::runtime::Handle>,
    /// what FUSE passthrough serves where the kernel allows it
    pub passthrough: crate::fs::passthrough::PassthroughMode,
    /// serve requests from io_uring queues where the kernel allows it ([`crate::fs::uring`])
    pub uring: bool,
}

/// A live mount, served by fuser's worker threads until it is unmounted.
pub struct Mounted {
    session: fuser::BackgroundSession,
}

impl Mounted {
    /// Whether the session ended (the filesystem was unmounted).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Wait for the session's end.
    pub fn join(self) -> std::io::Result<()> {
        self.session.join()
    }
}

/// Mount `core` and serve it on fuser's threads; installs the core's kernel-cache invalidator.
pub fn mount(core: Arc<FsCore>, spec: &MountSpec) -> std::io::Result<Mounted> {
    let notifier = Arc::new(OnceLock::new());
    let passthrough = Arc::new(Passthrough::new(spec.passthrough));
    let negotiated = spec.uring.then(|| Arc::new(Negotiated::default()));
    let fs = WombatFuse::new(core.clone(), spec.attr_ttl, notifier.clone(), spec.offload.clone(), passthrough.clone(), negotiated.clone());
    let session = fuser::Session::new(fs, spec.mountpoint, &config(spec))?;
    // the notifier exists only once the session does; the adapter and the core read it
    // through the same cell, set exactly once here
    let _ = notifier.set(session.notifier());
    core.set_invalidator(std::sync::Arc::new(crate::fs::fuse::invalidator(notifier.clone())));
    let dev = match negotiated {
        Some(_) => Some(Arc::new(std::os::fd::AsFd::as_fd(&session).try_clone_to_owned()?)),
        None => None,
    };
    let mounted = Mounted { session: session.spawn()? };
    if let (Some(negotiated), Some(dev)) = (negotiated, dev) {
        // SAFETY: geteuid cannot fail.
        let owner = unsafe { libc::geteuid() };
        start_uring(&negotiated, Server { core, ttl: spec.attr_ttl, notifier, offload: spec.offload.clone(), passthrough, dev, acl: acl(spec), owner });
    } else {
        tracing::info!("fuse transport: /dev/fuse");
    }
    Ok(mounted)
}

/// Serve the mount from io_uring queues if the kernel accepted them at `FUSE_INIT`; logs
/// once which transport the mount runs on.
fn start_uring(negotiated: &Negotiated, server: Server) {
    let server = Arc::new(server);
    match negotiated.wait(Duration::from_secs(10)) {
        Some(true) => match crate::fs::uring::start(server.clone(), crate::fs::fuse::MAX_WRITE as usize) {
            Ok(()) => tracing::info!(queues = crate::fs::uring::queues(), depth = crate::fs::uring::DEPTH, "fuse transport: io_uring"),
            Err(e) => {
                // the kernel switches to the rings only once every queue has registered
                server.passthrough.set_dev_only(false);
                tracing::warn!(error = %e, "fuse transport: /dev/fuse (the io_uring queues could not start)");
            }
        },
        Some(false) => tracing::info!("fuse transport: /dev/fuse (the kernel does not offer FUSE over io_uring: Linux >= 6.14 with `echo Y > /sys/module/fuse/parameters/enable_uring`)"),
        None => tracing::warn!("fuse transport: /dev/fuse (no FUSE_INIT within 10 s)"),
    }
}

fn acl(spec: &MountSpec) -> Acl {
    if spec.options.iter().any(|o| o == "allow_other") {
        Acl::All
    } else if spec.options.iter().any(|o| o == "allow_root") {
        Acl::RootAndOwner
    } else {
        Acl::Owner
    }
}

fn config(spec: &MountSpec) -> fuser::Config {
    use fuser::MountOption as M;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![M::FSName(spec.fsname.clone()), M::Subtype("wombatfs".into()), M::DefaultPermissions, M::NoSuid, M::NoDev];
    for o in spec.options {
        match o.as_str() {
            "allow_other" => cfg.acl = fuser::SessionACL::All,
            "allow_root" => cfg.acl = fuser::SessionACL::RootAndOwner,
            "ro" => cfg.mount_options.push(M::RO),
            "rw" => cfg.mount_options.push(M::RW),
            "noexec" => cfg.mount_options.push(M::NoExec),
            "exec" => cfg.mount_options.push(M::Exec),
            "noatime" => cfg.mount_options.push(M::NoAtime),
            "default_permissions" | "nosuid" | "nodev" => {}
            other => cfg.mount_options.push(M::CUSTOM(other.to_string())),
        }
    }
    cfg.n_threads = Some(spec.threads);
    cfg.clone_fd = true;
    cfg
}
