//! The node's catalog of blobs: one entry per blob that the tree names or the flat tier holds,
//! with its size, the tree's reference count and the flat tier's recency links.
//!
//! A million blobs on a node is the design point. Before, the tree's blob table (id, size,
//! count) and the flat tier's LRU (id, size, links) each held every blob with its own hash
//! table: 92 bytes of entries and two index slots per blob. One entry is 52 bytes and one
//! 4-byte index slot, and the id is stored once.
//!
//! Two owners share an entry and neither decides for the other:
//! - the tree (`fs/blobs.rs`) names a blob and counts its references; it changes counts only
//!   under its own tree lock, so its decisions (what to reclaim) are made as before;
//! - the flat tier adds, touches and forgets the blobs whose files it holds, in order of use.
//!
//! An entry lives while either owner holds it. The lock around the table ([`SharedCatalog`])
//! is always taken last: nothing is called while it is held.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

use crate::blob::BlobId;

/// End of the recency list.
const NIL: u32 = u32::MAX;
/// `prev` of an entry the flat tier does not hold.
const OUT: u32 = u32::MAX - 1;
/// `refs` of an entry the tree does not name.
const UNNAMED: u32 = u32::MAX;

/// Packed to 52 bytes (the natural layout pads to 56).
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
struct Entry {
    id: BlobId,
    /// raw size
    size: u64,
    /// the tree's references, or [`UNNAMED`]
    refs: u32,
    /// the next older blob in the flat tier, [`NIL`] for the oldest, [`OUT`] if not held there
    prev: u32,
    /// the next newer blob in the flat tier, [`NIL`] for the newest
    next: u32,
}

impl Entry {
    fn named(&self) -> bool {
        self.refs != UNNAMED
    }

    fn in_flat(&self) -> bool {
        self.prev != OUT
    }
}

/// What the tree knows of a blob it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// raw size
    pub size: u64,
    /// inodes bound to it (including unlinked-but-open ones)
    pub refs: u32,
}

/// Blob id → entry; see the module doc.
#[derive(Default)]
pub struct Catalog {
    entries: Vec<Entry>,
    /// slots of `entries` no blob uses
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// least recently used blob of the flat tier
    head: Option<u32>,
    /// most recently used blob of the flat tier
    tail: Option<u32>,
    flat_len: usize,
    flat_bytes: u64,
    /// flat touches and removals so far (tells a saver whether the order changed)
    changes: u64,
    named: usize,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("named", &self.named)
            .field("flat", &self.flat_len)
            .field("flat_bytes", &self.flat_bytes)
            .finish()
    }
}

impl Catalog {
    /// Room for `n` blobs in all, exactly (the flat tier's open and the tree's load know how
    /// many they bring; the two sets mostly overlap, so the larger one sizes the table).
    pub fn reserve(&mut self, n: usize) {
        let more = n.saturating_sub(self.index.len());
        self.entries
            .reserve_exact(more.saturating_sub(self.free.len()));
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .reserve(more, |&j| hasher.hash_one(entries[j as usize].id));
    }

