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
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::blob::BlobId;
use crate::fs::core::FsCore;
use crate::fs::error::FsError;
use crate::fs::request::{fopen_bits, FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE};
use crate::fs::Opened;

/// What passthrough may serve (`--passthrough`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassthroughMode {
    /// every open goes through the daemon
    Off,
    /// read-only opens of sealed blobs in the flat tier (the default)
    Read,
    /// also writers of new or truncated files, into their staging file (Linux >= 6.13)
    ReadWrite,
}

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

/// What an inode's backing file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// a sealed blob's flat file
    Blob(BlobId),
    /// the staging file the kernel writes, by its address (the core keeps it alive while any
    /// handle of the inode is open, which outlasts the backing)
    Staging(usize),
}

#[derive(Default)]
struct InodeIo {
    /// live opens on the normal path (cached or direct I/O)
    normal: usize,
    passthrough: usize,
    backing: Option<(Source, Backing)>,
}

/// A backing file registered with the kernel; the kernel closes it when this is dropped.
pub enum Backing {
    /// registered through fuser's channel (the `/dev/fuse` transport)
    Fuser(fuser::BackingId),
    /// registered on the mount's device descriptor (the io_uring transport)
    Dev(DevBacking),
}

/// A backing file registered with `FUSE_DEV_IOC_BACKING_OPEN` on the mount's descriptor.
pub struct DevBacking {
    dev: Arc<OwnedFd>,
    /// the id open replies carry
    pub id: u32,
}

impl DevBacking {
    /// Register `file` as a backing file on `dev`.
    pub fn open(dev: &Arc<OwnedFd>, file: &std::fs::File) -> std::io::Result<Self> {
        Ok(DevBacking { dev: dev.clone(), id: fuser::BackingId::create_raw(dev.as_ref(), file)? })
    }
}

impl Drop for DevBacking {
    fn drop(&mut self) {
        /// `_IOW(229, 2, uint32_t)`
        const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;
        // SAFETY: the descriptor is open (held by the Arc) and the argument is a u32 id.
        let r = unsafe { libc::ioctl(self.dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &self.id as *const u32) };
        if r < 0 {
            tracing::warn!(id = self.id, error = %std::io::Error::last_os_error(), "passthrough: closing a backing file failed");
        }
    }
}

/// The passthrough state of a mount.
pub struct Passthrough {
    /// asked for (`--passthrough`)
    wanted: PassthroughMode,
    /// the kernel accepted it at init
    on: AtomicBool,
    /// writers of new or truncated files write their staging file through the kernel too
    writes: AtomicBool,
    /// an `open_backing` failure was logged (once)
    warned: AtomicBool,
    inodes: Mutex<HashMap<u64, InodeIo>>,
    /// backings are registered by the io_uring transport only: an open answered on
    /// `/dev/fuse` (before the rings are ready) takes the normal path
    dev_only: AtomicBool,
    /// signalled when an inode's last passthrough open is released
    released: Condvar,
    handles: Mutex<HashMap<u64, (u64, Mode)>>,
}

/// Where a new handle's bytes are, for the kernel.
enum Want {
    None,
    Blob(BlobId),
    Staging(std::sync::Arc<std::fs::File>),
}

impl Want {
    fn source(&self) -> Option<Source> {
        match self {
            Want::None => None,
            Want::Blob(b) => Some(Source::Blob(*b)),
            Want::Staging(f) => Some(Source::Staging(std::sync::Arc::as_ptr(f) as usize)),
        }
    }
}

/// A reply that opens a file (an open or a create, on either transport).
pub trait OpenReply: Sized {
    /// whether its backings are [`Backing::Dev`] (the io_uring transport)
    const DEV: bool;
    /// register a backing file
    fn backing(&self, file: &std::fs::File) -> std::io::Result<Backing>;
    /// reply: handle `fh` on the normal path, with `FOPEN_*` flags `fopen`
    fn opened(self, fh: u64, fopen: u32);
    /// reply: handle `fh` served by the kernel from `backing`
    fn opened_passthrough(self, fh: u64, fopen: u32, backing: &Backing);
}

/// Write passthrough needs a kernel whose writes always move a file's mtime after an
/// `fstat` (multigrain timestamps, Linux 6.13): that is how a seal tells that the kernel
/// wrote nothing since the last one ([`crate::fs::open::Stamp`]).
fn kernel_has_multigrain_times() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else { return false };
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 13)
}

