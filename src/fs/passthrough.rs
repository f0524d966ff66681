//! FUSE passthrough (kernel ≥ 6.9, CAP_SYS_ADMIN): a read-only open of a sealed file whose
//! blob is in the flat tier is answered with the blob's flat file as the kernel's backing
//! file, so reads, `mmap`, readahead and the page cache are the local filesystem's own, with
//! no READ request to the daemon.
//!
//! The kernel allows one backing file per inode and, while an inode has one, fails (`EIO`)
//! any open of it that is not a passthrough open of that backing (fs/fuse/iomode.c). Per
//! inode this module counts the opens it answered in each mode and, under one lock, picks:
//! - **passthrough** for a read-only open of a sealed, non-empty inode whose blob is in the
//!   flat tier, when no other open of the inode is live (or the live ones are passthrough
//!   opens of the same blob);
//! - for any other open while passthrough opens are live (a writer, or a reader after a
//!   writer sealed a new blob): **wait** for them to close (bounded by [`WAIT`]; KV readers
//!   hold a block for milliseconds), then the normal path; if they stay open, `ETXTBSY`, as
//!   Linux answers a writer of a running executable;
//! - the **normal** path otherwise (cached or direct I/O, as without passthrough).
//!
//! The backing is dropped with the inode's last passthrough release. Without the capability,
//! on an older kernel or with `--passthrough off`, every open takes the normal path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use fuser::{BackingId, FileHandle, FopenFlags, ReplyOpen};

use crate::blob::BlobId;
use crate::fs::core::FsCore;
use crate::fs::error::FsError;
use crate::fs::Opened;

/// Why [`Passthrough::open`] did not open.
pub enum OpenError {
    /// the core refused
    Core(FsError),
    /// the inode stayed open for passthrough reading past [`WAIT`] (`ETXTBSY`)
    Busy,
}

/// The longest an open waits for an inode's passthrough readers to close.
pub const WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    Passthrough,
}

#[derive(Default)]
struct InodeIo {
    /// live opens on the normal path (cached or direct I/O)
    normal: usize,
    passthrough: usize,
    backing: Option<(BlobId, BackingId)>,
}

/// The passthrough state of a mount.
pub struct Passthrough {
    /// asked for (`--passthrough on`)
    wanted: bool,
    /// the kernel accepted it at init
    on: AtomicBool,
    /// an `open_backing` failure was logged (once)
    warned: AtomicBool,
    inodes: Mutex<HashMap<u64, InodeIo>>,
    /// signalled when an inode's last passthrough open is released
    released: Condvar,
    handles: Mutex<HashMap<u64, (u64, Mode)>>,
}

impl Passthrough {
    /// Passthrough wanted or not; it is on only once [`Passthrough::init`] says so.
    pub fn new(wanted: bool) -> Self {
        Passthrough {
            wanted,
            on: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            inodes: Default::default(),
            released: Condvar::new(),
            handles: Default::default(),
        }
    }

    /// At FUSE init: ask the kernel for passthrough; logs once which mode the mount runs in.
    pub fn init(&self, config: &mut fuser::KernelConfig) {
        let why_not = if !self.wanted {
            Some("--passthrough off")
        // SAFETY: geteuid cannot fail.
        } else if unsafe { libc::geteuid() } != 0 {
            Some("it needs CAP_SYS_ADMIN (run as root)")
        } else if config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_err() {
            Some("the kernel does not offer it (Linux >= 6.9 with CONFIG_FUSE_PASSTHROUGH)")
        } else if config.set_max_stack_depth(1).is_err() {
            Some("the kernel refused a backing stack depth of 1")
        } else {
            None
        };
        match why_not {
            None => {
                self.on.store(true, Ordering::SeqCst);
                tracing::info!("passthrough: on (reads of local blobs are served by the kernel from the flat tier)");
            }
            Some(why) => tracing::info!("passthrough: off ({why}); local reads go through the daemon"),
        }
    }

