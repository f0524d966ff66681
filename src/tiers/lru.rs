//! A compact least-recently-used set of blobs with their sizes, for the flat tier's bound.
//!
//! A million blobs on a node is the design point, so each one costs one slab node (its id,
//! size and two 32-bit links: 48 bytes) and a 4-byte slot in a hash table that finds nodes by
//! the id stored in the node: the id is held once. A `HashMap` of ids plus a `BTreeMap` of
//! ticks, as before, held every id twice and cost about three times as much.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::blob::BlobId;

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Node {
    id: BlobId,
    size: u64,
    /// the next older node
    prev: u32,
    /// the next newer node
    next: u32,
}

/// Blobs in order of use, with their sizes and their total.
#[derive(Default)]
pub struct Lru {
    nodes: Vec<Node>,
    /// slots of `nodes` no blob uses
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// least recently used
    head: Option<u32>,
    /// most recently used
    tail: Option<u32>,
    bytes: u64,
    /// touches and removals so far (tells a saver whether the order changed)
    changes: u64,
}

impl std::fmt::Debug for Lru {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lru").field("blobs", &self.len()).field("bytes", &self.bytes).finish()
    }
}

impl Lru {
    /// Room for `n` more blobs, exactly (the open of the flat tier knows how many it found).
    pub fn reserve(&mut self, n: usize) {
        self.nodes.reserve_exact(n);
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.index.reserve(n, |&j| hasher.hash_one(nodes[j as usize].id));
    }

    fn find(&self, id: &BlobId) -> Option<u32> {
        let nodes = &self.nodes;
        self.index.find(self.hasher.hash_one(id), |&i| nodes[i as usize].id == *id).copied()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.nodes[i as usize].prev, self.nodes[i as usize].next);
        match prev {
            NIL => self.head = (next != NIL).then_some(next),
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = (prev != NIL).then_some(prev),
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_newest(&mut self, i: u32) {
        let old_tail = self.tail.unwrap_or(NIL);
        self.nodes[i as usize].prev = old_tail;
        self.nodes[i as usize].next = NIL;
        match self.tail {
            Some(t) => self.nodes[t as usize].next = i,
            None => self.head = Some(i),
        }
        self.tail = Some(i);
    }

    /// Mark `id` as just used; a blob not in the set is added with `size` (and ignored
    /// without one).
    pub fn touch(&mut self, id: BlobId, size: Option<u64>) {
        self.changes += 1;
        if let Some(i) = self.find(&id) {
            self.unlink(i);
            self.push_newest(i);
            return;
        }
        let Some(size) = size else { return };
        let node = Node { id, size, prev: NIL, next: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.index.insert_unique(hasher.hash_one(id), i, |&j| hasher.hash_one(nodes[j as usize].id));
        self.bytes += size;
        self.push_newest(i);
    }

    /// Drop `id` from the set.
    pub fn forget(&mut self, id: &BlobId) {
        self.changes += 1;
        let nodes = &self.nodes;
        let Ok(slot) = self.index.find_entry(self.hasher.hash_one(id), |&j| nodes[j as usize].id == *id) else { return };
        let (i, _) = slot.remove();
        self.unlink(i);
        self.bytes -= self.nodes[i as usize].size;
        self.free.push(i);
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.find(id).is_some()
    }

    /// How many blobs the set holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Touches and removals so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The sizes' total.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Every blob with its size, least recently used first.
    pub fn oldest_first(&self) -> impl Iterator<Item = (&BlobId, u64)> + '_ {
        let mut at = self.head.unwrap_or(NIL);
        std::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let n = &self.nodes[at as usize];
            at = n.next;
            Some((&n.id, n.size))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BlobId {
        BlobId::of(&n.to_le_bytes())
    }

    fn order(l: &Lru) -> Vec<BlobId> {
        l.oldest_first().map(|(i, _)| *i).collect()
    }

    #[test]
    fn it_orders_by_use_and_keeps_sizes_and_the_total() {
        let mut l = Lru::default();
        for n in 0..5 {
            l.touch(id(n), Some(10 + n as u64));
        }
        l.touch(id(7), None); // unknown without a size: ignored
        assert_eq!((l.len(), l.bytes()), (5, 60));
        l.touch(id(1), None);
        l.touch(id(0), Some(999)); // known: a use, the size stays
        assert_eq!(order(&l), [id(2), id(3), id(4), id(1), id(0)]);
        l.forget(&id(4));
        l.forget(&id(2));
        l.forget(&id(2));
        assert_eq!(order(&l), [id(3), id(1), id(0)]);
        assert_eq!((l.len(), l.bytes()), (3, 34));
        assert!(!l.contains(&id(2)) && l.contains(&id(1)));
        // freed slots are reused
        l.touch(id(8), Some(1));
        l.touch(id(9), Some(1));
        assert_eq!(order(&l), [id(3), id(1), id(0), id(8), id(9)]);
        for n in [3, 1, 0, 8, 9] {
            l.forget(&id(n));
        }
        assert!(l.is_empty() && l.bytes() == 0 && order(&l).is_empty());
        l.touch(id(5), Some(5));
        assert_eq!(order(&l), [id(5)]);
    }

    #[test]
    fn it_agrees_with_a_plain_model_under_random_use() {
        let mut l = Lru::default();
        let mut model: Vec<(BlobId, u64)> = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = id((x % 300) as u32);
            match (x >> 20) % 3 {
                0 | 1 => {
                    l.touch(b, Some(x % 1000));
                    match model.iter().position(|e| e.0 == b) {
                        Some(p) => {
                            let e = model.remove(p);
                            model.push(e);
                        }
                        None => model.push((b, x % 1000)),
                    }
                }
                _ => {
                    l.forget(&b);
                    model.retain(|e| e.0 != b);
                }
            }
        }
        let got: Vec<(BlobId, u64)> = l.oldest_first().map(|(i, s)| (*i, s)).collect();
        assert_eq!(got, model);
        assert_eq!(l.bytes(), model.iter().map(|e| e.1).sum::<u64>());
    }
}
