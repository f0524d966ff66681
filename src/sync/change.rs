//! Change records: what one node tells the others about its namespace, by path.
//!
//! Inode numbers are private to a node, so changes name paths (`ns/dir/file`, relative to the
//! mount root). A node appends its changes, in the order it made them, to its own journal in
//! the object store: `<prefix>/journal/<node>/<first seq, 20 digits>`, one self-verifying
//! envelope per batch of consecutive changes. Sequence numbers increase by one per change and
//! never repeat, so a reader's position in a node's journal is one number (its cursor) and the
//! next batch is found with one start-after listing.

use serde::{Deserialize, Serialize};

use crate::blob::BlobId;
use crate::codec;
use crate::hlc::Stamp;
use crate::index::records::Ts;

/// Where nodes register (`nodes/<node id>`), so readers can find every journal.
pub const NODES: &str = "nodes";
/// Where the journals live (`journal/<node id>/<seq>`).
pub const JOURNAL: &str = "journal";

/// Ownership, permission bits and modification time of a published name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    /// permission bits
    pub perm: u16,
    /// owner
    pub uid: u32,
    /// group
    pub gid: u32,
    /// modification time
    pub mtime: Ts,
}

/// One namespace change, by path. Applying a change is idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// `path` is a regular file holding `blob` (created, rewritten or its attributes changed).
    File {
        /// the name
        path: Vec<u8>,
        /// its content
        blob: BlobId,
        /// raw size of the blob
        size: u64,
        /// attributes
        attrs: Attrs,
    },
    /// `path` is a symbolic link to `target`.
    Symlink {
        /// the name
        path: Vec<u8>,
        /// link target
        target: Vec<u8>,
        /// attributes
        attrs: Attrs,
    },
    /// `path` is a directory.
    Dir {
        /// the name
        path: Vec<u8>,
        /// attributes
        attrs: Attrs,
    },
    /// `path` was removed. For a file, `blob` is the content it had: a reader whose file has
    /// different (newer) content keeps it.
    Remove {
        /// the name
        path: Vec<u8>,
        /// content of the removed file, if it was one
        blob: Option<BlobId>,
    },
    /// `from` was renamed to `to`, replacing what was there.
    Rename {
        /// old name
        from: Vec<u8>,
        /// new name
        to: Vec<u8>,
    },
}

impl Change {
    /// The blob this change makes a name refer to, if any.
    pub fn blob(&self) -> Option<BlobId> {
        match self {
            Change::File { blob, .. } => Some(*blob),
            _ => None,
        }
    }
}

/// Consecutive changes of one node, as stored in one journal object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// the node that made the changes
    pub node: String,
    /// (sequence number, change), ascending
    pub changes: Vec<(u64, Change)>,
    /// when the batch was sealed for publication, milliseconds since the epoch by its node's
    /// clock (`None` from writers before this field): a trailer after the bincode body, which
    /// older readers ignore
    #[serde(skip)]
    pub sealed_ms: Option<u64>,
    /// the content of small blobs the changes name, carried in the batch so that one PUT
    /// makes a small file durable and visible (each is also uploaded as its own object
    /// afterwards): a second trailer, after the time ([`INLINE_MAGIC`])
    #[serde(skip)]
    pub inline: Vec<Inline>,
    /// the version stamp of each change, in the order of `changes` (empty from writers before
    /// stamps, whose changes apply unstamped): a third trailer ([`STAMPS_MAGIC`])
    #[serde(skip)]
    pub stamps: Vec<Stamp>,
}

/// A small blob carried inside a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inline {
    /// its id (the BLAKE3 hash of `bytes`: a reader checks it)
    pub id: BlobId,
    /// its raw content
    pub bytes: Vec<u8>,
}

impl Inline {
    /// Whether the bytes are the blob's (a reader adopts nothing else).
    pub fn verified(&self) -> bool {
        BlobId::of(&self.bytes) == self.id
    }
}

