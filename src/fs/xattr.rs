//! Extended attributes: `user.*` persisted per inode, plus virtual attributes: on files
//! `user.wombatfs.blake3` and `user.wombatfs.tier`; on a namespace directory the settable
//! `user.wombatfs.budget` and the read-only `user.wombatfs.usage`; on the root
//! `user.wombatfs.stats`; and the write-only `user.wombatfs.warm` on files (set it to bring
//! the file's blob into the flat tier). Other namespaces are not supported.

use crate::fs::core::FsCore;
use crate::fs::error::{FsError, FsResult};
use crate::fs::budget::{BUDGET, USAGE};
use crate::fs::tree::{Tx, ROOT};
use crate::index::records::{InodeKind, Ts};

const USER: &[u8] = b"user.";
const VIRTUAL: &[u8] = b"user.wombatfs.";
const BLAKE3: &[u8] = b"user.wombatfs.blake3";
const TIER: &[u8] = b"user.wombatfs.tier";
const STATS: &[u8] = b"user.wombatfs.stats";
/// Setting it on a file brings its blob into the flat tier (from foyer or the object store)
/// and returns once it is there: what `wombatfs warm` does per file.
const WARM: &[u8] = b"user.wombatfs.warm";
/// Largest value accepted (as ext4's 64 KiB limit).
pub const MAX_VALUE: usize = 64 * 1024;
/// Total xattr bytes per inode.
pub const MAX_TOTAL: usize = 1024 * 1024;

impl FsCore {
    /// `getxattr`.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if !name.starts_with(USER) {
            // EOPNOTSUPP (not ENODATA) lets tools such as `ls -l` stop asking for ACLs and
            // security labels on this filesystem after the first file
            return Err(FsError::NotSupported("only user.* extended attributes"));
        }
        let t = self.read_tree();
        let rec = t.get(ino)?;
        match (name, &rec.kind) {
            (BLAKE3, InodeKind::File { blob }) => Ok(blob.to_hex().into_bytes()),
            (TIER, InodeKind::File { blob }) => Ok(self.store.tier_of(blob).as_bytes().to_vec()),
            (USAGE, InodeKind::Dir { parent: ROOT }) if ino != ROOT => {
                drop(t);
                Ok(self.namespace_usage(ino).to_string().into_bytes())
            }
            (BUDGET, InodeKind::Dir { parent: ROOT }) if ino != ROOT && !rec.xattrs.contains_key(BUDGET) => {
                // a budget from the config file
                self.budgets.budget_of(&t, ino).map(|b| b.to_string().into_bytes()).ok_or(FsError::NoAttr)
            }
            (STATS, _) if ino == ROOT => Ok(self.stats_text().into_bytes()),
            _ => rec.xattrs.get(name).cloned().ok_or(FsError::NoAttr),
        }
    }

    /// Counters of the tiers, as `key=value` pairs on one line (`getfattr -n
    /// user.wombatfs.stats /mnt`); the full set is at `/metrics` and in `wombatfs stats`.
    pub fn stats_text(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let flat = self.store.flat();
        let up = self.store.upload_stats();
        let mut pairs = vec![
            ("flat_bytes", flat.bytes()),
            ("flat_limit", flat.limit()),
            ("flat_blobs", flat.len() as u64),
            ("flat_evictions", self.store.eviction().evictions.load(Relaxed)),
            ("object_store_gets", self.store.read_path().object_gets.load(Relaxed)),
            ("object_store_timeouts", self.store.read_path().store_timeouts.load(Relaxed)),
            ("uploads_pending", up.pending.load(Relaxed)),
            ("uploads_done", up.uploaded.load(Relaxed)),
        ];
        if let Some(f) = self.store.foyer() {
            let (mem, disk) = f.capacity();
            pairs.extend([
                ("foyer_memory", mem),
                ("foyer_disk", disk),
                ("foyer_hits", f.stats.hits.load(Relaxed)),
                ("foyer_misses", f.stats.misses.load(Relaxed)),
                ("foyer_inserts", f.stats.inserts.load(Relaxed)),
            ]);
        }
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    /// `listxattr`: NUL-terminated names.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let t = self.read_tree();
        let rec = t.get(ino)?;
        let mut out = Vec::new();
        let virtuals: &[&[u8]] = match rec.kind {
            InodeKind::File { .. } => &[BLAKE3, TIER],
            InodeKind::Dir { .. } if ino == ROOT => &[STATS],
            InodeKind::Dir { parent: ROOT } if !rec.xattrs.contains_key(BUDGET) && self.budgets.budget_of(&t, ino).is_some() => &[USAGE, BUDGET],
            InodeKind::Dir { parent: ROOT } => &[USAGE],
            _ => &[],
        };
        for n in virtuals {
            out.extend_from_slice(n);
            out.push(0);
        }
        for n in rec.xattrs.keys() {
            out.extend_from_slice(n);
            out.push(0);
        }
        Ok(out)
    }

    /// `setxattr` with `XATTR_CREATE` / `XATTR_REPLACE` semantics.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if name == WARM {
            return self.warm(ino);
        }
        if name == BUDGET {
            crate::fs::budget::Budgets::check(&self.read_tree(), ino, value)?;
        } else {
            Self::check_user_name(name)?;
        }
        if value.len() > MAX_VALUE {
            return Err(FsError::AttrTooBig);
        }
        let mut t = self.write_tree();
        let rec = t.get_mut(ino)?;
        let exists = rec.xattrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttr);
        }
        let total: usize = rec.xattrs.iter().filter(|(k, _)| k.as_slice() != name).map(|(k, v)| k.len() + v.len()).sum();
        if total + name.len() + value.len() > MAX_TOTAL {
            return Err(FsError::NoSpace("extended attributes of one inode"));
        }
        rec.xattrs.insert(name.to_vec(), value.to_vec());
        rec.ctime = Ts::now();
        let mut tx = Tx::default();
        tx.put_inode(rec);
        t.commit(tx, &self.index, &self.store)?;
        drop(t);
        if name == BUDGET {
            self.enforce_budgets();
        }
        Ok(())
    }

    /// Bring a file's blob into the flat tier; returns once it is there (verified). Waits on
    /// the object store when the blob is only there: call off the FUSE workers.
    pub fn warm(&self, ino: u64) -> FsResult<()> {
        let (blob, size) = {
            let t = self.read_tree();
            let rec = t.get(ino)?;
            match rec.kind {
                InodeKind::File { blob } => (blob, rec.size),
                _ => return Err(FsError::NotSupported("user.wombatfs.warm is set on files")),
            }
        };
        if size > 0 {
            self.store.open_blob(&blob)?;
        }
        Ok(())
    }

    /// `removexattr`.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if name != BUDGET {
            Self::check_user_name(name)?;
        }
        self.read_tree().get(ino)?;
        let mut t = self.write_tree();
        let rec = t.get_mut(ino)?;
        if rec.xattrs.remove(name).is_none() {
            return Err(FsError::NoAttr);
        }
        rec.ctime = Ts::now();
        let mut tx = Tx::default();
        tx.put_inode(rec);
        t.commit(tx, &self.index, &self.store)
    }

    fn check_user_name(name: &[u8]) -> FsResult<()> {
        if name.len() > 255 {
            return Err(FsError::Range);
        }
        if !name.starts_with(USER) || name.len() == USER.len() {
            return Err(FsError::NotSupported("only user.* extended attributes"));
        }
        if name.starts_with(VIRTUAL) {
            return Err(FsError::NotPermitted("user.wombatfs.* attributes are read-only"));
        }
        Ok(())
    }
}