    fn find(&self, id: &BlobId) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(self.hasher.hash_one(id), |&i| entries[i as usize].id == *id)
            .copied()
    }

    /// The slot of `id`, a new entry (neither named nor held) if it has none.
    fn slot(&mut self, id: BlobId, size: u64) -> u32 {
        if let Some(i) = self.find(&id) {
            return i;
        }
        let e = Entry {
            id,
            size,
            refs: UNNAMED,
            prev: OUT,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = e;
                i
            }
            None => {
                self.entries.push(e);
                (self.entries.len() - 1) as u32
            }
        };
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hasher.hash_one(id), i, |&j| {
            hasher.hash_one(entries[j as usize].id)
        });
        i
    }

    /// Drop the entry at `i` if neither owner holds it any more.
    fn release_if_unused(&mut self, i: u32) {
        let e = self.entries[i as usize];
        if e.named() || e.in_flat() {
            return;
        }
        if let Ok(slot) = self
            .index
            .find_entry(self.hasher.hash_one(e.id), |&j| j == i)
        {
            slot.remove();
        }
        self.free.push(i);
    }

    // ---- the flat tier's side ----

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.entries[i as usize].prev, self.entries[i as usize].next);
        match prev {
            NIL => self.head = (next != NIL).then_some(next),
            p => self.entries[p as usize].next = next,
        }
        match next {
            NIL => self.tail = (prev != NIL).then_some(prev),
            n => self.entries[n as usize].prev = prev,
        }
    }

    fn push_newest(&mut self, i: u32) {
        let old_tail = self.tail.unwrap_or(NIL);
        self.entries[i as usize].prev = old_tail;
        self.entries[i as usize].next = NIL;
        match self.tail {
            Some(t) => self.entries[t as usize].next = i,
            None => self.head = Some(i),
        }
        self.tail = Some(i);
    }

    /// Mark `id` as just used in the flat tier; a blob the tier does not hold is added with
    /// `size` (and ignored without one). A blob the tree names keeps the size the tree gave.
    pub fn touch(&mut self, id: BlobId, size: Option<u64>) {
        self.changes += 1;
        let i = match (self.find(&id), size) {
            (Some(i), _) if self.entries[i as usize].in_flat() => {
                self.unlink(i);
                self.push_newest(i);
                return;
            }
            (Some(i), Some(_)) => i,
            (None, Some(size)) => self.slot(id, size),
            (_, None) => return,
        };
        self.flat_len += 1;
        self.flat_bytes += self.entries[i as usize].size;
        self.push_newest(i);
    }

    /// The flat tier no longer holds `id`.
    pub fn forget(&mut self, id: &BlobId) {
        self.changes += 1;
        let Some(i) = self
            .find(id)
            .filter(|&i| self.entries[i as usize].in_flat())
        else {
            return;
        };
        self.unlink(i);
        self.entries[i as usize].prev = OUT;
        self.flat_len -= 1;
        self.flat_bytes -= self.entries[i as usize].size;
        self.release_if_unused(i);
    }

    /// Whether the flat tier holds `id`.
    pub fn in_flat(&self, id: &BlobId) -> bool {
        self.find(id)
            .is_some_and(|i| self.entries[i as usize].in_flat())
    }

    /// The size of `id` if the flat tier holds it.
    pub fn flat_size(&self, id: &BlobId) -> Option<u64> {
        let e = &self.entries[self.find(id)? as usize];
        e.in_flat().then_some(e.size)
    }

    /// How many blobs the flat tier holds.
    pub fn flat_len(&self) -> usize {
        self.flat_len
    }

    /// The sizes of the flat tier's blobs in total.
    pub fn flat_bytes(&self) -> u64 {
        self.flat_bytes
    }

    /// Flat touches and removals so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The flat tier's blobs with their sizes, least recently used first.
    pub fn oldest_first(&self) -> impl Iterator<Item = (BlobId, u64)> + '_ {
        let mut at = self.head.unwrap_or(NIL);
        std::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let e = &self.entries[at as usize];
            at = e.next;
            Some((e.id, e.size))
        })
    }

    // ---- the tree's side ----

    /// The tree's entry of `id`.
    pub fn named(&self, id: &BlobId) -> Option<BlobEntry> {
        let e = &self.entries[self.find(id)? as usize];
        e.named().then_some(BlobEntry {
            size: e.size,
            refs: e.refs,
        })
    }

    /// The tree names `id` (of `size`) with no reference yet, unless it already does; returns
    /// whether it is new to the tree. The tree's size is the one kept (a flat file of another
    /// length is a damaged copy, caught by verification when read).
    pub fn name(&mut self, id: BlobId, size: u64) -> bool {
        let i = self.slot(id, size);
        let e = &mut self.entries[i as usize];
        if e.named() {
            return false;
        }
        e.refs = 0;
        let old = e.size;
        if old != size {
            e.size = size;
            if e.in_flat() {
                self.flat_bytes = self.flat_bytes - old + size;
            }
        }
        self.named += 1;
        true
    }

    /// Add `delta` (±) to the references of a blob the tree names; returns the entry after.
    pub fn add_refs(&mut self, id: &BlobId, delta: i32) -> Option<BlobEntry> {
        let i = self.find(id)?;
        let e = &mut self.entries[i as usize];
        if !e.named() {
            return None;
        }
        e.refs = e.refs.saturating_add_signed(delta).min(UNNAMED - 1);
        Some(BlobEntry {
            size: e.size,
            refs: e.refs,
        })
    }

    /// The tree no longer names `id`; returns what it had.
    pub fn unname(&mut self, id: &BlobId) -> Option<BlobEntry> {
        let i = self.find(id)?;
        let e = &mut self.entries[i as usize];
        if !e.named() {
            return None;
        }
        let was = BlobEntry {
            size: e.size,
            refs: e.refs,
        };
        e.refs = UNNAMED;
        self.named -= 1;
        self.release_if_unused(i);
        Some(was)
    }

    /// The blobs the flat tier holds and the tree does not name (in no particular order).
    pub fn held_unnamed(&self) -> Vec<BlobId> {
        // a freed slot is neither held nor named
        self.entries.iter().filter(|e| e.in_flat() && !e.named()).map(|e| e.id).collect()
    }

    /// Every blob the tree names (in no particular order).
    pub fn each_named(&self) -> impl Iterator<Item = (BlobId, BlobEntry)> + '_ {
        // a freed slot keeps its old contents, unnamed (only unnamed entries are released)
        self.entries.iter().filter(|e| e.named()).map(|e| {
            (
                e.id,
                BlobEntry {
                    size: e.size,
                    refs: e.refs,
                },
            )
        })
    }

    /// How many blobs the tree names.
    pub fn named_len(&self) -> usize {
        self.named
    }
}

