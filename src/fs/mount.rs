//! Putting the core on a mountpoint: the fuser session, its mount options, and the kernel-cache
//! invalidation other nodes' changes need. With [`fuse`](crate::fs::fuse), the only place
//! `fuser` appears.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::fs::core::FsCore;
use crate::fs::fuse::WombatFuse;

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
    let fs = WombatFuse::new(core.clone(), spec.attr_ttl, notifier.clone(), spec.offload.clone(), spec.passthrough);
    let session = fuser::Session::new(fs, spec.mountpoint, &config(spec))?;
    // the notifier exists only once the session does; the adapter and the core read it
    // through the same cell, set exactly once here
    let _ = notifier.set(session.notifier());
    core.set_invalidator(std::sync::Arc::new(crate::fs::fuse::invalidator(notifier)));
    Ok(Mounted { session: session.spawn()? })
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
