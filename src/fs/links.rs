//! An inode as the tree holds it: its record and its names, (directory, name) per link, for
//! publishing changes by path. The names live in the inode itself (a separate table keyed by
//! inode cost a 40-byte slot, half of them empty, per name), and nearly every inode has exactly
//! one, held inline (no vector).

use crate::index::records::InodeRecord;

/// An inode in the tree: the persisted record, and its links (not persisted: derived from the
/// directory entries at mount).
#[derive(Debug)]
pub struct Inode {
    /// what the index holds
    pub rec: InodeRecord,
    /// where it is linked
    pub links: Links,
}

impl Inode {
    /// A record not linked anywhere yet.
    pub fn new(rec: InodeRecord) -> Self {
        Inode { rec, links: Links::None }
    }
}

impl std::ops::Deref for Inode {
    type Target = InodeRecord;

    fn deref(&self) -> &InodeRecord {
        &self.rec
    }
}

impl std::ops::DerefMut for Inode {
    fn deref_mut(&mut self) -> &mut InodeRecord {
        &mut self.rec
    }
}

/// An inode's links, in the order they were made.
#[derive(Clone, Debug, Default)]
pub enum Links {
    /// unlinked (new, or removed but still open)
    #[default]
    None,
    /// the usual case
    One(u64, Name),
    /// hard links (boxed: the usual case stays 16 bytes)
    Many(Box<Vec<(u64, Name)>>),
}

/// A name in a directory: one heap block (count, length, bytes) shared by the directory's entry
/// and the inode's link, held by an 8-byte pointer (an `Arc<[u8]>` is 16: a million names
/// paid 8 bytes more in each of the directory's B-tree and the inode).
#[derive(Clone)]
pub struct Name(triomphe::ThinArc<(), u8>);

impl From<&[u8]> for Name {
    fn from(bytes: &[u8]) -> Self {
        Name(triomphe::ThinArc::from_header_and_slice((), bytes))
    }
}

impl std::ops::Deref for Name {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0.slice
    }
}

impl std::borrow::Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte order, as `[u8]` (a directory's B-tree is looked up with `&[u8]`).
impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

impl Links {
    /// A first link.
    pub fn new(parent: u64, name: Name) -> Self {
        Links::One(parent, name)
    }

    /// Add a link.
    pub fn push(&mut self, parent: u64, name: Name) {
        match std::mem::take(self) {
            Links::None => *self = Links::new(parent, name),
            Links::One(p, n) => *self = Links::Many(Box::new(vec![(p, n), (parent, name)])),
            Links::Many(mut v) => {
                v.push((parent, name));
                *self = Links::Many(v);
            }
        }
    }

    /// Remove the link `name` in `parent`; returns whether none is left.
    pub fn remove(&mut self, parent: u64, name: &[u8]) -> bool {
        match self {
            Links::None => true,
            Links::One(p, n) => {
                if *p == parent && **n == *name {
                    *self = Links::None;
                }
                matches!(self, Links::None)
            }
            Links::Many(v) => {
                v.retain(|(p, n)| !(*p == parent && **n == *name));
                match v.as_slice() {
                    [] => {
                        *self = Links::None;
                        true
                    }
                    [(p, n)] => {
                        *self = Links::One(*p, n.clone());
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    /// How many links.
    pub fn len(&self) -> usize {
        match self {
            Links::None => 0,
            Links::One(..) => 1,
            Links::Many(v) => v.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first link.
    pub fn first(&self) -> Option<(u64, &[u8])> {
        self.iter().next()
    }

    /// Every link.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let (one, many) = match self {
            Links::None => (None, &[][..]),
            Links::One(p, n) => (Some((*p, &**n)), &[][..]),
            Links::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().map(|(p, n)| (*p, &**n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_link_inline_more_in_a_vector_and_back() {
        let mut l = Links::new(1, b"a"[..].into());
        assert_eq!(l.first(), Some((1, &b"a"[..])));
        l.push(2, b"b"[..].into());
        l.push(1, b"c"[..].into());
        assert_eq!(l.iter().collect::<Vec<_>>(), [(1, &b"a"[..]), (2, &b"b"[..]), (1, &b"c"[..])]);
        assert!(!l.remove(1, b"a"));
        assert!(!l.remove(9, b"b"));
        assert!(!l.remove(2, b"b"));
        assert!(matches!(l, Links::One(1, _)));
        assert_eq!(l.first(), Some((1, &b"c"[..])));
        assert!(!l.remove(1, b"a"), "not a link of it");
        assert!(l.remove(1, b"c"));
        assert!(l.is_empty() && l.first().is_none());
        l.push(3, b"d"[..].into());
        assert_eq!(l.iter().collect::<Vec<_>>(), [(3, &b"d"[..])]);
    }
}

#[cfg(test)]
mod size {
    use super::*;

    /// A million names hold a million of these in the inode table's slots (`fs/inodes.rs`),
    /// whose empty slots (`None`) must cost nothing more than an inode.
    #[test]
    fn an_inode_slot_stays_at_144_bytes() {
        assert!(std::mem::size_of::<Inode>() <= 144, "Inode is {} bytes", std::mem::size_of::<Inode>());
        assert_eq!(std::mem::size_of::<Option<Inode>>(), std::mem::size_of::<Inode>());
        assert_eq!(std::mem::size_of::<crate::index::records::Ts>(), 8);
        assert_eq!(std::mem::size_of::<Name>(), 8);
        assert!(std::mem::size_of::<Links>() <= 24, "Links is {} bytes", std::mem::size_of::<Links>());
    }
}
