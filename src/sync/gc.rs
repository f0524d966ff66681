//! The collector of a shared bucket: deletes blobs that no node's names refer to, once they
//! have stayed unreferenced for a grace period.
//!
//! What is referenced is computed from the bucket alone, O(nodes + journal since the oldest
//! snapshot): for each node, the blobs of its newest snapshot; plus every blob a journal
//! change published after the *oldest* cursor any node's snapshot holds for that journal (a
//! node without a snapshot counts as cursor 0, i.e. the whole journal). This over-approximates
//! every node's current tree, so a blob some node still names is never a candidate.
//! Journal batches that every node's newest snapshot covers are deleted too (a node restoring
//! starts from a snapshot, a running node's cursor is past its own snapshot's), so journals
//! stay short.
//! A candidate is recorded in `gc/pending` with the time it was first seen unreferenced and
//! deleted only by a run at least `grace` later that still finds it unreferenced; a blob that
//! becomes referenced again in between leaves the list. The grace period covers nodes that
//! lag (poll interval, a daemon that was down) and uploads whose journal entry is not
//! published yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::blob::BlobId;
use crate::codec;
use crate::sync::snapshot;
use crate::index::keys;
use crate::sync::change;
use crate::sync::names::{batches_after, nodes};
use crate::tiers::{ObjectStore, StoreError};

/// Where the candidates and the time each was first seen unreferenced are kept.
pub const PENDING: &str = "gc/pending";

/// What a collection found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// nodes (registered or with a snapshot)
    pub nodes: usize,
    /// blobs in the bucket
    pub blobs: usize,
    /// blobs some name may refer to
    pub referenced: usize,
    /// unreferenced blobs still inside their grace period
    pub waiting: usize,
    /// blobs deleted (or, in a dry run, that would have been)
    pub deleted: Vec<BlobId>,
    /// journal batches deleted because every node's snapshot covers them
    pub journal_batches_deleted: usize,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The newest snapshot of each node, by node id (snapshot names end in `-<node>`).
async fn newest_snapshots(objects: &dyn ObjectStore) -> Result<BTreeMap<String, String>, StoreError> {
    let mut out = BTreeMap::new();
    for name in objects.list_meta(snapshot::DIR).await? {
        if let Some((_, node)) = name.rsplit_once('-') {
            out.insert(node.to_string(), name.clone()); // names sort by time: the last wins
        }
    }
    Ok(out)
}

/// What the bucket's nodes may still name.
pub struct References {
    /// nodes (registered or with a snapshot)
    pub nodes: usize,
    /// blobs some name may refer to
    pub blobs: HashSet<BlobId>,
    /// per journal: every change up to this seq is covered by every node's newest snapshot
    pub covered: HashMap<String, u64>,
}

/// Every blob some node's names may refer to.
pub async fn referenced(objects: &dyn ObjectStore) -> Result<References, StoreError> {
    let snaps = newest_snapshots(objects).await?;
    let registered = nodes(objects).await?;
    let mut all_nodes = registered.clone();
    all_nodes.extend(snaps.keys().cloned());
    all_nodes.sort();
    all_nodes.dedup();
    let mut refs = HashSet::new();
    let mut cursors: Vec<HashMap<String, u64>> = Vec::new();
    for node in &all_nodes {
        let Some(name) = snaps.get(node) else {
            cursors.push(HashMap::new()); // no snapshot: every journal counts from the start
            continue;
        };
        let kv = snapshot::open_snapshot(name, &objects.get_meta(name).await?)?;
        let mut mine = HashMap::new();
        for (k, v) in &kv {
            match k.first() {
                Some(&keys::BLOB) => refs.extend(keys::blob_after_prefix(k)),
                Some(&keys::CURSOR) => {
                    if let Some((n, seq)) = keys::decode_cursor(k, v) {
                        mine.insert(n.to_string(), seq);
                    }
                }
                _ => {}
            }
        }
        cursors.push(mine);
    }
    let mut covered = HashMap::new();
    for journal in registered {
        let from = cursors.iter().map(|c| c.get(&journal).copied().unwrap_or(0)).min().unwrap_or(0);
        for b in batches_after(objects, &journal, from).await? {
            refs.extend(b.changes.iter().filter_map(|(_, c)| c.blob()));
        }
        covered.insert(journal, from);
    }
    Ok(References { nodes: all_nodes.len(), blobs: refs, covered })
}

/// Delete journal batches every node's newest snapshot already covers (nobody restoring or
/// catching up reads them again). Returns how many were deleted.
async fn compact_journals(objects: &dyn ObjectStore, covered: &HashMap<String, u64>, dry_run: bool) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for (node, upto) in covered {
        let keys = objects.list_meta(&change::journal_dir(node)).await?;
        let firsts: Vec<u64> = keys.iter().filter_map(|k| change::parse_batch_key(k).map(|(_, f)| f)).collect();
        // batch i ends before batch i+1 starts; the newest batch is always kept
        for (i, key) in keys.iter().enumerate().take(keys.len().saturating_sub(1)) {
            if firsts.get(i + 1).is_some_and(|next| next.saturating_sub(1) <= *upto) {
                if !dry_run {
                    objects.delete_meta(key).await?;
                }
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// Collect: record new candidates, delete those unreferenced for at least `grace`.
pub async fn collect(objects: &dyn ObjectStore, grace: Duration, dry_run: bool) -> Result<GcReport, StoreError> {
    if objects.is_local() {
        return Err(StoreError::Config("a local store belongs to one node, which deletes unreferenced blobs itself; gc is for shared buckets".into()));
    }
    let References { nodes, blobs: refs, covered } = referenced(objects).await?;
    let blobs = objects.list_blobs().await?;
    if nodes == 0 && !blobs.is_empty() {
        return Err(StoreError::Config("the bucket has blobs but no node registry, snapshot or journal: refusing to decide that nothing is referenced".into()));
    }
    let mut pending: BTreeMap<BlobId, u64> = match objects.get_meta(PENDING).await {
        Ok(env) => codec::open_meta(&env).ok().and_then(|b| bincode::deserialize(&b).ok()).unwrap_or_default(),
        // first run: nothing pending yet
        Err(e) if e.is_missing() => BTreeMap::new(),
        // any other failure ends the run (it would restart every grace period)
        Err(e) => return Err(e),
    };
    let now = now_secs();
    let mut report = GcReport { nodes, blobs: blobs.len(), referenced: refs.len(), ..Default::default() };
    let mut next = BTreeMap::new();
    for id in blobs.into_iter().filter(|id| !refs.contains(id)) {
        let first = pending.remove(&id).unwrap_or(now);
        if now.saturating_sub(first) >= grace.as_secs() {
            if !dry_run {
                objects.delete_blob(&id).await?;
            }
            report.deleted.push(id);
        } else {
            next.insert(id, first);
            report.waiting += 1;
        }
    }
    report.journal_batches_deleted = compact_journals(objects, &covered, dry_run).await?;
    if !dry_run {
        let body = bincode::serialize(&next).map_err(|e| StoreError::Config(e.to_string()))?;
        objects.put_meta(PENDING, codec::seal_meta(&body)).await?;
    }
    Ok(report)
}
