//! Serving one request that arrived on an io_uring queue: decode it, call the core as the
//! fuser adapter ([`crate::fs::fuse`]) does for the same op, and write the reply.

use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fuser::Notifier;

use crate::fs::core::FsCore;
use crate::fs::error::FsError;
use crate::fs::passthrough::{Backing, DevBacking, OpenError, OpenReply, Passthrough};
use crate::fs::request::{self, type_bits, FOPEN_PASSTHROUGH};
use crate::fs::uring::queue::{Arrived, Reply};
use crate::fs::uring::wire::{fattr, names, op, time, Fields, Out};
use crate::fs::{Attr, Caller, SetAttr, SetTime, BLOCK_SIZE, NAME_MAX};

/// Who may use the mount besides the kernel's own checks (`allow_other`, `allow_root`), as
/// fuser enforces it on `/dev/fuse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acl {
    /// anyone (`allow_other`)
    All,
    /// root and the mount's owner (`allow_root`)
    RootAndOwner,
    /// the mount's owner
    Owner,
}

/// What the queues serve requests with (shared by all of them).
pub struct Server {
    pub(crate) core: Arc<FsCore>,
    pub(crate) ttl: Duration,
    pub(crate) notifier: Arc<OnceLock<Notifier>>,
    pub(crate) offload: Option<tokio::runtime::Handle>,
    pub(crate) passthrough: Arc<Passthrough>,
    pub(crate) dev: Arc<OwnedFd>,
    pub(crate) acl: Acl,
    pub(crate) owner: u32,
}

/// The fields of `struct fuse_in_header` a handler uses.
struct Head {
    opcode: u32,
    unique: u64,
    nodeid: u64,
    uid: u32,
    gid: u32,
}

fn op_name(opcode: u32) -> &'static str {
    match opcode {
        op::LOOKUP => "lookup",
        op::GETATTR => "getattr",
        op::SETATTR => "setattr",
        op::READLINK => "readlink",
        op::SYMLINK => "symlink",
        op::MKNOD => "mknod",
        op::MKDIR => "mkdir",
        op::UNLINK => "unlink",
        op::RMDIR => "rmdir",
        op::RENAME | op::RENAME2 => "rename",
        op::LINK => "link",
        op::OPEN => "open",
        op::READ => "read",
        op::WRITE => "write",
        op::STATFS => "statfs",
        op::RELEASE => "release",
        op::FSYNC => "fsync",
        op::SETXATTR => "setxattr",
        op::GETXATTR => "getxattr",
        op::LISTXATTR => "listxattr",
        op::REMOVEXATTR => "removexattr",
        op::FLUSH => "flush",
        op::OPENDIR => "opendir",
        op::READDIR => "readdir",
        op::RELEASEDIR => "releasedir",
        op::FSYNCDIR => "fsyncdir",
        op::CREATE => "create",
        op::FALLOCATE => "fallocate",
        op::READDIRPLUS => "readdirplus",
        _ => "other",
    }
}

/// Ops the kernel sends without the caller's uid, which the owner-only checks let through
/// (as fuser does).
fn uid_free(opcode: u32) -> bool {
    matches!(opcode, op::DESTROY | op::READ | op::READDIR | op::READDIRPLUS | op::WRITE | op::FSYNC | op::FSYNCDIR | op::RELEASE | op::RELEASEDIR)
}