/// The catalog behind its lock, shared by the flat tier and the tree of one node.
#[derive(Clone, Default, Debug)]
pub struct SharedCatalog(Arc<Mutex<Catalog>>);

impl SharedCatalog {
    /// The table. Call nothing that may take this lock again while holding it.
    pub fn lock(&self) -> MutexGuard<'_, Catalog> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BlobId {
        BlobId::of(&n.to_le_bytes())
    }

    fn order(c: &Catalog) -> Vec<BlobId> {
        c.oldest_first().map(|(i, _)| i).collect()
    }

    #[test]
    fn an_entry_is_52_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 52);
    }

    #[test]
    fn the_flat_side_orders_by_use_and_keeps_sizes_and_the_total() {
        let mut l = Catalog::default();
        for n in 0..5 {
            l.touch(id(n), Some(10 + n as u64));
        }
        l.touch(id(7), None); // unknown without a size: ignored
        assert_eq!((l.flat_len(), l.flat_bytes()), (5, 60));
        l.touch(id(1), None);
        l.touch(id(0), Some(999)); // known: a use, the size stays
        assert_eq!(order(&l), [id(2), id(3), id(4), id(1), id(0)]);
        l.forget(&id(4));
        l.forget(&id(2));
        l.forget(&id(2));
        assert_eq!(order(&l), [id(3), id(1), id(0)]);
        assert_eq!((l.flat_len(), l.flat_bytes()), (3, 34));
        assert!(!l.in_flat(&id(2)) && l.in_flat(&id(1)));
        // freed slots are reused
        l.touch(id(8), Some(1));
        l.touch(id(9), Some(1));
        assert_eq!(order(&l), [id(3), id(1), id(0), id(8), id(9)]);
        assert_eq!(l.entries.len(), 5);
        for n in [3, 1, 0, 8, 9] {
            l.forget(&id(n));
        }
        assert!(l.flat_len() == 0 && l.flat_bytes() == 0 && order(&l).is_empty());
        l.touch(id(5), Some(5));
        assert_eq!(order(&l), [id(5)]);
    }

    #[test]
    fn an_entry_lives_while_either_side_holds_it() {
        let mut c = Catalog::default();
        assert!(c.name(id(1), 100));
        assert!(!c.name(id(1), 100), "named once");
        assert_eq!(
            c.add_refs(&id(1), 2),
            Some(BlobEntry { size: 100, refs: 2 })
        );
        // a blob the tree names but the flat tier does not hold: a use without a size is no add
        c.touch(id(1), None);
        assert!(!c.in_flat(&id(1)));
        c.touch(id(1), Some(100));
        assert!(c.in_flat(&id(1)) && c.flat_bytes() == 100);
        // the tree lets go: the flat tier still holds it, in its place
        c.touch(id(2), Some(7));
        assert_eq!(c.unname(&id(1)), Some(BlobEntry { size: 100, refs: 2 }));
        assert_eq!(c.named(&id(1)), None);
        assert_eq!(order(&c), [id(1), id(2)]);
        assert_eq!(c.add_refs(&id(1), 1), None, "not named");
        // named again, then forgotten by the flat tier: still named
        assert!(c.name(id(1), 100));
        c.forget(&id(1));
        assert_eq!(c.named(&id(1)), Some(BlobEntry { size: 100, refs: 0 }));
        assert_eq!((c.flat_len(), c.flat_bytes()), (1, 7));
        // neither: the slot is free and reused, and the gone entry is not listed
        c.unname(&id(1));
        assert_eq!(c.named(&id(1)), None);
        assert_eq!(c.each_named().count(), 0);
        c.name(id(3), 1);
        assert_eq!(c.entries.len(), 2, "slot reused");
        assert_eq!(c.each_named().map(|(i, _)| i).collect::<Vec<_>>(), [id(3)]);
    }

    #[test]
    fn the_trees_size_is_the_one_kept() {
        let mut c = Catalog::default();
        c.touch(id(1), Some(10)); // a damaged flat copy of a 64-byte blob
        c.name(id(1), 64);
        assert_eq!(c.flat_bytes(), 64);
        c.touch(id(2), Some(10)); // the flat tier adopts a file of a blob the tree names
        c.name(id(3), 5);
        c.touch(id(3), Some(5));
        assert_eq!(
            (c.flat_bytes(), c.named(&id(3)).map(|e| e.size)),
            (79, Some(5))
        );
        c.forget(&id(1));
        c.forget(&id(2));
        c.forget(&id(3));
        assert_eq!(c.flat_bytes(), 0);
    }

    /// Random uses of both sides against two plain models.
    #[test]
    fn it_agrees_with_plain_models_under_random_use() {
        let mut c = Catalog::default();
        let mut flat: Vec<(BlobId, u64)> = Vec::new();
        let mut tree: std::collections::HashMap<BlobId, BlobEntry> = Default::default();
        let size = |b: &BlobId| b.0[0] as u64 * 3;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..40_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = id((x % 300) as u32);
            match (x >> 20) % 6 {
                0 | 1 => {
                    c.touch(b, Some(size(&b)));
                    match flat.iter().position(|e| e.0 == b) {
                        Some(p) => {
                            let e = flat.remove(p);
                            flat.push(e);
                        }
                        None => flat.push((b, size(&b))),
                    }
                }
                2 => {
                    c.forget(&b);
                    flat.retain(|e| e.0 != b);
                }
                3 => {
                    assert_eq!(c.name(b, size(&b)), !tree.contains_key(&b));
                    tree.entry(b).or_insert(BlobEntry {
                        size: size(&b),
                        refs: 0,
                    });
                }
                4 => {
                    let want = tree.get_mut(&b).map(|e| {
                        e.refs += 1;
                        *e
                    });
                    assert_eq!(c.add_refs(&b, 1), want);
                }
                _ => assert_eq!(c.unname(&b), tree.remove(&b)),
            }
        }
        assert_eq!(c.oldest_first().collect::<Vec<_>>(), flat);
        assert_eq!(c.flat_bytes(), flat.iter().map(|e| e.1).sum::<u64>());
        let mut named: Vec<_> = c.each_named().collect();
        let mut want: Vec<_> = tree.into_iter().collect();
        named.sort_by_key(|e| e.0);
        want.sort_by_key(|e| e.0);
        assert_eq!(named, want);
        assert_eq!(c.named_len(), want.len());
        let mut held_unnamed = c.held_unnamed();
        held_unnamed.sort();
        let mut want_unnamed: Vec<BlobId> = flat.iter().map(|e| e.0).filter(|id| !want.iter().any(|(n, _)| n == id)).collect();
        want_unnamed.sort();
        assert_eq!(held_unnamed, want_unnamed);
        assert_eq!(c.index.len(), c.entries.len() - c.free.len());
    }
}
