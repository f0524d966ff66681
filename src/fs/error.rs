//! Errors of the filesystem core and the one place they become errnos.

use thiserror::Error;

use crate::index::IndexError;
use crate::tiers::StoreError;

/// Why a filesystem operation failed.
#[derive(Debug, Error)]
pub enum FsError {
    /// ENOENT
    #[error("no such file or directory")]
    NotFound,
    /// EEXIST
    #[error("file exists")]
    Exists,
    /// ENOTDIR
    #[error("not a directory")]
    NotDir,
    /// EISDIR
    #[error("is a directory")]
    IsDir,
    /// ETXTBSY: the file is held in a mode that excludes this open
    #[error("text file busy: {0}")]
    Busy(&'static str),
    /// ENOTEMPTY
    #[error("directory not empty")]
    NotEmpty,
    /// EINVAL
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// ENAMETOOLONG
    #[error("name too long")]
    NameTooLong,
    /// EPERM
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// EOPNOTSUPP
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    /// ENODATA (xattr absent)
    #[error("no such attribute")]
    NoAttr,
    /// E2BIG (xattr value too large)
    #[error("attribute value too large")]
    AttrTooBig,
    /// ERANGE (caller's buffer too small / xattr name too long)
    #[error("result does not fit")]
    Range,
    /// EFBIG
    #[error("file too large")]
    TooBig,
    /// ENOSPC: a configured bound was reached
    #[error("no space: {0}")]
    NoSpace(&'static str),
    /// EBADF
    #[error("bad file handle")]
    BadHandle,
    /// The blob store failed (EIO unless the OS said otherwise).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metadata index failed (EIO).
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Local I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::name::NameError> for FsError {
    fn from(e: crate::name::NameError) -> Self {
        match e {
            crate::name::NameError::TooLong => FsError::NameTooLong,
            crate::name::NameError::Invalid => FsError::Invalid("bad name"),
        }
    }
}

impl FsError {
    /// The errno reported to the kernel. Every mapping decision lives here.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::Busy(_) => libc::ETXTBSY,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::NotSupported(_) => libc::EOPNOTSUPP,
            FsError::NoAttr => libc::ENODATA,
            FsError::AttrTooBig => libc::E2BIG,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::EFBIG,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::BadHandle => libc::EBADF,
            FsError::Store(StoreError::Io { source, .. }) | FsError::Io(source) => match source.raw_os_error() {
                Some(e @ (libc::ENOSPC | libc::EDQUOT | libc::EFBIG)) => e,
                _ => libc::EIO,
            },
            FsError::Store(_) | FsError::Index(_) => libc::EIO,
        }
    }

    /// Whether this is an expected outcome (ENOENT on lookup…) rather than a fault worth a log
    /// line at warn level.
    pub fn is_fault(&self) -> bool {
        matches!(self, FsError::Store(_) | FsError::Index(_) | FsError::Io(_))
    }
}

/// Result of a filesystem operation.
pub type FsResult<T> = Result<T, FsError>;
