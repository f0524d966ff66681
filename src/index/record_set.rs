//! A set of index records (key, value) in one buffer, as the load at mount and a snapshot
//! carry them: each record is its key length (u32 LE), value length (u32 LE), key, value — the
//! layout of an index checkpoint's body, which is used as it is read.
//!
//! A vector of (key, value) vectors made two small allocations per record, six per name. Freed
//! after the load, they left the heap's pages pinned by the long-lived blocks allocated among
//! them (each name's one), and they cost two mallocs and two frees per record; one buffer is
//! one mapping, returned whole.

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every key-value pair handed over, in the order pushed (key order when scanned).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Records {
    buf: Vec<u8>,
    count: usize,
}

impl Records {
    /// An empty set with room for `bytes` of records (8 bytes of lengths each, plus key and
    /// value).
    pub fn with_capacity(bytes: usize) -> Self {
        Records { buf: Vec::with_capacity(bytes), count: 0 }
    }

    /// The records laid out in `buf` (see the module), if it holds exactly `count` whole ones.
    pub fn from_raw(buf: Vec<u8>, count: usize) -> Option<Self> {
        let r = Records { buf, count };
        let mut it = r.iter();
        let mut seen = 0;
        while it.next().is_some() {
            seen += 1;
        }
        (it.rest.is_empty() && seen == count).then_some(r)
    }

    /// Add a record.
    pub fn push(&mut self, k: &[u8], v: &[u8]) {
        let len = |s: &[u8]| u32::try_from(s.len()).expect("an index record under 4 GiB");
        self.buf.extend_from_slice(&len(k).to_le_bytes());
        self.buf.extend_from_slice(&len(v).to_le_bytes());
        self.buf.extend_from_slice(k);
        self.buf.extend_from_slice(v);
        self.count += 1;
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every (key, value), in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.buf }
    }

    /// The same records in key order (then value order): one new buffer and one vector of
    /// offsets, no allocation per record.
    pub fn sorted(self) -> Records {
        let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(self.count);
        let mut at = 0;
        for (k, v) in self.iter() {
            let start = at + 8;
            spans.push((start, start + k.len(), start + k.len() + v.len()));
            at = start + k.len() + v.len();
        }
        let buf = &self.buf;
        spans.sort_unstable_by(|a, b| (&buf[a.0..a.1], &buf[a.1..a.2]).cmp(&(&buf[b.0..b.1], &buf[b.1..b.2])));
        let mut out = Records::with_capacity(self.buf.len());
        for (s, m, e) in spans {
            out.push(&buf[s..m], &buf[m..e]);
        }
        out
    }

    /// Every (key, value) as owned vectors, in order (for tests and tools).
    pub fn to_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for Records {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut r = Records::default();
        for (k, v) in iter {
            r.push(k.as_ref(), v.as_ref());
        }
        r
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("count", &self.count).field("bytes", &self.buf.len()).finish()
    }
}

/// The records of a [`Records`], in order.
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let len = |at: usize| self.rest.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        let (kl, vl) = (len(0)?, len(4)?);
        let k = self.rest.get(8..8 + kl)?;
        let v = self.rest.get(8 + kl..8 + kl + vl)?;
        self.rest = &self.rest[8 + kl + vl..];
        Some((k, v))
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Serialized as the sequence of (key, value) byte vectors it replaced: a snapshot in the
/// bucket reads the same whichever wrote it.
impl Serialize for Records {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.count))?;
        for kv in self.iter() {
            seq.serialize_element(&kv)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Records {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Records;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of (key, value) byte strings")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Records, A::Error> {
                let mut r = Records::default();
                while let Some((k, v)) = seq.next_element::<(Vec<u8>, Vec<u8>)>()? {
                    r.push(&k, &v);
                }
                Ok(r)
            }
        }
        d.deserialize_seq(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..300u32).map(|i| (format!("key{i}").into_bytes(), vec![i as u8; (i % 9) as usize])).chain([(Vec::new(), Vec::new())]).collect()
    }

    #[test]
    fn records_come_back_in_order_with_their_count() {
        let r: Records = pairs().into_iter().collect();
        assert_eq!(r.len(), 301);
        assert_eq!(r.to_pairs(), pairs());
    }

    #[test]
    fn sorted_orders_by_key_then_value() {
        let mut want = pairs();
        want.extend([(b"key7".to_vec(), b"a".to_vec()), (b"k".to_vec(), b"zz".to_vec())]);
        let r: Records = want.iter().rev().cloned().collect();
        want.sort();
        assert_eq!(r.sorted().to_pairs(), want);
        assert_eq!(Records::default().sorted(), Records::default());
    }

    #[test]
    fn a_snapshot_encodes_as_the_vector_of_pairs_it_replaced() {
        let r: Records = pairs().into_iter().collect();
        let mine = bincode::serialize(&r).unwrap();
        assert_eq!(mine, bincode::serialize(&pairs()).unwrap());
        assert_eq!(bincode::deserialize::<Records>(&mine).unwrap(), r);
    }

    #[test]
    fn a_raw_buffer_is_taken_only_whole_and_with_its_count() {
        let r: Records = pairs().into_iter().collect();
        assert_eq!(Records::from_raw(r.buf.clone(), 301), Some(r.clone()));
        assert_eq!(Records::from_raw(r.buf.clone(), 300), None, "a wrong count");
        assert_eq!(Records::from_raw(r.buf[..r.buf.len() - 1].to_vec(), 301), None, "a cut record");
        let mut long = r.buf.clone();
        long.extend_from_slice(&[1, 0, 0]);
        assert_eq!(Records::from_raw(long, 301), None, "trailing bytes");
        assert_eq!(Records::from_raw(Vec::new(), 0), Some(Records::default()));
    }
}