/// Largest blob carried inside a batch.
pub const INLINE_MAX: u64 = 64 << 10;
/// Most inline bytes in one batch.
pub const INLINE_BUDGET: u64 = 4 << 20;
/// Starts the inline trailer (batch format 2); format 1 ends after the time.
pub const INLINE_MAGIC: &[u8; 4] = b"WBI2";
/// Starts the stamps trailer (batch format 3), after the inline one if there is one.
pub const STAMPS_MAGIC: &[u8; 4] = b"WBS3";

impl Batch {
    /// Sequence number of the last change.
    pub fn last_seq(&self) -> u64 {
        self.changes.last().map(|c| c.0).unwrap_or(0)
    }

    /// The stamp of the `i`-th change ([`Stamp::ZERO`] if the writer stamped none).
    pub fn stamp(&self, i: usize) -> Stamp {
        self.stamps.get(i).copied().unwrap_or(Stamp::ZERO)
    }

    /// Encode as a self-verifying envelope, stamped with the time now: the bincode body, the
    /// time (8 bytes), when blobs are carried [`INLINE_MAGIC`] and their bincode list, and
    /// when changes are stamped [`STAMPS_MAGIC`] and the bincode list of stamps.
    pub fn seal(&self) -> Vec<u8> {
        let mut body = bincode::serialize(self).expect("a batch always serializes");
        body.extend_from_slice(&now_ms().to_le_bytes());
        if !self.inline.is_empty() {
            body.extend_from_slice(INLINE_MAGIC);
            bincode::serialize_into(&mut body, &self.inline).expect("inline blobs always serialize");
        }
        if self.stamps.iter().any(Stamp::is_set) {
            body.extend_from_slice(STAMPS_MAGIC);
            bincode::serialize_into(&mut body, &self.stamps).expect("stamps always serialize");
        }
        codec::seal_meta(&body)
    }

    /// Decode and verify an envelope made by [`Batch::seal`] (or by a writer before the
    /// time or the inline trailer).
    pub fn open(env: &[u8]) -> Result<Batch, String> {
        let body = codec::open_meta(env).map_err(|e| e.to_string())?;
        let mut rest: &[u8] = &body;
        let mut batch: Batch = bincode::deserialize_from(&mut rest).map_err(|e| format!("undecodable change batch: {e}"))?;
        if let Some((time, mut more)) = rest.split_first_chunk::<8>() {
            batch.sealed_ms = Some(u64::from_le_bytes(*time));
            if let Some(mut list) = more.strip_prefix(INLINE_MAGIC) {
                batch.inline = bincode::deserialize_from(&mut list).map_err(|e| format!("undecodable inline blobs: {e}"))?;
                more = list;
            }
            if let Some(list) = more.strip_prefix(STAMPS_MAGIC) {
                batch.stamps = bincode::deserialize(list).map_err(|e| format!("undecodable stamps: {e}"))?;
                if batch.stamps.len() != batch.changes.len() {
                    return Err(format!("{} stamps for {} changes", batch.stamps.len(), batch.changes.len()));
                }
            }
        }
        Ok(batch)
    }

    /// The content of `id`, if the batch carries it.
    pub fn inline_blob(&self, id: &BlobId) -> Option<&Inline> {
        self.inline.iter().find(|i| i.id == *id)
    }
}

/// This node's clock in milliseconds since the epoch: the time a batch is sealed with, and
/// what a reader measures its delay against.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The registry entry of a node (`nodes/<node>`).
pub fn registry_key(node: &str) -> String {
    format!("{NODES}/{node}")
}

/// The journal directory of a node.
pub fn journal_dir(node: &str) -> String {
    format!("{JOURNAL}/{node}")
}

/// Key of the batch of `node` whose first change is `seq`; also the start-after key that
/// lists the batches after a reader's cursor `seq`.
pub fn batch_key(node: &str, seq: u64) -> String {
    format!("{JOURNAL}/{node}/{seq:020}")
}