impl Passthrough {
    /// Passthrough wanted or not; it is on only once [`Passthrough::init`] says so.
    pub fn new(wanted: PassthroughMode) -> Self {
        Passthrough {
            wanted,
            on: AtomicBool::new(false),
            writes: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            inodes: Default::default(),
            dev_only: AtomicBool::new(false),
            released: Condvar::new(),
            handles: Default::default(),
        }
    }

    /// The io_uring transport serves this mount: only its replies register backings.
    pub fn set_dev_only(&self, on: bool) {
        self.dev_only.store(on, Ordering::SeqCst);
    }

    /// Whether an open of `ino` with `flags` may have to wait for the inode's passthrough
    /// readers to close (a writer while they are open): a transport whose threads serve other
    /// requests too runs such an open elsewhere, so the readers' releases get through.
    pub fn may_wait(&self, ino: u64, flags: i32) -> bool {
        self.on.load(Ordering::Relaxed)
            && flags & libc::O_ACCMODE != libc::O_RDONLY
            && self.inodes.lock().unwrap_or_else(|p| p.into_inner()).get(&ino).is_some_and(|io| io.passthrough > 0)
    }

    /// The blob an open of `ino` with `flags` should first bring from foyer into the flat tier
    /// ([`FsCore::fetch_to_flat`]) so the kernel can serve it: a reader of a small blob only
    /// there ([`FsCore::foyer_only_blob`]). That waits for foyer's disk, so a transport does it,
    /// then the open, off the threads that serve other requests.
    pub fn fetch_first(&self, core: &FsCore, ino: u64, flags: i32) -> Option<BlobId> {
        (self.on.load(Ordering::Relaxed) && flags & libc::O_ACCMODE == libc::O_RDONLY).then(|| core.foyer_only_blob(ino)).flatten()
    }

    /// At FUSE init: ask the kernel for passthrough; logs once which mode the mount runs in.
    pub fn init(&self, config: &mut fuser::KernelConfig) {
        let why_not = if self.wanted == PassthroughMode::Off {
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
            None if self.wanted == PassthroughMode::ReadWrite && kernel_has_multigrain_times() => {
                self.on.store(true, Ordering::SeqCst);
                self.writes.store(true, Ordering::SeqCst);
                tracing::info!("passthrough: on (reads of local blobs and writes of new or truncated files are served by the kernel)");
            }
            None => {
                self.on.store(true, Ordering::SeqCst);
                let writes = match self.wanted {
                    PassthroughMode::ReadWrite => "writes go through the daemon before Linux 6.13",
                    _ => "writes go through the daemon",
                };
                tracing::info!("passthrough: on (reads of local blobs are served by the kernel from the flat tier; {writes})");
            }
            Some(why) => tracing::info!("passthrough: off ({why}); local reads go through the daemon"),
        }
    }

    /// What the kernel could serve a handle from: the staging file the kernel writes (any
    /// handle of such an inode must share it), a writer's new staging file, or a read-only
    /// handle's sealed local blob.
    fn want(&self, core: &FsCore, fh: u64, read_only: bool, io: &InodeIo) -> Want {
        let writing = matches!(io.backing, Some((Source::Staging(_), _)));
        let may_write = self.writes.load(Ordering::Relaxed) && io.normal == 0 && (io.backing.is_none() || writing);
        if read_only || may_write {
            match core.kernel_writer(fh) {
                Ok(Some(f)) => return Want::Staging(f),
                Ok(None) => {}
                Err(e) => tracing::debug!(fh, error = %e, "no staging file for passthrough; the handle goes through the daemon"),
            }
        }
        match read_only.then(|| core.sealed_blob(fh)).flatten() {
            Some(b) => Want::Blob(b),
            None => Want::None,
        }
    }

