//! Version stamps of names shared by several nodes: a hybrid logical clock (HLC) reading
//! plus the writing node, totally ordered, so that every node picks the same winner among
//! concurrent writes of one name (the greater stamp) whatever order it learns of them in.
//!
//! A reading is `(milliseconds since the epoch << 16) | counter`: it follows the wall clock,
//! never goes back, and is pushed past every stamp a node applies from another node, so a
//! change made after seeing another one always carries a greater stamp, even on a node whose
//! clock runs behind. Equal readings on two nodes are ordered by the node's tag (the first 8
//! bytes of the BLAKE3 of its id).

use serde::{Deserialize, Serialize};

/// A version stamp; [`Stamp::ZERO`] is "unstamped" (records and changes from before stamps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// the clock reading (compared first)
    pub hlc: u64,
    /// the node's tag (breaks ties)
    pub node: u64,
}

/// Bytes of an encoded stamp.
pub const STAMP_LEN: usize = 16;

impl Stamp {
    /// No stamp.
    pub const ZERO: Stamp = Stamp { hlc: 0, node: 0 };

    /// Whether this is a real stamp.
    pub fn is_set(&self) -> bool {
        *self != Self::ZERO
    }

    /// The wall-clock milliseconds of the reading.
    pub fn ms(&self) -> u64 {
        self.hlc >> 16
    }

    /// Little-endian `hlc`, then `node`.
    pub fn to_bytes(self) -> [u8; STAMP_LEN] {
        let mut b = [0u8; STAMP_LEN];
        b[..8].copy_from_slice(&self.hlc.to_le_bytes());
        b[8..].copy_from_slice(&self.node.to_le_bytes());
        b
    }

    /// The inverse of [`Self::to_bytes`]; `None` unless exactly [`STAMP_LEN`] bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Stamp> {
        let b: &[u8; STAMP_LEN] = b.try_into().ok()?;
        let (h, n) = b.split_at(8);
        Some(Stamp { hlc: u64::from_le_bytes(h.try_into().ok()?), node: u64::from_le_bytes(n.try_into().ok()?) })
    }
}

/// The tie-breaking tag of a node id.
pub fn node_tag(node: &str) -> u64 {
    let h = blake3::hash(node.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("a blake3 hash has 32 bytes"))
}

/// One node's hybrid logical clock. Not synchronized: it lives under the lock that orders the
/// node's changes (the tree's), so stamps also increase in the order the changes are made.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    last: u64,
    node: u64,
}

impl Clock {
    /// A clock for the node `node`.
    pub fn new(node: &str) -> Self {
        Clock { last: 0, node: node_tag(node) }
    }

    /// Stamp as the node `node` from now on (what the clock observed stays).
    pub fn set_node(&mut self, node: &str) {
        self.node = node_tag(node);
    }

    /// A stamp greater than every stamp this clock issued or observed.
    pub fn tick(&mut self) -> Stamp {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.next_at(now.as_millis() as u64)
    }

    /// [`Self::tick`] with the wall clock reading `now_ms` (tests).
    pub fn next_at(&mut self, now_ms: u64) -> Stamp {
        self.last = (now_ms << 16).max(self.last + 1);
        Stamp { hlc: self.last, node: self.node }
    }

    /// Take note of a stamp made elsewhere (or found in the records at mount).
    pub fn observe(&mut self, s: Stamp) {
        self.last = self.last.max(s.hlc);
    }
}

/// `bytes` followed by the encoded `stamp`.
pub fn append(mut bytes: Vec<u8>, stamp: Stamp) -> Vec<u8> {
    bytes.extend_from_slice(&stamp.to_bytes());
    bytes
}

/// Split a record made by [`append`] (or an older one without a stamp) into the bincode value
/// and its stamp: the value is decoded first, and exactly [`STAMP_LEN`] bytes after it are the
/// stamp; nothing after it means [`Stamp::ZERO`].
pub fn decode_stamped<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<(T, Stamp)> {
    let mut rest = b;
    let v: T = bincode::deserialize_from(&mut rest).ok()?;
    let stamp = if rest.is_empty() { Stamp::ZERO } else { Stamp::from_bytes(rest)? };
    Some((v, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_never_go_back_and_pass_what_they_observe() {
        let mut c = Clock::new("a");
        let s1 = c.next_at(1000);
        let s2 = c.next_at(1000);
        let s3 = c.next_at(900); // the wall clock stepped back
        assert!(s1 < s2 && s2 < s3);
        assert_eq!(s1.ms(), 1000);
        let far = Stamp { hlc: 5000 << 16, node: node_tag("b") };
        c.observe(far);
        let s4 = c.next_at(1001);
        assert!(s4 > far, "a change made after seeing another is greater: {s4:?} {far:?}");
        c.observe(s1);
        assert!(c.next_at(0) > s4, "observing an older stamp moves nothing back");
    }

    #[test]
    fn equal_readings_are_ordered_by_node() {
        let (mut a, mut b) = (Clock::new("a"), Clock::new("b"));
        let (sa, sb) = (a.next_at(7), b.next_at(7));
        assert_eq!(sa.hlc, sb.hlc);
        assert_ne!(sa, sb);
        assert_eq!(sa.cmp(&sb), node_tag("a").cmp(&node_tag("b")));
    }

    #[test]
    fn stamped_records_round_trip_and_older_ones_read_as_zero() {
        let s = Stamp { hlc: 42, node: 7 };
        assert_eq!(Stamp::from_bytes(&s.to_bytes()), Some(s));
        let v: (u32, String) = (5, "x".into());
        let enc = append(bincode::serialize(&v).unwrap(), s);
        assert_eq!(decode_stamped::<(u32, String)>(&enc), Some((v.clone(), s)));
        let old = bincode::serialize(&v).unwrap();
        assert_eq!(decode_stamped::<(u32, String)>(&old), Some((v, Stamp::ZERO)));
        assert_eq!(decode_stamped::<(u32, String)>(&enc[..enc.len() - 1]), None, "a torn stamp is not a stamp");
    }
}
