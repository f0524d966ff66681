//! What every FUSE transport shares about the request a thread is serving: its id, op and
//! inode in a `tracing` span, its latency in the metrics, and the errno its failure maps to,
//! logged once. Transport-free: the fuser adapter ([`crate::fs::fuse`]) and the io_uring
//! queues ([`crate::fs::uring`]) both serve requests through these.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use crate::fs::core::FsCore;
use crate::fs::error::FsError;
use crate::fs::{Kind, Opened};

/// The FUSE request a thread is serving: its kernel-unique id, op and inode, when it
/// arrived, and whether another thread replies to it (that thread records its latency).
#[derive(Clone, Copy)]
pub struct ReqInfo {
    id: u64,
    ino: u64,
    op: &'static str,
    start: Instant,
    handed_off: bool,
}

thread_local! {
    static CURRENT: Cell<Option<ReqInfo>> = const { Cell::new(None) };
}

/// While alive: the thread serves this request. Every log line inside its `req` span (debug
/// level: follow one request through the tiers with `--log wombatfs=debug`) carries the id, op
/// and inode, and a failure is logged once with them at any level.
pub struct InRequest {
    _span: tracing::span::EnteredSpan,
    prev: Option<ReqInfo>,
}

impl Drop for InRequest {
    fn drop(&mut self) {
        if let Some(r) = CURRENT.with(|c| c.replace(self.prev)).filter(|r| !r.handed_off) {
            crate::metrics::get().fuse_request(r.op, r.start.elapsed());
        }
    }
}

fn enter(info: ReqInfo, span: tracing::Span) -> InRequest {
    let prev = CURRENT.with(|c| c.replace(Some(info)));
    InRequest { _span: span.entered(), prev }
}

/// Start serving request `id` (`op` on inode `ino`) on this thread.
pub fn begin(id: u64, op: &'static str, ino: u64) -> InRequest {
    enter(ReqInfo { id, ino, op, start: Instant::now(), handed_off: false }, tracing::debug_span!("req", id, op, ino))
}

/// Hand the current request to another thread: returns what that thread passes to
/// [`resume`] so its log lines and latency stay the request's.
pub fn hand_off() -> (Option<ReqInfo>, tracing::Span) {
    let info = CURRENT.with(|c| {
        let info = c.get();
        c.set(info.map(|i| ReqInfo { handed_off: true, ..i }));
        info
    });
    (info, tracing::Span::current())
}

/// On the thread a request was handed to: serve it there (the thread that replies records
/// its latency).
pub fn resume(handed: (Option<ReqInfo>, tracing::Span)) -> Option<InRequest> {
    let (info, span) = handed;
    info.map(|i| enter(i, span))
}

/// Run `f` (which replies) on `offload`'s blocking pool, with the request's context, when the
/// mount offloads (its requests may wait on the network); here otherwise.
pub fn run<F: FnOnce(&FsCore) + Send + 'static>(offload: Option<&tokio::runtime::Handle>, core: &Arc<FsCore>, f: F) {
    match offload {
        Some(rt) => {
            let core = core.clone();
            // the thread that replies records the request's latency
            let handed = hand_off();
            rt.spawn_blocking(move || {
                let _req = resume(handed);
                f(&core)
            });
        }
        None => f(core),
    }
}

/// The errno for a failed request, counted in the metrics and logged once with the request's
/// id, op and inode (a fault as a warning, a refusal at debug level).
pub fn errno(op: &'static str, e: &FsError) -> i32 {
    let (id, ino) = CURRENT.with(|c| c.get()).map_or((0, 0), |r| (r.id, r.ino));
    let errno = e.errno();
    crate::metrics::get().fuse_error(op, errno);
    if e.is_fault() {
        tracing::warn!(req = id, op, ino, errno, error = %e, "request failed");
    } else {
        tracing::debug!(req = id, op, ino, errno, error = %e, "request refused");
    }
    errno
}

/// The file type bits of a kind, as `st_mode` carries them.
pub fn type_bits(k: Kind) -> u32 {
    match k {
        Kind::Dir => libc::S_IFDIR,
        Kind::File => libc::S_IFREG,
        Kind::Symlink => libc::S_IFLNK,
        Kind::Fifo => libc::S_IFIFO,
        Kind::Socket => libc::S_IFSOCK,
        Kind::CharDevice => libc::S_IFCHR,
        Kind::BlockDevice => libc::S_IFBLK,
    }
}

/// The kernel's open flags for a handle the core opened (`FOPEN_*`).
pub fn fopen_bits(o: &Opened) -> u32 {
    let mut f = 0;
    if o.keep_cache {
        f |= FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FOPEN_DIRECT_IO;
    }
    f
}

/// `FOPEN_DIRECT_IO`
pub const FOPEN_DIRECT_IO: u32 = fuser::FopenFlags::FOPEN_DIRECT_IO.bits();
/// `FOPEN_KEEP_CACHE`
pub const FOPEN_KEEP_CACHE: u32 = fuser::FopenFlags::FOPEN_KEEP_CACHE.bits();
/// `FOPEN_PASSTHROUGH`
pub const FOPEN_PASSTHROUGH: u32 = fuser::FopenFlags::FOPEN_PASSTHROUGH.bits();
