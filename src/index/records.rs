//! Persisted records (bincode): inodes and blobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::blob::BlobId;
use crate::hlc::{self, Stamp};

/// A time: seconds and nanoseconds since the Unix epoch, held in 8 bytes the way ext4 holds
/// its times (an inode holds three: 12 bytes each before, 36 of an inode's 160). Seconds
/// cover 1901-12-13 to 2446-05-10, ext4's range; a time outside it is clamped to its end, as
/// ext4 does. Persisted as before: seconds (i64), then nanoseconds (u32).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "TsWire", into = "TsWire")]
pub struct Ts(
    /// `(secs - MIN_SECS) << 30 | nanos`: ordered as the time is
    u64,
);

/// The persisted form of a [`Ts`].
#[derive(Clone, Copy, Serialize, Deserialize)]
struct TsWire {
    secs: i64,
    nanos: u32,
}

impl From<TsWire> for Ts {
    fn from(w: TsWire) -> Self {
        Ts::new(w.secs, w.nanos)
    }
}

impl From<Ts> for TsWire {
    fn from(t: Ts) -> Self {
        TsWire { secs: t.secs(), nanos: t.nanos() }
    }
}

/// The epoch, as the two-field time was by default (a zero `u64` here would be 1901).
impl Default for Ts {
    fn default() -> Self {
        Ts::new(0, 0)
    }
}

impl std::fmt::Debug for Ts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ts").field("secs", &self.secs()).field("nanos", &self.nanos()).finish()
    }
}

impl Ts {
    /// The earliest time held (1901-12-13T20:45:52Z).
    pub const MIN_SECS: i64 = -(1 << 31);
    /// The latest second held (2446-05-10T22:38:55Z).
    pub const MAX_SECS: i64 = (1 << 34) - (1 << 31) - 1;

    /// `secs` and `nanos` (< 1e9; more is taken as the last nanosecond) since the epoch,
    /// clamped to the range held.
    pub fn new(secs: i64, nanos: u32) -> Self {
        let (secs, nanos) = match secs {
            s if s < Self::MIN_SECS => (Self::MIN_SECS, 0),
            s if s > Self::MAX_SECS => (Self::MAX_SECS, 999_999_999),
            s => (s, nanos.min(999_999_999)),
        };
        Ts(((secs - Self::MIN_SECS) as u64) << 30 | nanos as u64)
    }

    /// Whole seconds since the epoch (negative before it).
    pub fn secs(self) -> i64 {
        (self.0 >> 30) as i64 + Self::MIN_SECS
    }

    /// Nanoseconds past [`Ts::secs`].
    pub fn nanos(self) -> u32 {
        (self.0 & ((1 << 30) - 1)) as u32
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system(std::time::SystemTime::now())
    }

    /// Convert from `SystemTime` (times before the epoch are supported).
    pub fn from_system(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Ts::new(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (mut secs, mut nanos) = (-i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos());
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Ts::new(secs, nanos)
            }
        }
    }

    /// Convert to `SystemTime`.
    pub fn to_system(self) -> std::time::SystemTime {
        let (secs, nanos) = (self.secs(), self.nanos());
        let base = std::time::UNIX_EPOCH;
        if secs >= 0 {
            base + std::time::Duration::new(secs as u64, nanos)
        } else {
            base - std::time::Duration::from_secs(secs.unsigned_abs()) + std::time::Duration::from_nanos(nanos as u64)
        }
    }
}

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InodeKind {
    /// A directory; `parent` is the inode of `..`.
    Dir {
        /// parent directory
        parent: u64,
    },
    /// A regular file bound to an immutable blob.
    File {
        /// content address
        blob: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// target bytes
        target: Vec<u8>,
    },
    /// A FIFO, socket or device node: metadata only (the kernel serves FIFOs and sockets
    /// itself; devices are never opened on a `nodev` mount).
    Special {
        /// the file type bits of the mode (`S_IFIFO`, `S_IFSOCK`, `S_IFCHR`, `S_IFBLK`)
        format: u32,
        /// the device number of a device node
        rdev: u32,
    },
}

/// One inode, as persisted and as held in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeRecord {
    /// inode number (never reused)
    pub ino: u64,
    /// file / dir / symlink
    pub kind: InodeKind,
    /// permission bits (07777)
    pub perm: u16,
    /// owner
    pub uid: u32,
    /// group
    pub gid: u32,
    /// hard links (dirs: 2 + subdirectories)
    pub nlink: u32,
    /// size in bytes
    pub size: u64,
    /// access time
    pub atime: Ts,
    /// modification time
    pub mtime: Ts,
    /// change time
    pub ctime: Ts,
    /// `user.*` extended attributes
    pub xattrs: Xattrs,
    /// version of the name's content on a shared bucket (files and symlinks; zero elsewhere
    /// and in records from before stamps): persisted after the bincode body, see
    /// [`encode_inode`]
    #[serde(skip)]
    pub stamp: Stamp,
}

/// An inode's `user.*` extended attributes: nearly every inode has none, and an empty map
/// costs nothing but a null pointer (8 bytes instead of a `BTreeMap`'s 24 in every record).
/// Persisted exactly as the map it holds (bincode: length u64, then the pairs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(clippy::box_collection)] // the point: 8 bytes, not 24, when empty
pub struct Xattrs(Option<Box<BTreeMap<Vec<u8>, Vec<u8>>>>);

