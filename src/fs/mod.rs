//! The filesystem: a fuser-free core ([`core::FsCore`]) with the namespace semantics, inodes,
//! handles and staging, and a thin FUSE adapter ([`fuse`], mounted by [`mount`]) — the only
//! place `fuser` appears.

pub mod blobs;
pub mod budget;
pub mod core;
pub mod error;
pub mod fuse;
pub mod inodes;
pub mod io;
pub mod links;
pub mod lookups;
pub mod metrics;
pub mod mount;
pub mod namespace;
pub mod open;
pub mod passthrough;
pub mod publish;
pub mod read_buf;
pub mod request;
pub mod follow;
pub mod peers;
pub mod seqhash;
pub mod snapshot;
pub mod tree;
pub mod uring;
pub mod xattr;

use std::time::SystemTime;

/// Kind of a filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// directory
    Dir,
    /// regular file
    File,
    /// symbolic link
    Symlink,
    /// named pipe
    Fifo,
    /// unix socket
    Socket,
    /// character device
    CharDevice,
    /// block device
    BlockDevice,
}

impl Kind {
    /// The kind of a special file with the mode's file type bits, if it is one.
    pub fn special(format: u32) -> Option<Kind> {
        match format {
            libc::S_IFIFO => Some(Kind::Fifo),
            libc::S_IFSOCK => Some(Kind::Socket),
            libc::S_IFCHR => Some(Kind::CharDevice),
            libc::S_IFBLK => Some(Kind::BlockDevice),
            _ => None,
        }
    }
}

/// Attributes reported by `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// inode number
    pub ino: u64,
    /// size in bytes
    pub size: u64,
    /// 512-byte blocks
    pub blocks: u64,
    /// access time
    pub atime: SystemTime,
    /// modification time
    pub mtime: SystemTime,
    /// change time
    pub ctime: SystemTime,
    /// object kind
    pub kind: Kind,
    /// permission bits
    pub perm: u16,
    /// hard links
    pub nlink: u32,
    /// owner
    pub uid: u32,
    /// group
    pub gid: u32,
    /// device number of a device node
    pub rdev: u32,
}

impl Attr {
    /// A lookup's answer for a name that does not exist: inode 0, which with a TTL lets the
    /// kernel cache the miss (a negative entry).
    pub fn negative() -> Attr {
        let t = SystemTime::UNIX_EPOCH;
        Attr { ino: 0, size: 0, blocks: 0, atime: t, mtime: t, ctime: t, kind: Kind::File, perm: 0, nlink: 0, uid: 0, gid: 0, rdev: 0 }
    }
}

/// Who is calling.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// effective uid
    pub uid: u32,
    /// effective gid
    pub gid: u32,
}

/// A time given to `setattr`.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    /// the current time
    Now,
    /// this time
    At(SystemTime),
}

/// Changes requested by `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// new mode
    pub mode: Option<u32>,
    /// new owner
    pub uid: Option<u32>,
    /// new group
    pub gid: Option<u32>,
    /// new size (truncate / extend)
    pub size: Option<u64>,
    /// new atime
    pub atime: Option<SetTime>,
    /// new mtime
    pub mtime: Option<SetTime>,
}

/// How a file was opened, for the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// handle number
    pub fh: u64,
    /// the kernel may keep cached pages (the blob is the one it cached)
    pub keep_cache: bool,
    /// bypass the page cache (O_DIRECT)
    pub direct_io: bool,
    /// attributes changed (atime): the kernel's cached attributes should be dropped
    pub attr_changed: bool,
}

/// One directory entry of an `opendir` snapshot.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// inode
    pub ino: u64,
    /// kind
    pub kind: Kind,
    /// name
    pub name: Vec<u8>,
}

/// `statfs` result in 4 KiB blocks.
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    /// total blocks
    pub blocks: u64,
    /// free blocks
    pub bfree: u64,
    /// blocks available to unprivileged users
    pub bavail: u64,
    /// total inodes
    pub files: u64,
    /// free inodes
    pub ffree: u64,
}

/// A kernel cache entry to drop after another node changed the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inval {
    /// the entry `name` in directory `parent` (positive or negative)
    Entry(u64, Vec<u8>),
    /// the attributes of an inode
    Inode(u64),
}

/// Drops the kernel's cached entries (installed by the FUSE adapter).
pub type Invalidator = std::sync::Arc<dyn Fn(&[Inval]) + Send + Sync>;

/// Block size reported by `statfs` and `stat`.
pub const BLOCK_SIZE: u32 = 4096;
pub use crate::name::NAME_MAX;

/// [`crate::name::check`] as a filesystem error.
pub fn check_name(name: &[u8]) -> error::FsResult<()> {
    crate::name::check(name).map_err(error::FsError::from)
}