/// Node id and first sequence number from a batch key.
pub fn parse_batch_key(key: &str) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(JOURNAL)?.strip_prefix('/')?;
    let (node, seq) = rest.rsplit_once('/')?;
    Some((node, seq.parse().ok()?))
}

/// A node id is a short lowercase hex or alphanumeric token (it becomes part of object keys).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Split a published path into its components, rejecting anything a well-behaved node could
/// not have written (empty components, `.`, `..`, NUL, over-long names).
pub fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    let ok = parts.iter().all(|p| crate::name::check(p).is_ok());
    ok.then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_and_corruption() {
        let attrs = Attrs { perm: 0o644, uid: 1, gid: 2, mtime: Ts::new(5, 6) };
        let b = Batch {
            node: "n1".into(),
            changes: vec![
                (7, Change::File { path: b"ns/a".to_vec(), blob: BlobId::of(b"x"), size: 1, attrs }),
                (8, Change::Rename { from: b"ns/a".to_vec(), to: b"ns/b".to_vec() }),
            ],
            sealed_ms: None,
            inline: Vec::new(),
            stamps: Vec::new(),
        };
        let env = b.seal();
        let got = Batch::open(&env).unwrap();
        let now = now_ms();
        assert!(got.sealed_ms.is_some_and(|t| t <= now && t + 60_000 > now), "{:?}", got.sealed_ms);
        assert_eq!(Batch { sealed_ms: None, ..got }, b);
        // a batch from a writer before the time trailer
        let old = codec::seal_meta(&bincode::serialize(&b).unwrap());
        assert_eq!(Batch::open(&old).unwrap(), b);
        assert_eq!(b.last_seq(), 8);
        let mut bad = env.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(Batch::open(&bad).is_err());

        // format 2 carries small blobs after the time; a format-1 reader stops at the time
        let carried = Batch { inline: vec![Inline { id: BlobId::of(b"x"), bytes: b"x".to_vec() }], ..b.clone() };
        let got = Batch::open(&carried.seal()).unwrap();
        assert!(got.sealed_ms.is_some());
        assert_eq!(got.inline, carried.inline);
        assert!(got.inline_blob(&BlobId::of(b"x")).is_some_and(Inline::verified));
        assert!(got.inline_blob(&BlobId::of(b"y")).is_none());
        assert!(!Inline { id: BlobId::of(b"x"), bytes: b"y".to_vec() }.verified(), "bytes that are not the blob's");

        // format 3 stamps each change, after the carried blobs (or after the time)
        let stamps = vec![Stamp { hlc: 1 << 20, node: 9 }, Stamp { hlc: 2 << 20, node: 9 }];
        for base in [b.clone(), carried.clone()] {
            let stamped = Batch { stamps: stamps.clone(), ..base.clone() };
            let got = Batch::open(&stamped.seal()).unwrap();
            assert_eq!((got.stamps.clone(), got.inline.clone()), (stamps.clone(), base.inline.clone()));
            assert_eq!((got.stamp(1), got.stamp(5)), (stamps[1], Stamp::ZERO));
        }
        assert_eq!(Batch::open(&carried.seal()).unwrap().stamp(0), Stamp::ZERO, "an unstamped batch");
        let short = Batch { stamps: stamps[..1].to_vec(), ..b.clone() };
        assert!(Batch::open(&short.seal()).is_err(), "stamps that do not match the changes");
    }

    #[test]
    fn keys_sort_by_sequence_and_parse() {
        assert!(batch_key("n", 9) < batch_key("n", 10));
        assert_eq!(parse_batch_key(&batch_key("abc", 42)), Some(("abc", 42)));
        assert_eq!(parse_batch_key("journal/abc/x"), None);
        assert!(valid_node_id("0af3") && !valid_node_id("a/b") && !valid_node_id(""));
        assert_eq!(components(b"ns/d/f").unwrap().len(), 3);
        assert!(components(b"ns//f").is_none() && components(b"ns/../f").is_none() && components(b"").is_none());
    }
}
