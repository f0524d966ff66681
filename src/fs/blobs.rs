//! The tree's blob table: size and reference count per blob. Its entries sit in one dense
//! vector under a hash table of 4-byte indices; a hash map of entries kept 48-byte slots of
//! which up to half were empty (as it grows by doubling): at a million blobs 103 MB, here
//! 58 MB.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::blob::BlobId;

/// A blob's in-memory bookkeeping. Packed to 12 bytes, so an entry with its 32-byte id is 44
/// bytes, not 48 (a million blobs: 4 MB).
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub struct BlobEntry {
    /// raw size
    pub size: u64,
    /// inodes bound to it (including unlinked-but-open ones)
    pub refs: u32,
}

/// Blob id → [`BlobEntry`].
#[derive(Default)]
pub struct BlobTable {
    entries: Vec<(BlobId, BlobEntry)>,
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl BlobTable {
    fn slot(&self, id: &BlobId) -> Option<usize> {
        let entries = &self.entries;
        self.index.find(self.hasher.hash_one(id), |&i| entries[i as usize].0 == *id).map(|&i| i as usize)
    }

    /// The entry of `id`.
    pub fn get(&self, id: &BlobId) -> Option<&BlobEntry> {
        self.slot(id).map(|i| &self.entries[i].1)
    }

    /// The entry of `id`, to change.
    pub fn get_mut(&mut self, id: &BlobId) -> Option<&mut BlobEntry> {
        self.slot(id).map(|i| &mut self.entries[i].1)
    }

    /// Whether `id` has an entry.
    pub fn contains_key(&self, id: &BlobId) -> bool {
        self.slot(id).is_some()
    }

    /// The entry of `id`, made by `make` if there is none.
    pub fn get_or_insert_with(&mut self, id: BlobId, make: impl FnOnce() -> BlobEntry) -> &mut BlobEntry {
        let i = match self.slot(&id) {
            Some(i) => i,
            None => {
                let i = self.entries.len();
                self.entries.push((id, make()));
                let (entries, hasher) = (&self.entries, &self.hasher);
                self.index.insert_unique(hasher.hash_one(id), i as u32, |&j| hasher.hash_one(entries[j as usize].0));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Remove the entry of `id` (the last entry takes its place).
    pub fn remove(&mut self, id: &BlobId) -> Option<BlobEntry> {
        let entries = &self.entries;
        let Ok(found) = self.index.find_entry(self.hasher.hash_one(id), |&i| entries[i as usize].0 == *id) else { return None };
        let (i, _) = found.remove();
        let i = i as usize;
        let last = self.entries.len() - 1;
        if i != last {
            let moved = self.entries[last].0;
            if let Some(slot) = self.index.find_mut(self.hasher.hash_one(moved), |&j| j as usize == last) {
                *slot = i as u32;
            }
        }
        Some(self.entries.swap_remove(i).1)
    }

    /// Every blob and its entry (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &BlobEntry)> {
        self.entries.iter().map(|(id, e)| (id, e))
    }

    /// How many blobs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Room for `n` more blobs (exactly: the load at mount knows how many).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve_exact(n);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.reserve(n, |&j| hasher.hash_one(entries[j as usize].0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn behaves_as_a_map_through_inserts_and_removals() {
        let mut t = BlobTable::default();
        let mut model: HashMap<BlobId, u32> = HashMap::new();
        let id = |n: u32| BlobId::of(&n.to_le_bytes());
        // a fixed pseudo-random walk of inserts, increments and removals
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let k = id((x >> 8) % 500);
            if x.is_multiple_of(3) {
                assert_eq!(t.remove(&k).map(|e| e.refs), model.remove(&k));
            } else {
                t.get_or_insert_with(k, || BlobEntry { size: 7, refs: 0 }).refs += 1;
                *model.entry(k).or_default() += 1;
            }
            assert_eq!(t.len(), model.len());
        }
        for (k, refs) in &model {
            assert_eq!(t.get(k).map(|e| e.refs), Some(*refs));
        }
        let mut seen: Vec<_> = t.iter().map(|(k, e)| (*k, e.refs)).collect();
        let mut want: Vec<_> = model.into_iter().collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
        assert!(!t.contains_key(&id(1_000_000)));
    }

    #[test]
    fn an_entry_with_its_id_is_44_bytes() {
        assert_eq!(std::mem::size_of::<(BlobId, BlobEntry)>(), 44);
    }
}