impl Xattrs {
    /// The value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Vec<u8>> {
        self.0.as_ref()?.get(name)
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Every (name, value), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    /// Every name, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.iter().map(|(k, _)| k)
    }

    /// Set `name`; returns the value it had.
    pub fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        self.0.get_or_insert_with(Default::default).insert(name, value)
    }

    /// Remove `name`; returns the value it had.
    pub fn remove(&mut self, name: &[u8]) -> Option<Vec<u8>> {
        let m = self.0.as_mut()?;
        let old = m.remove(name);
        if m.is_empty() {
            self.0 = None;
        }
        old
    }
}

impl Serialize for Xattrs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        static EMPTY: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.0.as_deref().unwrap_or(&EMPTY).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Xattrs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<Vec<u8>, Vec<u8>>::deserialize(d)?;
        Ok(Xattrs((!m.is_empty()).then(|| Box::new(m))))
    }
}

/// A blob this node knows about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// raw size in bytes
    pub size: u64,
}

/// Encode a record (bincode).
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // bincode serialization of these plain structs cannot fail
    bincode::serialize(v).unwrap_or_default()
}

/// Decode a record.
pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Option<T> {
    bincode::deserialize(b).ok()
}

/// Encode an inode: the bincode body, then its stamp if it has one (older readers ignore
/// trailing bytes; unstamped records are as before stamps).
pub fn encode_inode(rec: &InodeRecord) -> Vec<u8> {
    let body = encode(rec);
    if rec.stamp.is_set() {
        hlc::append(body, rec.stamp)
    } else {
        body
    }
}

/// Decode an inode made by [`encode_inode`] (or before stamps).
pub fn decode_inode(b: &[u8]) -> Option<InodeRecord> {
    let (mut rec, stamp): (InodeRecord, Stamp) = hlc::decode_stamped(b)?;
    rec.stamp = stamp;
    Some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_round_trip_including_before_epoch() {
        for t in [Ts::new(5, 7), Ts::new(-3, 250), Ts::now(), Ts::new(Ts::MIN_SECS, 0), Ts::new(Ts::MAX_SECS, 999_999_999)] {
            assert_eq!(Ts::from_system(t.to_system()), t);
            assert_eq!(Ts::new(t.secs(), t.nanos()), t);
        }
        assert_eq!((Ts::new(-3, 250).secs(), Ts::new(-3, 250).nanos()), (-3, 250));
        assert_eq!(std::mem::size_of::<Ts>(), 8);
        assert_eq!((Ts::default().secs(), Ts::default().nanos()), (0, 0), "the default is the epoch");
    }

    #[test]
    fn ts_orders_as_time_and_clamps_to_ext4s_range() {
        let mut times = [Ts::new(1, 0), Ts::new(-1, 999_999_999), Ts::new(0, 5), Ts::new(1 << 33, 1), Ts::new(-(1 << 30), 0)];
        times.sort();
        let pairs: Vec<(i64, u32)> = times.iter().map(|t| (t.secs(), t.nanos())).collect();
        assert_eq!(pairs, [(-(1 << 30), 0), (-1, 999_999_999), (0, 5), (1, 0), (1 << 33, 1)]);
        assert_eq!(Ts::new(i64::MIN, 7), Ts::new(Ts::MIN_SECS, 0));
        assert_eq!(Ts::new(i64::MAX, 7), Ts::new(Ts::MAX_SECS, 999_999_999));
        assert_eq!(Ts::new(1, 2_000_000_000).nanos(), 999_999_999);
        // 2446-05-10T22:38:55Z, 1901-12-13T20:45:52Z
        assert_eq!((Ts::MAX_SECS, Ts::MIN_SECS), (15_032_385_535, -2_147_483_648));
    }

    #[test]
    fn ts_persists_as_seconds_then_nanoseconds() {
        let t = Ts::new(-3, 250);
        let mut want = (-3i64).to_le_bytes().to_vec();
        want.extend(250u32.to_le_bytes());
        assert_eq!(encode(&t), want);
        assert_eq!(bincode::deserialize::<Ts>(&want).unwrap(), t);
    }

    /// Pins the persisted inode encoding.
    #[test]
    fn inode_record_snapshot() {
        let r = InodeRecord {
            ino: 2,
            kind: InodeKind::Dir { parent: 1 },
            perm: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            size: 0,
            atime: Ts::new(1, 0),
            mtime: Ts::new(1, 0),
            ctime: Ts::new(1, 0),
            xattrs: Xattrs::default(),
            stamp: Stamp::ZERO,
        };
        let enc = encode_inode(&r);
        assert_eq!(decode_inode(&enc), Some(r.clone()));
        assert_eq!(
            hex::encode(&enc),
            "0200000000000000000000000100000000000000ed0100000000000000000200000000000000000000000100000000000000000000000100000000000000000000000100000000000000000000000000000000000000"
        );
        // a stamped record is the same body and the stamp after it
        let stamped = InodeRecord { stamp: Stamp { hlc: 9, node: 3 }, ..r };
        let enc2 = encode_inode(&stamped);
        assert_eq!(&enc2[..enc.len()], &enc[..]);
        assert_eq!(decode_inode(&enc2), Some(stamped.clone()));
        // attributes are encoded as the map they are, and an emptied set is no set
        let mut with = InodeRecord { stamp: Stamp::ZERO, ..stamped };
        with.xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
        let enc3 = encode_inode(&with);
        let mut map = BTreeMap::new();
        map.insert(b"user.k".to_vec(), b"v".to_vec());
        assert_eq!(bincode::serialize(&map).unwrap(), enc3[enc.len() - 8..].to_vec());
        assert_eq!(decode_inode(&enc3), Some(with.clone()));
        with.xattrs.remove(b"user.k");
        assert_eq!(with.xattrs, Xattrs::default());
        assert_eq!(encode_inode(&with), enc);
    }
}