    /// Open `ino` through `core` and reply, passthrough where the kernel allows it; returns
    /// what the core opened. A writer waits for the inode's passthrough readers of a sealed
    /// blob before the core sees its open (an `O_TRUNC` must not truncate a file it then
    /// fails to open) and joins the inode's kernel-written staging file; a reader that cannot
    /// share the inode's backing waits after. `Busy` after [`WAIT`].
    pub fn open<R: OpenReply>(&self, core: &FsCore, ino: u64, flags: i32, reply: R) -> Result<Opened, (R, OpenError)> {
        if !self.on.load(Ordering::Relaxed) {
            return match core.open(ino, flags) {
                Ok(o) => {
                    reply.opened(o.fh, fopen_bits(&o));
                    Ok(o)
                }
                Err(e) => Err((reply, OpenError::Core(e))),
            };
        }
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        let deadline = Instant::now() + WAIT;
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        let joins_writer = inodes.get(&ino).is_some_and(|io| matches!(io.backing, Some((Source::Staging(_), _))));
        if !read_only && !joins_writer {
            inodes = match self.wait_clear(inodes, ino, deadline) {
                Some(g) => g,
                None => return Err((reply, OpenError::Busy)),
            };
        }
        let o = match core.open(ino, flags) {
            Ok(o) => o,
            Err(e) => return Err((reply, OpenError::Core(e))),
        };
        loop {
            let want = self.want(core, o.fh, read_only, inodes.entry(ino).or_default());
            match self.settle(&mut inodes, core, ino, o.fh, &reply, want) {
                Some(Some(id)) => {
                    reply.opened_passthrough(o.fh, fopen_bits(&o) & !(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE), id);
                    return Ok(o);
                }
                Some(None) => {
                    drop(inodes);
                    reply.opened(o.fh, fopen_bits(&o));
                    return Ok(o);
                }
                None => {}
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

    /// A created file: its staging file is the kernel's to write when write passthrough is
    /// on; otherwise the handle is counted so no passthrough open of the inode conflicts.
    /// Replies either way (the reply carries the new entry).
    pub fn create<R: OpenReply>(&self, core: &FsCore, ino: u64, o: &Opened, write: bool, reply: R) {
        if !self.on.load(Ordering::Relaxed) {
            return reply.opened(o.fh, fopen_bits(o));
        }
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        let want = if !write { Want::None } else { self.want(core, o.fh, false, inodes.entry(ino).or_default()) };
        // a new inode: nothing else is open on it, so this never waits
        match self.settle(&mut inodes, core, ino, o.fh, &reply, want) {
            Some(Some(id)) => reply.opened_passthrough(o.fh, fopen_bits(o) & !(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE), id),
            _ => {
                drop(inodes);
                reply.opened(o.fh, fopen_bits(o));
            }
        }
    }

    /// Count handle `fh` of `ino` in the mode the inode allows: `Some(Some(backing))` for a
    /// passthrough open, `Some(None)` for the normal path, `None` when it must wait for the
    /// inode's passthrough opens to close.
    fn settle<'a, R: OpenReply>(&self, inodes: &'a mut HashMap<u64, InodeIo>, core: &FsCore, ino: u64, fh: u64, reply: &R, want: Want) -> Option<Option<&'a Backing>> {
        let io = inodes.entry(ino).or_default();
        if let Some(src) = want.source() {
            if io.normal == 0 && io.passthrough == 0 && io.backing.is_none() {
                io.backing = self.attach(core, reply, &want).map(|id| (src, id));
            }
            if io.backing.as_ref().is_some_and(|(s, _)| *s == src) {
                io.passthrough += 1;
                self.handles.lock().unwrap_or_else(|p| p.into_inner()).insert(fh, (ino, Mode::Passthrough));
                crate::metrics::get().passthrough_opens.inc();
                if let Want::Blob(_) = want {
                    // a blob open the flat tier served, as on the daemon's path
                    crate::metrics::get().tier_hit("flat");
                }
                return Some(io.backing.as_ref().map(|(_, id)| id));
            }
        }
        if io.passthrough == 0 {
            io.normal += 1;
            self.handles.lock().unwrap_or_else(|p| p.into_inner()).insert(fh, (ino, Mode::Normal));
            return Some(None);
        }
        None
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

    /// Register the backing file: the blob's flat file or the staging file; `None` (the open
    /// goes the normal way) when the blob left the flat tier or the kernel refuses (logged
    /// once).
    fn attach<R: OpenReply>(&self, core: &FsCore, reply: &R, want: &Want) -> Option<Backing> {
        if self.dev_only.load(Ordering::Relaxed) && !R::DEV {
            return None;
        }
        let res = match want {
            Want::None => return None,
            Want::Blob(blob) => reply.backing(&core.store().flat().open_blob(blob).ok()?),
            Want::Staging(f) => reply.backing(f),
        };
        match res {
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
