//! The tree's inode table: every inode in one dense vector of slots, found by number through a
//! hash table of 4-byte slot indices. A hash map of boxed inodes cost, per name, a 16-byte
//! slot (up to half of them empty, as it grows by doubling) plus the allocator's 8-byte header
//! and rounding on every box: about 32 bytes a name at a million names, here about 10.
//!
//! Slots are reused (a free list), so a tree under churn keeps the vector at its peak size; when
//! fewer than a quarter of the slots are used the vector is compacted and the index rebuilt
//! (no slot index leaves this module, so moving inodes is safe).

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::fs::links::Inode;

/// Below this many slots the table never compacts.
const COMPACT_FLOOR: usize = 4096;

/// Inode number → [`Inode`].
#[derive(Default)]
pub struct InodeTable {
    slots: Vec<Option<Inode>>,
    /// slots no inode uses
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    len: usize,
}

impl InodeTable {
    fn ino_at(slots: &[Option<Inode>], i: u32) -> u64 {
        slots[i as usize].as_ref().map_or(0, |n| n.rec.ino)
    }

    fn slot(&self, ino: u64) -> Option<usize> {
        let slots = &self.slots;
        self.index.find(self.hasher.hash_one(ino), |&i| Self::ino_at(slots, i) == ino).map(|&i| i as usize)
    }

    /// The inode numbered `ino`.
    pub fn get(&self, ino: &u64) -> Option<&Inode> {
        self.slot(*ino).and_then(|i| self.slots[i].as_ref())
    }

    /// The inode numbered `ino`, to change (its number must stay).
    pub fn get_mut(&mut self, ino: &u64) -> Option<&mut Inode> {
        self.slot(*ino).and_then(|i| self.slots[i].as_mut())
    }

    /// Whether `ino` is in the table.
    pub fn contains_key(&self, ino: &u64) -> bool {
        self.slot(*ino).is_some()
    }

    /// Put `inode` in the table under its number, replacing (and returning) one already there.
    pub fn insert(&mut self, inode: Inode) -> Option<Inode> {
        let ino = inode.rec.ino;
        if let Some(i) = self.slot(ino) {
            return self.slots[i].replace(inode);
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(inode);
                i
            }
            None => {
                self.slots.push(Some(inode));
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hasher.hash_one(ino), i, |&j| hasher.hash_one(Self::ino_at(slots, j)));
        self.len += 1;
        None
    }

    /// The inode numbered `ino`, made by `make` (with that number) if there is none.
    pub fn get_or_insert_with(&mut self, ino: u64, make: impl FnOnce() -> Inode) -> &mut Inode {
        if !self.contains_key(&ino) {
            self.insert(make());
        }
        self.get_mut(&ino).expect("just inserted")
    }

    /// Take the inode numbered `ino` out of the table.
    pub fn remove(&mut self, ino: &u64) -> Option<Inode> {
        let slots = &self.slots;
        let Ok(found) = self.index.find_entry(self.hasher.hash_one(*ino), |&i| Self::ino_at(slots, i) == *ino) else { return None };
        let (i, _) = found.remove();
        let inode = self.slots[i as usize].take();
        self.free.push(i);
        self.len -= 1;
        if self.slots.len() > COMPACT_FLOOR && self.len * 4 < self.slots.len() {
            self.compact();
        }
        inode
    }

    /// Move every inode to the front, drop the free slots and rebuild the index.
    fn compact(&mut self) {
        let mut slots: Vec<Option<Inode>> = std::mem::take(&mut self.slots).into_iter().filter(Option::is_some).collect();
        slots.shrink_to_fit();
        self.slots = slots;
        self.free = Vec::new();
        self.index = HashTable::with_capacity(self.slots.len());
        for i in 0..self.slots.len() as u32 {
            let h = self.hasher.hash_one(Self::ino_at(&self.slots, i));
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.index.insert_unique(h, i, |&j| hasher.hash_one(Self::ino_at(slots, j)));
        }
    }

    /// How many inodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for `n` more inodes (exactly: the load at mount knows how many).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve_exact(n.saturating_sub(self.free.len()));
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.reserve(n, |&j| hasher.hash_one(Self::ino_at(slots, j)));
    }

    /// Every inode, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Inode> {
        self.slots.iter().flatten()
    }

    /// Every inode, to change (their numbers must stay).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Inode> {
        self.slots.iter_mut().flatten()
    }

    /// Every (number, inode), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Inode)> {
        self.values().map(|n| (n.rec.ino, n))
    }

    /// Every inode number.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.values().map(|n| n.rec.ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::records::{InodeKind, InodeRecord};
    use std::collections::HashMap;

    fn inode(ino: u64, size: u64) -> Inode {
        let rec = InodeRecord {
            ino,
            kind: InodeKind::Dir { parent: 1 },
            perm: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            size,
            atime: Default::default(),
            mtime: Default::default(),
            ctime: Default::default(),
            xattrs: Default::default(),
            stamp: Default::default(),
        };
        Inode::new(rec)
    }

    #[test]
    fn behaves_as_a_map_through_inserts_removals_and_compactions() {
        let mut t = InodeTable::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        // a fixed pseudo-random walk: grow to thousands, shrink below a quarter (compacts), grow
        let mut x: u64 = 12345;
        for round in 0..60_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let shrinking = (20_000..40_000).contains(&round);
            let k = (x >> 33) % 9000 + 2;
            if shrinking || x.is_multiple_of(5) {
                assert_eq!(t.remove(&k).map(|n| n.rec.size), model.remove(&k));
            } else {
                let old = t.insert(inode(k, round));
                assert_eq!(old.map(|n| n.rec.size), model.insert(k, round));
            }
            if round % 997 == 0 {
                assert_eq!(t.len(), model.len());
                for (k, v) in &model {
                    assert_eq!(t.get(k).map(|n| n.rec.size), Some(*v), "inode {k}");
                }
                let mut keys: Vec<u64> = t.keys().collect();
                keys.sort_unstable();
                let mut want: Vec<u64> = model.keys().copied().collect();
                want.sort_unstable();
                assert_eq!(keys, want);
            }
        }
        assert!(!t.contains_key(&1));
        t.get_or_insert_with(1, || inode(1, 7)).rec.size += 1;
        assert_eq!(t.get(&1).map(|n| n.rec.size), Some(8));
        assert_eq!(t.get_or_insert_with(1, || inode(1, 99)).rec.size, 8, "kept the one already there");
    }

    #[test]
    fn a_mass_removal_compacts_the_slots() {
        let mut t = InodeTable::default();
        for k in 2..20_002 {
            t.insert(inode(k, k));
        }
        for k in 2..19_002 {
            t.remove(&k);
        }
        assert_eq!(t.len(), 1000);
        assert!(t.slots.len() < 8000, "{} slots for 1000 inodes", t.slots.len());
        assert!((19_002..20_002).all(|k| t.get(&k).map(|n| n.rec.size) == Some(k)));
    }
}
