//! The FUSE wire format the io_uring transport reads and writes itself (fuser keeps its own
//! private): request fields by offset, and the reply structures of `linux/fuse.h` (ABI 7.9+)
//! written little-endian into a ring entry's payload buffer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::fs::request::type_bits;
use crate::fs::{Attr, BLOCK_SIZE};

/// Opcodes (`enum fuse_opcode`) this transport answers.
pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const CREATE: u32 = 35;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
}

/// `FATTR_*`: which fields a SETATTR sets.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// Reads the fixed-size fields of a request's op header.
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    /// `u32` at byte `at` (0 past the end: the kernel sent a shorter header)
    pub fn u32(&self, at: usize) -> u32 {
        self.0.get(at..at + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    /// `u64` at byte `at`
    pub fn u64(&self, at: usize) -> u64 {
        self.0.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

/// The NUL-terminated strings at the front of a request's payload, in order.
pub fn names(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload.split(|b| *b == 0)
}

/// A time the kernel sent: seconds and nanoseconds since the epoch.
pub fn time(secs: u64, nsecs: u32) -> SystemTime {
    let secs = secs as i64;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

/// A time as the kernel reads it: seconds (negative before the epoch) and nanoseconds.
fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

/// Writes a reply's payload.
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Out<'a> {
    /// Write into `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, len: 0 }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Append bytes (the caller checked [`Out::room`]).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        self
    }

    /// Append a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Append a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Pad with zeros to a multiple of 8 bytes (directory entries).
    pub fn pad8(&mut self) -> &mut Self {
        let pad = (8 - self.len % 8) % 8;
        self.bytes(&[0u8; 8][..pad])
    }

    /// `struct fuse_attr` (88 bytes).
    pub fn attr(&mut self, a: &Attr) -> &mut Self {
        let (at, atn) = split_time(a.atime);
        let (mt, mtn) = split_time(a.mtime);
        let (ct, ctn) = split_time(a.ctime);
        self.u64(a.ino).u64(a.size).u64(a.blocks).u64(at as u64).u64(mt as u64).u64(ct as u64);
        self.u32(atn).u32(mtn).u32(ctn).u32(type_bits(a.kind) | a.perm as u32);
        self.u32(a.nlink).u32(a.uid).u32(a.gid).u32(a.rdev).u32(BLOCK_SIZE).u32(0)
    }

    /// `struct fuse_attr_out` (104 bytes).
    pub fn attr_out(&mut self, ttl: Duration, a: &Attr) -> &mut Self {
        self.u64(ttl.as_secs()).u32(ttl.subsec_nanos()).u32(0).attr(a)
    }

    /// `struct fuse_entry_out` (128 bytes); inode 0 is a negative entry the kernel caches.
    pub fn entry(&mut self, ttl: Duration, ino: u64, a: &Attr) -> &mut Self {
        self.u64(ino).u64(0).u64(ttl.as_secs()).u64(ttl.as_secs()).u32(ttl.subsec_nanos()).u32(ttl.subsec_nanos()).attr(a)
    }

    /// `struct fuse_open_out` (16 bytes).
    pub fn open(&mut self, fh: u64, flags: u32, backing: u32) -> &mut Self {
        self.u64(fh).u32(flags).u32(backing)
    }

    /// `struct fuse_dirent` (and its name, padded); false, writing nothing, when it does not
    /// fit in `limit` bytes of reply.
    pub fn dirent(&mut self, limit: usize, ino: u64, next: u64, kind_bits: u32, name: &[u8]) -> bool {
        let size = (24 + name.len()).div_ceil(8) * 8;
        if self.len + size > limit.min(self.buf.len()) {
            return false;
        }
        self.u64(ino).u64(next).u32(name.len() as u32).u32(kind_bits >> 12).bytes(name).pad8();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Kind;

    fn attr(t: SystemTime) -> Attr {
        Attr { ino: 7, size: 4096, blocks: 8, atime: t, mtime: t, ctime: t, kind: Kind::File, perm: 0o644, nlink: 1, uid: 1, gid: 2, rdev: 0 }
    }

    #[test]
    fn reply_structures_have_the_kernels_sizes() {
        let mut buf = vec![0u8; 4096];
        let a = attr(UNIX_EPOCH + Duration::new(5, 6));
        let ttl = Duration::from_millis(1500);
        assert_eq!(Out::new(&mut buf).attr(&a).len(), 88);
        assert_eq!(Out::new(&mut buf).attr_out(ttl, &a).len(), 104);
        assert_eq!(Out::new(&mut buf).entry(ttl, 7, &a).len(), 128);
        assert_eq!(Out::new(&mut buf).open(1, 2, 3).len(), 16);
        let mut o = Out::new(&mut buf);
        assert!(o.dirent(4096, 7, 1, libc::S_IFREG, b"abc"));
        assert_eq!(o.len(), 32);
        // an entry that does not fit is not written
        assert!(!o.dirent(40, 8, 2, libc::S_IFREG, b"abc"));
        assert_eq!(o.len(), 32);
    }

    #[test]
    fn attr_fields_sit_where_the_kernel_reads_them() {
        let mut buf = vec![0u8; 128];
        let a = attr(UNIX_EPOCH + Duration::new(5, 6));
        let n = Out::new(&mut buf).entry(Duration::new(2, 3), 7, &a).len();
        let f = Fields(&buf[..n]);
        assert_eq!((f.u64(0), f.u64(16), f.u64(24), f.u32(32), f.u32(36)), (7, 2, 2, 3, 3));
        // fuse_attr at 40: ino, size, blocks, atime, …, mode at 40 + 60
        assert_eq!((f.u64(40), f.u64(48), f.u64(56), f.u64(64), f.u32(40 + 48)), (7, 4096, 8, 5, 6));
        assert_eq!(f.u32(40 + 60), libc::S_IFREG | 0o644);
        assert_eq!((f.u32(40 + 64), f.u32(40 + 68), f.u32(40 + 72), f.u32(40 + 80)), (1, 1, 2, BLOCK_SIZE));
    }

    #[test]
    fn times_before_the_epoch_round_trip() {
        for t in [UNIX_EPOCH - Duration::new(5, 250), UNIX_EPOCH - Duration::from_secs(9), UNIX_EPOCH + Duration::new(3, 1)] {
            let (s, n) = split_time(t);
            assert_eq!(time(s as u64, n), t);
        }
    }

    #[test]
    fn names_split_at_nul() {
        let v: Vec<&[u8]> = names(b"old\0new\0").take(2).collect();
        assert_eq!(v, [b"old".as_slice(), b"new".as_slice()]);
    }
}
