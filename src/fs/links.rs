//! The names of one inode: (directory, name) per link. Nearly every inode has exactly one,
//! so that case is held inline (no vector): with a million names this table is one of the
//! daemon's largest, and an inline link saves a heap block per name.

/// An inode's links, in the order they were made.
#[derive(Clone, Debug)]
pub enum Links {
    /// the usual case
    One(u64, Box<[u8]>),
    /// hard links
    Many(Vec<(u64, Box<[u8]>)>),
}

impl Links {
    /// A first link.
    pub fn new(parent: u64, name: &[u8]) -> Self {
        Links::One(parent, name.into())
    }

    /// Add a link.
    pub fn push(&mut self, parent: u64, name: &[u8]) {
        match self {
            Links::One(p, n) => *self = Links::Many(vec![(*p, std::mem::take(n)), (parent, name.into())]),
            Links::Many(v) => v.push((parent, name.into())),
        }
    }

    /// Remove the link `name` in `parent`; returns whether none is left.
    pub fn remove(&mut self, parent: u64, name: &[u8]) -> bool {
        match self {
            Links::One(p, n) => *p == parent && **n == *name,
            Links::Many(v) => {
                v.retain(|(p, n)| !(*p == parent && **n == *name));
                match v.as_slice() {
                    [] => true,
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
            Links::One(..) => 1,
            Links::Many(v) => v.len(),
        }
    }

    /// Whether there is none (only a `Many` emptied by hand can be).
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
        let mut l = Links::new(1, b"a");
        assert_eq!(l.first(), Some((1, &b"a"[..])));
        l.push(2, b"b");
        l.push(1, b"c");
        assert_eq!(l.iter().collect::<Vec<_>>(), [(1, &b"a"[..]), (2, &b"b"[..]), (1, &b"c"[..])]);
        assert!(!l.remove(1, b"a"));
        assert!(!l.remove(9, b"b"));
        assert!(!l.remove(2, b"b"));
        assert!(matches!(l, Links::One(1, _)));
        assert_eq!(l.first(), Some((1, &b"c"[..])));
        assert!(!l.remove(1, b"a"), "not a link of it");
        assert!(l.remove(1, b"c"));
    }
}