    /// Open `ino` through `core` and reply, passthrough where the kernel allows it; returns
    /// what the core opened. A writer waits for the inode's passthrough readers before the
    /// core sees its open (an `O_TRUNC` must not truncate a file it then fails to open); a
    /// reader that cannot share their backing waits after. `Busy` after [`WAIT`].
    pub fn open(&self, core: &FsCore, ino: u64, flags: i32, reply: ReplyOpen, fopen: impl Fn(&Opened) -> FopenFlags) -> Result<Opened, (ReplyOpen, OpenError)> {
        if !self.on.load(Ordering::Relaxed) {
            return match core.open(ino, flags) {
                Ok(o) => {
                    reply.opened(FileHandle(o.fh), fopen(&o));
                    Ok(o)
                }
                Err(e) => Err((reply, OpenError::Core(e))),
            };
        }
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        let deadline = Instant::now() + WAIT;
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        if !read_only {
            inodes = match self.wait_clear(inodes, ino, deadline) {
                Some(g) => g,
                None => return Err((reply, OpenError::Busy)),
            };
        }
        let o = match core.open(ino, flags) {
            Ok(o) => o,
            Err(e) => return Err((reply, OpenError::Core(e))),
        };
        let blob = if read_only { core.sealed_blob(o.fh) } else { None };
        loop {
            let io = inodes.entry(ino).or_default();
            if let Some(blob) = blob {
                if io.normal == 0 && io.passthrough == 0 && io.backing.is_none() {
                    io.backing = self.attach(core, &reply, &blob).map(|id| (blob, id));
                }
                if let Some((_, id)) = io.backing.as_ref().filter(|(b, _)| *b == blob) {
                    io.passthrough += 1;
                    self.handles.lock().unwrap_or_else(|p| p.into_inner()).insert(o.fh, (ino, Mode::Passthrough));
                    crate::metrics::get().passthrough_opens.inc();
                    // a blob open the flat tier served, as on the daemon's path
                    crate::metrics::get().tier_hit("flat");
                    let flags = fopen(&o) - FopenFlags::FOPEN_DIRECT_IO - FopenFlags::FOPEN_KEEP_CACHE;
                    reply.opened_passthrough(FileHandle(o.fh), flags, id);
                    return Ok(o);
                }
            }
            if io.passthrough == 0 {
                io.normal += 1;
                self.handles.lock().unwrap_or_else(|p| p.into_inner()).insert(o.fh, (ino, Mode::Normal));
                drop(inodes);
                reply.opened(FileHandle(o.fh), fopen(&o));
                return Ok(o);
            }
            inodes = match self.wait_clear(inodes, ino, deadline) {
                Some(g) => g,
                None => {
                    core.release(o.fh);
                    return Err((reply, OpenError::Busy));
                }
            };
        }
    }

    /// Wait (until `deadline`) for `ino` to have no passthrough opens; `None` if it still has.
    fn wait_clear<'a>(&self, mut inodes: std::sync::MutexGuard<'a, HashMap<u64, InodeIo>>, ino: u64, deadline: Instant) -> Option<std::sync::MutexGuard<'a, HashMap<u64, InodeIo>>> {
        while inodes.get(&ino).is_some_and(|io| io.passthrough > 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::debug!(ino, "open refused: the inode stayed open for passthrough reading");
                return None;
            }
            inodes = self.released.wait_timeout(inodes, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Some(inodes)
    }

    /// A created handle: counted so no passthrough open of the inode conflicts with it.
    pub fn created(&self, ino: u64, fh: u64) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        inodes.entry(ino).or_default().normal += 1;
        self.handles.lock().unwrap_or_else(|p| p.into_inner()).insert(fh, (ino, Mode::Normal));
    }

    /// The kernel released handle `fh` (it dropped the handle's io mode before telling us).
    pub fn released(&self, fh: u64) {
        let Some((ino, mode)) = self.handles.lock().unwrap_or_else(|p| p.into_inner()).remove(&fh) else { return };
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(io) = inodes.get_mut(&ino) else { return };
        match mode {
            Mode::Normal => io.normal = io.normal.saturating_sub(1),
            Mode::Passthrough => {
                io.passthrough = io.passthrough.saturating_sub(1);
                if io.passthrough == 0 {
                    // closes the kernel's backing file; opens waiting for this may go on
                    io.backing = None;
                    self.released.notify_all();
                }
            }
        }
        if io.normal == 0 && io.passthrough == 0 {
            inodes.remove(&ino);
        }
    }

    /// Register the blob's flat file as a backing file; `None` (the open goes the normal way)
    /// when the blob left the flat tier or the kernel refuses (logged once).
    fn attach(&self, core: &FsCore, reply: &ReplyOpen, blob: &BlobId) -> Option<BackingId> {
        let file = core.store().flat().open_blob(blob).ok()?;
        match reply.open_backing(&file) {
            Ok(id) => Some(id),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "passthrough: the kernel refused a backing file; such opens go through the daemon");
                }
                None
            }
        }
    }
}