impl Server {
    /// Serve `req`, replying through `reply` (now, or from a blocking thread).
    pub fn handle(self: &Arc<Self>, reply: Reply, req: Arrived) {
        let h = Fields(req.header);
        let head = Head { opcode: h.u32(4), unique: h.u64(8), nodeid: h.u64(16), uid: h.u32(24), gid: h.u32(28) };
        let name = op_name(head.opcode);
        let _req = request::begin(head.unique, name, head.nodeid);
        if self.acl != Acl::All && head.uid != self.owner && !(self.acl == Acl::RootAndOwner && head.uid == 0) && !uid_free(head.opcode) {
            return reply.error(libc::EACCES);
        }
        let (f, payload) = (Fields(req.op), req.payload);
        let mut strings = names(payload);
        let mut next_name = || strings.next().unwrap_or_default();
        let core = &self.core;
        let ino = head.nodeid;
        let caller = Caller { uid: head.uid, gid: head.gid };
        match head.opcode {
            op::LOOKUP => match core.lookup_for_kernel(ino, next_name()) {
                Ok(Some(a)) => self.entry_reply(reply, &a, false),
                Ok(None) => self.entry_reply(reply, &Attr::negative(), false),
                Err(e) => fail(reply, name, &e),
            },
            op::GETATTR => self.attr_reply(reply, name, core.getattr(ino)),
            op::SETATTR => {
                let valid = f.u32(0);
                let when = |set: u32, now: u32, secs: usize, nsecs: usize| {
                    (valid & set != 0).then(|| if valid & now != 0 { SetTime::Now } else { SetTime::At(time(f.u64(secs), f.u32(nsecs))) })
                };
                let ch = SetAttr {
                    mode: (valid & fattr::MODE != 0).then(|| f.u32(68)),
                    uid: (valid & fattr::UID != 0).then(|| f.u32(76)),
                    gid: (valid & fattr::GID != 0).then(|| f.u32(80)),
                    size: (valid & fattr::SIZE != 0).then(|| f.u64(16)),
                    atime: when(fattr::ATIME, fattr::ATIME_NOW, 32, 56),
                    mtime: when(fattr::MTIME, fattr::MTIME_NOW, 40, 60),
                };
                let fh = (valid & fattr::FH != 0).then(|| f.u64(8));
                let ttl = self.ttl;
                self.run(reply, move |core, reply| attr_out(reply, ttl, "setattr", core.setattr(ino, ch, fh)));
            }
            op::READLINK => match core.readlink(ino) {
                Ok(t) => data_reply(reply, &t),
                Err(e) => fail(reply, name, &e),
            },
            op::SYMLINK => {
                let (link, target) = (next_name(), next_name());
                let r = core.symlink(caller, ino, link, target);
                self.new_entry(reply, name, r)
            }
            op::MKNOD => {
                let r = core.mknod(caller, ino, next_name(), f.u32(0), f.u32(8), f.u32(4));
                self.new_entry(reply, name, r)
            }
            op::MKDIR => {
                let r = core.mkdir(caller, ino, next_name(), f.u32(0), f.u32(4));
                self.new_entry(reply, name, r)
            }
            op::UNLINK => empty(reply, name, core.unlink(ino, next_name())),
            op::RMDIR => empty(reply, name, core.rmdir(ino, next_name())),
            op::RENAME | op::RENAME2 => {
                let flags = if head.opcode == op::RENAME2 { f.u32(8) } else { 0 };
                let (from, to) = (next_name(), next_name());
                empty(reply, name, core.rename(ino, from, f.u64(0), to, flags))
            }
            op::LINK => {
                let r = core.link(f.u64(0), ino, next_name());
                self.new_entry(reply, name, r)
            }
            op::OPEN => {
                let flags = f.u32(0) as i32;
                let fetch = self.passthrough.fetch_first(&self.core, ino, flags);
                if fetch.is_none() && !self.passthrough.may_wait(ino, flags) {
                    return self.open(reply, ino, flags);
                }
                // it waits for foyer's disk, or for releases, which may arrive on this queue:
                // not on its thread
                let (server, handed) = (self.clone(), request::hand_off());
                let spawned = std::thread::Builder::new().name("wombatfs-open".into()).spawn(move || {
                    let _req = request::resume(handed);
                    if let Some(blob) = fetch {
                        server.core.fetch_to_flat(&blob);
                    }
                    server.open(reply, ino, flags)
                });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "io_uring: no thread for an open that may wait; the kernel gets EIO");
                }
            }
            op::READ => {
                // read straight into the entry's payload; what is local or already
                // downloaded is answered here, a read that must wait goes to a blocking thread
                let (fh, offset, size) = (f.u64(0), f.u64(8), f.u32(16) as usize);
                let mut reply = reply;
                match read_reply(&mut reply, core, fh, offset, size, self.offload.is_none()) {
                    Ok(Some(n)) => reply.send(Ok(n)),
                    Ok(None) => self.run(reply, move |core, mut reply| match read_reply(&mut reply, core, fh, offset, size, true) {
                        Ok(n) => reply.send(Ok(n.unwrap_or_default())),
                        Err(e) => fail(reply, "read", &e),
                    }),
                    Err(e) => fail(reply, name, &e),
                }
            }
            op::WRITE => {
                let (fh, offset, size) = (f.u64(0), f.u64(8), f.u32(16) as usize);
                let data = &payload[..size.min(payload.len())];
                if self.offload.is_none() {
                    return written(reply, core.write(fh, offset, data));
                }
                match core.try_write(fh, offset, data) {
                    Ok(None) => {
                        let data = data.to_vec();
                        self.run(reply, move |core, reply| written(reply, core.write(fh, offset, &data)));
                    }
                    r => written(reply, r.map(|n| n.unwrap_or_default())),
                }
            }
            op::STATFS => match core.statfs(ino) {
                Ok(s) => {
                    let mut reply = reply;
                    let mut o = Out::new(reply.payload());
                    o.u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree);
                    o.u32(BLOCK_SIZE).u32(NAME_MAX as u32).u32(BLOCK_SIZE).u32(0).bytes(&[0u8; 24]);
                    let n = o.len();
                    reply.send(Ok(n))
                }
                Err(e) => fail(reply, name, &e),
            },
            op::RELEASE => {
                let fh = f.u64(0);
                self.passthrough.released(fh);
                self.run(reply, move |core, reply| {
                    core.release(fh);
                    reply.send(Ok(0))
                });
            }
            op::FSYNC => {
                let fh = f.u64(0);
                self.run(reply, move |core, reply| empty(reply, "fsync", core.fsync(fh)));
            }
            op::FLUSH => {
                let fh = f.u64(0);
                self.run(reply, move |core, reply| empty(reply, "flush", core.flush(fh)));
            }
            op::SETXATTR => {
                // `user.wombatfs.warm` may wait for the object store: off the ring's thread
                let (size, flags) = (f.u32(0) as usize, f.u32(4) as i32);
                let key = next_name().to_vec();
                let value = payload.get(key.len() + 1..key.len() + 1 + size).unwrap_or_default().to_vec();
                self.run(reply, move |core, reply| empty(reply, "setxattr", core.setxattr(ino, &key, &value, flags)));
            }
            op::GETXATTR => {
                let size = f.u32(0);
                xattr_reply(reply, size, core.getxattr(ino, next_name()), name)
            }
            op::LISTXATTR => xattr_reply(reply, f.u32(0), core.listxattr(ino), name),
            op::REMOVEXATTR => empty(reply, name, core.removexattr(ino, next_name())),
            op::OPENDIR => match core.opendir(ino) {
                Ok(fh) => {
                    let mut reply = reply;
                    let n = Out::new(reply.payload()).open(fh, 0, 0).len();
                    reply.send(Ok(n))
                }
                Err(e) => fail(reply, name, &e),
            },
            op::READDIR | op::READDIRPLUS => self.readdir(reply, name, head.opcode == op::READDIRPLUS, f.u64(0), f.u64(8), f.u32(16) as usize),
            op::RELEASEDIR => {
                core.releasedir(f.u64(0));
                reply.send(Ok(0))
            }
            op::FSYNCDIR => empty(reply, name, core.sync_metadata()),
            op::CREATE => {
                let flags = f.u32(0) as i32;
                match core.create(caller, ino, next_name(), f.u32(4), f.u32(8), flags) {
                    Ok((a, o)) => {
                        core.kernel_holds(a.ino);
                        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
                        let open = RingOpen { reply, dev: self.dev.clone(), entry: Some((self.ttl, a)) };
                        self.passthrough.create(core, a.ino, &o, write, open)
                    }
                    Err(e) => fail(reply, name, &e),
                }
            }
            op::FALLOCATE => empty(reply, name, core.fallocate(f.u64(0), f.u64(8), f.u64(16), f.u32(24) as i32)),
            // no ioctls: a regular file's answer, without a log line
            op::IOCTL => reply.error(libc::ENOTTY),
            op::DESTROY => reply.send(Ok(0)),
            // what fuser answers for ops wombatfs does not implement (ACCESS, locks, LSEEK,
            // COPY_FILE_RANGE, …): the kernel then does without them
            _ => reply.error(libc::ENOSYS),
        }
    }

    fn open(&self, reply: Reply, ino: u64, flags: i32) {
        let open = RingOpen { reply, dev: self.dev.clone(), entry: None };
        match self.passthrough.open(&self.core, ino, flags, open) {
            Ok(o) => crate::fs::fuse::attrs_changed(&self.notifier, ino, &o),
            Err((open, OpenError::Core(e))) => fail(open.reply, "open", &e),
            Err((open, OpenError::Busy)) => fail(open.reply, "open", &FsError::Busy("open for passthrough reading")),
        }
    }

    /// Run `f` (which replies) on the blocking pool when offloading, here otherwise.
    fn run<F: FnOnce(&FsCore, Reply) + Send + 'static>(&self, reply: Reply, f: F) {
        request::run(self.offload.as_ref(), &self.core, move |core| f(core, reply))
    }

    fn entry_reply(&self, mut reply: Reply, a: &Attr, holds: bool) {
        if holds {
            self.core.kernel_holds(a.ino);
        }
        let n = Out::new(reply.payload()).entry(self.ttl, a.ino, a).len();
        reply.send(Ok(n))
    }

    /// A new name's entry (mknod, mkdir, symlink, link): the kernel holds the inode.
    fn new_entry(&self, reply: Reply, op: &'static str, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => self.entry_reply(reply, &a, true),
            Err(e) => fail(reply, op, &e),
        }
    }

    fn attr_reply(&self, reply: Reply, op: &'static str, r: Result<Attr, FsError>) {
        attr_out(reply, self.ttl, op, r)
    }

    fn readdir(&self, mut reply: Reply, op: &'static str, plus: bool, fh: u64, offset: u64, size: usize) {
        let ttl = self.ttl;
        let mut o = Out::new(reply.payload());
        let r = self.core.readdir_from(fh, offset, plus, |next, e, a| {
            let bits = type_bits(e.kind);
            if !plus {
                return !o.dirent(size, e.ino, next, bits, &e.name);
            }
            // struct fuse_direntplus: the entry, then the dirent, both or neither
            if o.len() + 128 + (24 + e.name.len()).div_ceil(8) * 8 > size.min(o.len() + o.room()) {
                return true;
            }
            o.entry(ttl, e.ino, a);
            !o.dirent(usize::MAX, e.ino, next, bits, &e.name)
        });
        let n = o.len();
        match r {
            Ok(()) => reply.send(Ok(n)),
            Err(e) => fail(reply, op, &e),
        }
    }
}

