//! The thin FUSE adapter: translates fuser requests into [`FsCore`] calls and results into
//! replies. This is the only module that uses `fuser`; errors are logged here, once.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    IoctlFlags, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::fs::core::FsCore;
use crate::fs::error::FsError;
use crate::fs::passthrough::{Backing, OpenError, OpenReply, Passthrough};
use crate::fs::request::{self, InRequest};
use crate::fs::{Attr, Caller, Kind, Opened, SetAttr, SetTime, BLOCK_SIZE, NAME_MAX};

/// The largest WRITE (and, with `FUSE_MAX_PAGES`, READ) the kernel sends: 1 MiB.
pub const MAX_WRITE: u32 = 1 << 20;

/// The FUSE filesystem object handed to fuser.
pub struct WombatFuse {
    core: Arc<FsCore>,
    ttl: Duration,
    notifier: Arc<OnceLock<Notifier>>,
    offload: Option<tokio::runtime::Handle>,
    passthrough: Arc<Passthrough>,
    uring: Option<Arc<crate::fs::uring::Negotiated>>,
}

impl WombatFuse {
    /// Wrap a core; `ttl` is the kernel's entry/attribute cache lifetime (blobs never change,
    /// and every change on this node goes through the kernel, so it can be long).
    ///
    /// With `offload` (a remote object store), operations that may wait on the network —
    /// reads that miss the flat tier, seals that upload synchronously, copy-on-write of a
    /// cold blob — run on the runtime's blocking pool and reply from there, so FUSE workers
    /// never block on the network and keep serving other requests.
    ///
    /// With `passthrough`, read-only opens of local sealed files are served by the kernel
    /// from the flat tier where the kernel allows it (see [`crate::fs::passthrough`]).
    ///
    /// With `uring`, the kernel is offered FUSE over io_uring and told whether it took it
    /// (the io_uring queues, [`crate::fs::uring`], then serve every request but forgets and
    /// interrupts; this adapter serves what arrives before they are ready).
    pub fn new(core: Arc<FsCore>, ttl: Duration, notifier: Arc<OnceLock<Notifier>>, offload: Option<tokio::runtime::Handle>, passthrough: Arc<Passthrough>, uring: Option<Arc<crate::fs::uring::Negotiated>>) -> Self {
        WombatFuse { core, ttl, notifier, offload, passthrough, uring }
    }

    /// Run `f` (which replies) on the blocking pool when offloading, inline otherwise.
    fn run<F: FnOnce(&FsCore) + Send + 'static>(&self, f: F) {
        request::run(self.offload.as_ref(), &self.core, f)
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn begin(req: &Request, op: &'static str, ino: u64) -> InRequest {
    request::begin(req.unique().0, op, ino)
}

fn errno(op: &'static str, e: &FsError) -> Errno {
    Errno::from_i32(request::errno(op, e))
}

fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid() }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(s),
    })
}

impl WombatFuse {
    fn entry(&self, reply: ReplyEntry, op: &'static str, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => {
                self.core.kernel_holds(a.ino);
                reply.entry(&self.ttl, &file_attr(&a), Generation(0))
            }
            Err(e) => reply.error(errno(op, &e)),
        }
    }

    fn written(reply: ReplyWrite, r: Result<u32, FsError>) {
        match r {
            Ok(n) => {
                crate::metrics::get().fuse_write_bytes.inc_by(n as u64);
                reply.written(n)
            }
            Err(e) => reply.error(errno("write", &e)),
        }
    }

    fn empty(reply: ReplyEmpty, op: &'static str, r: Result<(), FsError>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(op, &e)),
        }
    }
}

/// After an open that changed the inode's attributes (atime): the kernel's cached attributes
/// are dropped (a negative offset keeps its cached pages, which stay valid).
pub(crate) fn attrs_changed(notifier: &OnceLock<Notifier>, ino: u64, o: &Opened) {
    if o.attr_changed {
        if let Some(n) = notifier.get() {
            let _ = n.inval_inode(INodeNo(ino), -1, 0);
        }
    }
}

