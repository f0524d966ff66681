//! Per-namespace byte budgets (`setfattr -n user.wombatfs.budget -v 10GiB /mnt/ns`, or the
//! `[budgets]` table of the config file). When a namespace holds more than its budget, its
//! least recently used files are removed — names, and blobs no other name refers to — until
//! it is at 90 % of the budget. Recency: the last open since mount, else the newer of atime
//! and mtime. Usage counts each file once (hard links included) by its size.
//!
//! [`Budgets`] sees the tree read-only and decides; the filesystem removes what it chose
//! through its normal unlink path (so other nodes see the removals too).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;

use crate::fs::error::{FsError, FsResult};
use crate::fs::tree::{Tree, ROOT};
use crate::index::records::{InodeKind, InodeRecord, Ts};

/// The budget attribute of a namespace directory.
pub const BUDGET: &[u8] = b"user.wombatfs.budget";
/// The usage attribute of a namespace directory (read-only).
pub const USAGE: &[u8] = b"user.wombatfs.usage";

/// One file of a namespace, for eviction.
struct Candidate {
    recency: (u64, Ts),
    parent: u64,
    name: Vec<u8>,
    ino: u64,
    size: u64,
}

/// A name budget enforcement removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// its namespace
    pub ns: u64,
    /// directory
    pub parent: u64,
    /// name in it
    pub name: Vec<u8>,
}

/// The budgets of a mount and the open recency they evict by.
pub struct Budgets {
    /// budgets set in the config file: namespace name → bytes (an attribute wins)
    config: BTreeMap<String, u64>,
    /// last open of each inode since mount, kept only while some namespace has a budget
    /// (a million names would otherwise hold a million entries nothing reads)
    recent: DashMap<u64, u64>,
    tick: AtomicU64,
    /// whether some namespace had a budget at the last pass (true until the first)
    active: AtomicBool,
}

impl Budgets {
    /// Budgets with the config file's table.
    pub fn new(config: BTreeMap<String, u64>) -> Self {
        Budgets { config, recent: DashMap::new(), tick: AtomicU64::new(0), active: AtomicBool::new(true) }
    }

    /// Record an open (budget recency).
    pub fn note_use(&self, ino: u64) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        self.recent.insert(ino, tick);
    }

    /// The budget of namespace `ns` in bytes, if any: its attribute, else the config file's.
    pub fn budget_of(&self, t: &Tree, ns: u64) -> Option<u64> {
        let rec = t.inodes.get(&ns)?;
        if let Some(v) = rec.xattrs.get(BUDGET) {
            return std::str::from_utf8(v).ok().and_then(|s| crate::size::parse(s).ok()).filter(|b| *b > 0);
        }
        let (_, name) = t.links(ns)?.first()?;
        self.config.get(std::str::from_utf8(name).ok()?).copied()
    }

    /// Every non-directory entry below `ns` as (directory, name, inode, record), and the bytes
    /// they use (each inode once, however many names it has).
    fn walk<'t>(t: &'t Tree, ns: u64, mut each: impl FnMut(u64, &'t [u8], u64, &'t InodeRecord)) -> u64 {
        let (mut used, mut seen, mut stack) = (0, HashSet::new(), vec![ns]);
        while let Some(dir) = stack.pop() {
            for (name, &ino) in t.dirs.get(&dir).into_iter().flatten() {
                let Some(rec) = t.inodes.get(&ino) else { continue };
                if let InodeKind::Dir { .. } = rec.kind {
                    stack.push(ino);
                    continue;
                }
                if seen.insert(ino) {
                    used += rec.size;
                }
                each(dir, name, ino, rec);
            }
        }
        used
    }

    /// Bytes used by the files below `ns` (each inode once), and its files by name.
    fn scan(&self, t: &Tree, ns: u64) -> (u64, Vec<Candidate>) {
        let mut files = Vec::new();
        let used = Self::walk(t, ns, |dir, name, ino, rec| {
            let recent = self.recent.get(&ino).map(|r| *r).unwrap_or(0);
            files.push(Candidate { recency: (recent, rec.atime.max(rec.mtime)), parent: dir, name: name.to_vec(), ino, size: rec.size });
        });
        (used, files)
    }

    /// Bytes used by namespace `ns` (the sum alone, no candidate list: this runs at every
    /// metrics scrape).
    pub fn usage(&self, t: &Tree, ns: u64) -> u64 {
        Self::walk(t, ns, |_, _, _, _| {})
    }

    /// The names to remove, least recently used first, so that every namespace over its
    /// budget comes down to 90 % of it.
    pub fn victims(&self, t: &Tree) -> Vec<Victim> {
        // forget the recency of removed inodes once they pile up
        if self.recent.len() > t.inodes.len() + 10_000 {
            self.recent.retain(|ino, _| t.inodes.contains_key(ino));
        }
        let mut out = Vec::new();
        let mut any = false;
        for &ns in t.dirs.get(&ROOT).into_iter().flat_map(|d| d.values()) {
            let Some(budget) = self.budget_of(t, ns) else { continue };
            any = true;
            let (mut used, mut files) = self.scan(t, ns);
            if used <= budget {
                continue;
            }
            let target = budget / 10 * 9;
            files.sort_by_key(|c| c.recency);
            let mut links: BTreeMap<u64, u32> = BTreeMap::new();
            for c in &files {
                *links.entry(c.ino).or_default() += 1;
            }
            for c in files {
                if used <= target {
                    break;
                }
                let n = links.entry(c.ino).or_default();
                *n -= 1;
                if *n == 0 {
                    used = used.saturating_sub(c.size);
                }
                out.push(Victim { ns, parent: c.parent, name: c.name });
            }
        }
        // no budget anywhere: stop recording opens (and drop what was recorded); a budget set
        // later orders the files used before it by their times alone
        self.active.store(any, Ordering::Relaxed);
        if !any && !self.recent.is_empty() {
            self.recent.clear();
        }
        out
    }

    /// Validate a budget value (`setfattr -v 10GiB`) for `ino`; `0` means none.
    pub fn check(t: &Tree, ino: u64, value: &[u8]) -> FsResult<()> {
        match t.inodes.get(&ino).map(|r| &r.kind) {
            Some(InodeKind::Dir { parent: ROOT }) if ino != ROOT => {}
            _ => return Err(FsError::NotPermitted("user.wombatfs.budget is set on a namespace (top-level) directory")),
        }
        let s = std::str::from_utf8(value).map_err(|_| FsError::Invalid("budget: not text"))?;
        crate::size::parse(s).map(|_| ()).map_err(|_| FsError::Invalid("budget: use a size such as 10GiB or a byte count"))
    }
}

/// The namespace (top-level directory) an inode lives in.
pub fn namespace_of(t: &Tree, ino: u64) -> Option<u64> {
    let mut cur = ino;
    for _ in 0..4096 {
        let parent = match t.inodes.get(&cur)?.kind {
            InodeKind::Dir { parent } => parent,
            _ => t.links(cur)?.first()?.0,
        };
        if parent == ROOT {
            return (cur != ROOT).then_some(cur);
        }
        cur = parent;
    }
    None
}