fn fail(reply: Reply, op: &'static str, e: &FsError) {
    reply.error(request::errno(op, e))
}

fn empty(reply: Reply, op: &'static str, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.send(Ok(0)),
        Err(e) => fail(reply, op, &e),
    }
}

fn attr_out(mut reply: Reply, ttl: Duration, op: &'static str, r: Result<Attr, FsError>) {
    match r {
        Ok(a) => {
            let n = Out::new(reply.payload()).attr_out(ttl, &a).len();
            reply.send(Ok(n))
        }
        Err(e) => fail(reply, op, &e),
    }
}

fn data_reply(mut reply: Reply, data: &[u8]) {
    let buf = reply.payload();
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    reply.send(Ok(n))
}

/// Read up to `size` bytes into the reply's payload: `None` when they are still downloading
/// and `wait` is false.
fn read_reply(reply: &mut Reply, core: &FsCore, fh: u64, offset: u64, size: usize, wait: bool) -> Result<Option<usize>, FsError> {
    let out = reply.payload();
    let n = size.min(out.len());
    let r = core.read_into(fh, offset, &mut out[..n], wait)?;
    if let Some(n) = r {
        crate::metrics::get().fuse_read_bytes.inc_by(n as u64);
    }
    Ok(r)
}

fn written(mut reply: Reply, r: Result<u32, FsError>) {
    match r {
        Ok(n) => {
            crate::metrics::get().fuse_write_bytes.inc_by(n as u64);
            let len = Out::new(reply.payload()).u32(n).u32(0).len();
            reply.send(Ok(len))
        }
        Err(e) => fail(reply, "write", &e),
    }
}

