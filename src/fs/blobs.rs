//! The tree's blob table: size and reference count of every blob the tree names. The entries
//! live in the node's blob catalog (`tiers/catalog.rs`), which the flat tier shares for its
//! order of use, so each blob's id is held once. Counts change only under the tree lock; the
//! catalog's own lock is taken by each call here and released before it returns.

use crate::blob::BlobId;
use crate::tiers::catalog::SharedCatalog;

pub use crate::tiers::catalog::BlobEntry;

/// Blob id → [`BlobEntry`], for the blobs the tree names.
#[derive(Default)]
pub struct BlobTable {
    catalog: SharedCatalog,
}

impl BlobTable {
    /// The table kept in `catalog` (the flat tier's, so the two share entries). The catalog
    /// must name nothing yet: one tree per node.
    pub fn in_catalog(catalog: SharedCatalog) -> Self {
        assert_eq!(
            catalog.lock().named_len(),
            0,
            "a second tree on one blob catalog"
        );
        BlobTable { catalog }
    }

    /// The entry of `id`.
    pub fn get(&self, id: &BlobId) -> Option<BlobEntry> {
        self.catalog.lock().named(id)
    }

    /// Whether the tree names `id`.
    pub fn contains_key(&self, id: &BlobId) -> bool {
        self.get(id).is_some()
    }

    /// Take a reference on `id` (of `size`), naming it if the tree did not; returns whether
    /// it was new to the tree.
    pub fn incref(&self, id: BlobId, size: u64) -> bool {
        let mut c = self.catalog.lock();
        let new = c.name(id, size);
        c.add_refs(&id, 1);
        new
    }

    /// Name `id` without a reference (the empty blob, pinned), unless it is named.
    pub fn name(&self, id: BlobId, size: u64) {
        self.catalog.lock().name(id, size);
    }

    /// Drop a reference; returns the entry after, if the tree names `id`.
    pub fn decref(&self, id: &BlobId) -> Option<BlobEntry> {
        self.catalog.lock().add_refs(id, -1)
    }

    /// Stop naming `id`; returns its entry.
    pub fn remove(&self, id: &BlobId) -> Option<BlobEntry> {
        self.catalog.lock().unname(id)
    }

    /// Call `f` on every blob and its entry (in no particular order), under the catalog's
    /// lock: `f` must not call back into the table or the flat tier.
    pub fn for_each(&self, mut f: impl FnMut(&BlobId, BlobEntry)) {
        for (id, e) in self.catalog.lock().each_named() {
            f(&id, e);
        }
    }

    /// The blobs in the flat tier the tree does not name (both sides are in the catalog: one
    /// pass under its lock).
    pub fn unnamed_in_flat(&self) -> Vec<BlobId> {
        self.catalog.lock().held_unnamed()
    }

    /// How many blobs.
    pub fn len(&self) -> usize {
        self.catalog.lock().named_len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room for `n` blobs in all (the load at mount knows how many).
    pub fn reserve(&self, n: usize) {
        self.catalog.lock().reserve(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn behaves_as_a_map_of_counts_through_inserts_and_removals() {
        let t = BlobTable::default();
        let mut model: HashMap<BlobId, u32> = HashMap::new();
        let id = |n: u32| BlobId::of(&n.to_le_bytes());
        // a fixed pseudo-random walk of increments, decrements and removals
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let k = id((x >> 8) % 500);
            match x % 3 {
                0 => assert_eq!(t.remove(&k).map(|e| e.refs), model.remove(&k)),
                1 => {
                    assert_eq!(t.incref(k, 7), !model.contains_key(&k));
                    *model.entry(k).or_default() += 1;
                }
                _ => {
                    let want = model.get_mut(&k).map(|r| {
                        *r = r.saturating_sub(1);
                        *r
                    });
                    assert_eq!(t.decref(&k).map(|e| e.refs), want);
                }
            }
            assert_eq!(t.len(), model.len());
        }
        for (k, refs) in &model {
            assert_eq!(t.get(k).map(|e| e.refs), Some(*refs));
        }
        let mut seen = Vec::new();
        t.for_each(|k, e| seen.push((*k, e.refs)));
        let mut want: Vec<_> = model.into_iter().collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
        assert!(!t.contains_key(&id(1_000_000)));
    }

    #[test]
    fn the_flat_tiers_blobs_are_not_the_trees() {
        let catalog = SharedCatalog::default();
        catalog.lock().touch(BlobId::of(b"held"), Some(4));
        let t = BlobTable::in_catalog(catalog.clone());
        assert!(!t.contains_key(&BlobId::of(b"held")) && t.is_empty());
        t.incref(BlobId::of(b"held"), 4);
        assert_eq!(t.len(), 1);
        assert!(catalog.lock().in_flat(&BlobId::of(b"held")));
    }
}