/// The function that drops kernel cache entries after another node's changes were applied.
pub fn invalidator(notifier: Arc<OnceLock<Notifier>>) -> impl Fn(&[crate::fs::Inval]) + Send + Sync {
    move |inval| {
        let Some(n) = notifier.get() else { return };
        for i in inval {
            // ENOENT: the kernel had nothing cached, which is fine
            let _ = match i {
                crate::fs::Inval::Entry(parent, name) => n.inval_entry(INodeNo(*parent), OsStr::from_bytes(name)),
                crate::fs::Inval::Inode(ino) => n.inval_inode(INodeNo(*ino), -1, 0),
            };
        }
    }
}

fn fopen(bits: u32) -> FopenFlags {
    FopenFlags::from_bits_retain(bits)
}

/// A passthrough open reply on `/dev/fuse` needs a backing fuser registered; one registered
/// by the io_uring transport cannot be named here (never the case: once the rings serve the
/// mount, no open arrives on `/dev/fuse`).
fn fuser_backing(b: &Backing) -> Option<&fuser::BackingId> {
    match b {
        Backing::Fuser(id) => Some(id),
        Backing::Dev(_) => {
            tracing::warn!("passthrough: an open on /dev/fuse found the inode's backing registered by the io_uring transport");
            None
        }
    }
}

impl OpenReply for ReplyOpen {
    const DEV: bool = false;
    fn backing(&self, file: &std::fs::File) -> std::io::Result<Backing> {
        self.open_backing(file).map(Backing::Fuser)
    }
    fn opened(self, fh: u64, bits: u32) {
        ReplyOpen::opened(self, FileHandle(fh), fopen(bits))
    }
    fn opened_passthrough(self, fh: u64, bits: u32, backing: &Backing) {
        match fuser_backing(backing) {
            Some(id) => ReplyOpen::opened_passthrough(self, FileHandle(fh), fopen(bits), id),
            None => self.error(Errno::from_i32(libc::EIO)),
        }
    }
}

/// A create's reply with the entry it carries.
struct Created {
    reply: ReplyCreate,
    ttl: Duration,
    attr: FileAttr,
}