fn xattr_reply(mut reply: Reply, size: u32, r: Result<Vec<u8>, FsError>, op: &'static str) {
    match r {
        Ok(v) if size == 0 => {
            let n = Out::new(reply.payload()).u32(v.len() as u32).u32(0).len();
            reply.send(Ok(n))
        }
        Ok(v) if v.len() <= size as usize => data_reply(reply, &v),
        Ok(_) => reply.error(libc::ERANGE),
        Err(e) => fail(reply, op, &e),
    }
}

/// An open (or, with its entry, a create) answered on a ring.
struct RingOpen {
    reply: Reply,
    dev: Arc<OwnedFd>,
    entry: Option<(Duration, Attr)>,
}

impl RingOpen {
    fn send(mut self, fh: u64, bits: u32, backing: u32) {
        let mut o = Out::new(self.reply.payload());
        if let Some((ttl, a)) = &self.entry {
            o.entry(*ttl, a.ino, a);
        }
        let n = o.open(fh, bits, backing).len();
        self.reply.send(Ok(n))
    }
}

impl OpenReply for RingOpen {
    const DEV: bool = true;
    fn backing(&self, file: &std::fs::File) -> std::io::Result<Backing> {
        DevBacking::open(&self.dev, file).map(Backing::Dev)
    }
    fn opened(self, fh: u64, bits: u32) {
        self.send(fh, bits, 0)
    }
    fn opened_passthrough(self, fh: u64, bits: u32, backing: &Backing) {
        match backing {
            Backing::Dev(d) => self.send(fh, bits | FOPEN_PASSTHROUGH, d.id),
            Backing::Fuser(_) => {
                tracing::warn!("passthrough: an open on an io_uring queue found the inode's backing registered on /dev/fuse");
                self.reply.error(libc::EIO)
            }
        }
    }
}
