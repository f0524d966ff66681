//! The kernel's lookup counts: how many times each inode was handed to the kernel in an entry
//! reply (lookup, create, mkdir, mknod, symlink, link, readdirplus) minus what it gave back in
//! `forget`. While the count is above zero the kernel may still send requests naming the inode
//! (an `open` after a `lookup` that raced with a replace, an `O_PATH` descriptor reopened
//! through `/proc/self/fd`), so a file the kernel removed stays readable until its `forget`,
//! as on a local filesystem. Without a kernel (the library, unit tests) every count is zero.

use dashmap::DashMap;

/// Lookup counts by inode; sharded, so a lookup under the tree's read lock can count.
#[derive(Default)]
pub struct Lookups(DashMap<u64, u64>);

impl Lookups {
    /// The kernel got one more reference to `ino`.
    pub fn add(&self, ino: u64) {
        *self.0.entry(ino).or_insert(0) += 1;
    }

    /// The kernel gave back `n` references; true when it holds none any more.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        let mut zero = true;
        self.0.remove_if_mut(&ino, |_, c| {
            *c = c.saturating_sub(n);
            zero = *c == 0;
            zero
        });
        zero
    }

    /// Whether the kernel may still send requests naming `ino`.
    pub fn holds(&self, ino: u64) -> bool {
        self.0.contains_key(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_to_zero_only_when_every_reference_is_given_back() {
        let l = Lookups::default();
        assert!(!l.holds(7));
        l.add(7);
        l.add(7);
        l.add(7);
        assert!(!l.forget(7, 2), "one reference is left");
        assert!(l.holds(7));
        assert!(l.forget(7, 1));
        assert!(!l.holds(7));
        assert!(l.forget(9, 1), "forgetting an inode never counted is harmless");
    }
}