impl OpenReply for Created {
    const DEV: bool = false;
    fn backing(&self, file: &std::fs::File) -> std::io::Result<Backing> {
        self.reply.open_backing(file).map(Backing::Fuser)
    }
    fn opened(self, fh: u64, bits: u32) {
        self.reply.created(&self.ttl, &self.attr, Generation(0), FileHandle(fh), fopen(bits))
    }
    fn opened_passthrough(self, fh: u64, bits: u32, backing: &Backing) {
        match fuser_backing(backing) {
            Some(id) => self.reply.created_passthrough(&self.ttl, &self.attr, Generation(0), FileHandle(fh), fopen(bits), id),
            None => self.reply.error(Errno::from_i32(libc::EIO)),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, FsError>, op: &'static str) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() <= size as usize => reply.data(&v),
        Ok(_) => reply.error(Errno::from_i32(libc::ERANGE)),
        Err(e) => reply.error(errno(op, &e)),
    }
}

impl Filesystem for WombatFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
            InitFlags::FUSE_MAX_PAGES,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::debug!(?cap, "kernel does not offer capability");
            }
        }
        self.passthrough.init(config);
        if let Some(u) = &self.uring {
            let accepted = config.add_capabilities(InitFlags::FUSE_OVER_IO_URING).is_ok();
            if accepted {
                // a ring entry's payload holds the largest request the kernel sends, which
                // max_write and max_readahead bound: readahead no larger than max_write
                if let Ok(kernel) = config.set_max_readahead(MAX_WRITE) {
                    let _ = config.set_max_readahead(kernel.min(MAX_WRITE));
                }
            }
            // from here on only the rings register backing files
            self.passthrough.set_dev_only(accepted);
            u.offer(accepted);
        }
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _req = begin(req, "lookup", parent.0);
        match self.core.lookup_for_kernel(parent.0, name.as_bytes()) {
            Ok(Some(a)) => reply.entry(&self.ttl, &file_attr(&a), Generation(0)),
            Ok(None) => reply.entry(&self.ttl, &file_attr(&Attr::negative()), Generation(0)),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    /// Also what fuser's `batch_forget` calls for each inode.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _req = begin(req, "getattr", ino.0);
        match self.core.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _req = begin(req, "setattr", ino.0);
        let ch = SetAttr { mode, uid, gid, size, atime: set_time(atime), mtime: set_time(mtime) };
        let ttl = self.ttl;
        self.run(move |core| match core.setattr(ino.0, ch, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&ttl, &file_attr(&a)),
            Err(e) => reply.error(errno("setattr", &e)),
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _req = begin(req, "readlink", ino.0);
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno("readlink", &e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let _req = begin(req, "mknod", parent.0);
        self.entry(reply, "mknod", self.core.mknod(caller(req), parent.0, name.as_bytes(), mode, umask, rdev));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let _req = begin(req, "mkdir", parent.0);
        self.entry(reply, "mkdir", self.core.mkdir(caller(req), parent.0, name.as_bytes(), mode, umask));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _req = begin(req, "unlink", parent.0);
        Self::empty(reply, "unlink", self.core.unlink(parent.0, name.as_bytes()));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _req = begin(req, "rmdir", parent.0);
        Self::empty(reply, "rmdir", self.core.rmdir(parent.0, name.as_bytes()));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let _req = begin(req, "symlink", parent.0);
        let r = self.core.symlink(caller(req), parent.0, link_name.as_bytes(), target.as_os_str().as_bytes());
        self.entry(reply, "symlink", r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _req = begin(req, "rename", parent.0);
        let r = self.core.rename(parent.0, name.as_bytes(), newparent.0, newname.as_bytes(), flags.bits());
        Self::empty(reply, "rename", r);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let _req = begin(req, "link", ino.0);
        self.entry(reply, "link", self.core.link(ino.0, newparent.0, newname.as_bytes()));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _req = begin(req, "open", ino.0);
        let (passthrough, notifier) = (self.passthrough.clone(), self.notifier.clone());
        let open = move |core: &FsCore| match passthrough.open(core, ino.0, flags.0, reply) {
            Ok(o) => attrs_changed(&notifier, ino.0, &o),
            Err((reply, OpenError::Core(e))) => reply.error(errno("open", &e)),
            Err((reply, OpenError::Busy)) => reply.error(errno("open", &FsError::Busy("open for passthrough reading"))),
        };
        match self.passthrough.fetch_first(&self.core, ino.0, flags.0) {
            // it waits for foyer's disk: on the blocking pool, not on a FUSE thread
            Some(blob) => self.run(move |core| {
                core.fetch_to_flat(&blob);
                open(core)
            }),
            None => open(&self.core),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _req = begin(req, "read", _ino.0);
        if self.offload.is_some() {
            // answer inline whatever is local or already downloaded; only reads that must
            // wait for the object store go to a blocking thread
            match self.core.try_read(fh.0, offset, size) {
                Ok(Some(buf)) => {
                    crate::metrics::get().fuse_read_bytes.inc_by(buf.len() as u64);
                    return reply.data(&buf);
                }
                Ok(None) => {}
                Err(e) => return reply.error(errno("read", &e)),
            }
        }
        self.run(move |core| match core.read_buf(fh.0, offset, size) {
            Ok(buf) => {
                crate::metrics::get().fuse_read_bytes.inc_by(buf.len() as u64);
                reply.data(&buf)
            }
            Err(e) => reply.error(errno("read", &e)),
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _req = begin(req, "write", _ino.0);
        if self.offload.is_none() {
            return Self::written(reply, self.core.write(fh.0, offset, data));
        }
        // answered here unless the write must first copy a blob that may have to come from
        // the object store (a rewrite in place): that one goes to a blocking thread
        match self.core.try_write(fh.0, offset, data) {
            Ok(None) => {
                let data = data.to_vec();
                self.run(move |core| Self::written(reply, core.write(fh.0, offset, &data)));
            }
            r => Self::written(reply, r.map(|n| n.unwrap_or_default())),
        }
    }

    fn flush(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let _req = begin(req, "flush", _ino.0);
        self.run(move |core| Self::empty(reply, "flush", core.flush(fh.0)));
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _req = begin(req, "release", _ino.0);
        self.passthrough.released(fh.0);
        self.run(move |core| {
            core.release(fh.0);
            reply.ok();
        });
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _req = begin(req, "fsync", _ino.0);
        self.run(move |core| Self::empty(reply, "fsync", core.fsync(fh.0)));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _req = begin(req, "opendir", ino.0);
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let _req = begin(req, "readdir", _ino.0);
        let r = self.core.readdir_from(fh.0, offset, false, |next, e, _| reply.add(INodeNo(e.ino), next, file_type(e.kind), OsStr::from_bytes(&e.name)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", &e)),
        }
    }

    fn readdirplus(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let _req = begin(req, "readdirplus", _ino.0);
        let ttl = self.ttl;
        let r = self.core.readdir_from(fh.0, offset, true, |next, e, a| reply.add(INodeNo(e.ino), next, OsStr::from_bytes(&e.name), &ttl, &file_attr(a), Generation(0)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdirplus", &e)),
        }
    }

    fn releasedir(&self, req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        let _req = begin(req, "releasedir", _ino.0);
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _req = begin(req, "fsyncdir", _ino.0);
        Self::empty(reply, "fsyncdir", self.core.sync_metadata());
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _req = begin(req, "statfs", ino.0);
        match self.core.statfs(ino.0) {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, BLOCK_SIZE, NAME_MAX as u32, BLOCK_SIZE),
            Err(e) => reply.error(errno("statfs", &e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _req = begin(req, "setxattr", ino.0);
        // `user.wombatfs.warm` may wait for the object store: off the FUSE workers
        let (name, value) = (name.as_bytes().to_vec(), value.to_vec());
        self.run(move |core| Self::empty(reply, "setxattr", core.setxattr(ino.0, &name, &value, flags)));
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _req = begin(req, "getxattr", ino.0);
        xattr_reply(reply, size, self.core.getxattr(ino.0, name.as_bytes()), "getxattr");
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _req = begin(req, "listxattr", ino.0);
        xattr_reply(reply, size, self.core.listxattr(ino.0), "listxattr");
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _req = begin(req, "removexattr", ino.0);
        Self::empty(reply, "removexattr", self.core.removexattr(ino.0, name.as_bytes()));
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let _req = begin(req, "create", parent.0);
        match self.core.create(caller(req), parent.0, name.as_bytes(), mode, umask, flags) {
            Ok((a, o)) => {
                self.core.kernel_holds(a.ino);
                let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
                let reply = Created { reply, ttl: self.ttl, attr: file_attr(&a) };
                self.passthrough.create(&self.core, a.ino, &o, write, reply)
            }
            Err(e) => reply.error(errno("create", &e)),
        }
    }

    /// No ioctls: `ENOTTY`, the answer of a regular file, without a log line (every Python
    /// `open()` asks `TCGETS` to see whether the file is a terminal).
    #[allow(clippy::too_many_arguments)]
    fn ioctl(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: IoctlFlags, _cmd: u32, _in_data: &[u8], _out_size: u32, reply: ReplyIoctl) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(&self, req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        let _req = begin(req, "fallocate", _ino.0);
        Self::empty(reply, "fallocate", self.core.fallocate(fh.0, offset, length, mode));
    }
}
