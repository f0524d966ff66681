//! Key layout of the SlateDB index. Every key starts with one prefix byte; ids are big-endian
//! so that scans come out in id order.
//!
//! | key                                   | value                              | meaning                         |
//! |---------------------------------------|------------------------------------|---------------------------------|
//! | `m` `format`                          | u32 BE                             | index format version (1)        |
//! | `m` `next_ino`                        | u64 BE                             | next inode number to allocate   |
//! | `m` `checkpoint`                      | 16-byte token                      | the last clean close's checkpoint |
//! | `i` ino:u64 BE                        | bincode `InodeRecord`              | an inode (file, dir, symlink)   |
//! | `d` parent:u64 BE name bytes          | child ino:u64 BE                   | a directory entry               |
//! | `b` blake3:32                         | bincode `BlobRecord`               | a blob known to this node       |
//! | `u` blake3:32                         | empty                              | blob queued for upload          |
//! | `o` seq:u64 BE                        | bincode `sync::Change`             | change not yet in the journal   |
//! | `c` node id bytes                     | u64 BE                             | last change seq seen of a node  |
//! | `t` path bytes                        | `hlc::Stamp` (16 bytes)            | a removed name's last version   |
//!
//! Blob reference counts are not stored: they are recomputed from the inodes at mount, so a
//! crash can never leave a count that disagrees with the tree.

use crate::blob::BlobId;

/// Prefix of metadata keys.
pub const META: u8 = b'm';
/// Prefix of inode keys.
pub const INODE: u8 = b'i';
/// Prefix of directory-entry keys.
pub const DIRENT: u8 = b'd';
/// Prefix of blob keys.
pub const BLOB: u8 = b'b';
/// Prefix of upload-queue keys.
pub const UPLOAD: u8 = b'u';

/// Prefix of outbox keys (changes waiting to be published in the bucket's journal).
pub const OUTBOX: u8 = b'o';
/// Prefix of journal cursors (per node: the last change applied, or for this node published).
pub const CURSOR: u8 = b'c';

/// Prefix of tombstones (a removed name and the version it had, so an older write that
/// arrives late from another node does not bring it back).
pub const TOMB: u8 = b't';

/// Index format version written at `m format`.
pub const FORMAT: u32 = 1;

/// `m` + `format`.
pub fn format_version() -> Vec<u8> {
    [&[META][..], b"format"].concat()
}

/// `m` + `checkpoint`: the token of the checkpoint file the last clean close wrote
/// ([`crate::index::checkpoint`]).
pub fn checkpoint() -> Vec<u8> {
    [&[META][..], b"checkpoint"].concat()
}

/// `m` + `next_ino`.
pub fn next_ino() -> Vec<u8> {
    [&[META][..], b"next_ino"].concat()
}

/// `i` + ino.
pub fn inode(ino: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(INODE);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// `d` + parent + name.
pub fn dirent(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + name.len());
    k.push(DIRENT);
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// `b` + blob id.
pub fn blob(id: &BlobId) -> Vec<u8> {
    [&[BLOB][..], &id.0].concat()
}

/// `u` + blob id.
pub fn upload(id: &BlobId) -> Vec<u8> {
    [&[UPLOAD][..], &id.0].concat()
}

/// `o` + seq.
pub fn outbox(seq: u64) -> Vec<u8> {
    [&[OUTBOX][..], &seq.to_be_bytes()].concat()
}

/// `c` + node id.
pub fn cursor(node: &str) -> Vec<u8> {
    [&[CURSOR][..], node.as_bytes()].concat()
}

/// Decode a `c` record: the node id and its last change seq.
pub fn decode_cursor<'a>(key: &'a [u8], value: &[u8]) -> Option<(&'a str, u64)> {
    let node = std::str::from_utf8(key.get(1..)?).ok()?;
    Some((node, u64::from_be_bytes(value.try_into().ok()?)))
}

/// `t` + published path.
pub fn tomb(path: &[u8]) -> Vec<u8> {
    [&[TOMB][..], path].concat()
}

/// Decode a u64 from the 8 bytes after the prefix byte.
pub fn id_after_prefix(key: &[u8]) -> Option<u64> {
    key.get(1..9)?.try_into().ok().map(u64::from_be_bytes)
}

/// Decode `(parent, name)` from a dirent key.
pub fn split_dirent(key: &[u8]) -> Option<(u64, &[u8])> {
    Some((id_after_prefix(key)?, key.get(9..)?))
}

/// Decode a blob id from a `b`/`u` key.
pub fn blob_after_prefix(key: &[u8]) -> Option<BlobId> {
    key.get(1..33)?.try_into().ok().map(BlobId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_id() {
        assert!(inode(1) < inode(2) && inode(255) < inode(256));
        assert_eq!(id_after_prefix(&inode(77)), Some(77));
        let k = dirent(5, b"name.bin");
        assert_eq!(split_dirent(&k), Some((5, &b"name.bin"[..])));
        let id = BlobId::of(b"x");
        assert_eq!(blob_after_prefix(&blob(&id)), Some(id));
        assert_eq!(blob_after_prefix(&upload(&id)), Some(id));
        assert_eq!(inode(1)[0], b'i');
        assert_eq!(hex::encode(inode(0x0102)), "690000000000000102");
        assert_eq!(tomb(b"ns/f"), b"tns/f");
    }
}
