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
//!
//! A node that left for good would hold journals and blobs back forever, so nodes hold a
//! lease: each writes a change-feed marker at least every few minutes ([`feed::HEARTBEAT`]).
//! A node whose newest marker is older than the newest marker in the bucket by more than the
//! lease, or one forgotten by hand (`--forget-node`), is *gone*: recorded in `gone/<node>`
//! (a node finding itself there refuses its old cache dir), its snapshots deleted so no node
//! restores its tree, its snapshot's blobs and cursors no longer counted. Its journal still
//! counts until every live node's snapshot covers it; then the journal, registry entry and
//! markers are deleted too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::blob::BlobId;
use crate::codec;
use crate::sync::snapshot;
use crate::index::keys;
use crate::sync::{change, feed};
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
    /// change-feed markers deleted because no reader lists that far back
    pub feed_markers_deleted: usize,
    /// nodes the collector no longer waits for (forgotten, or lease expired)
    pub gone: Vec<String>,
    /// snapshots of gone nodes deleted
    pub snapshots_deleted: usize,
    /// gone nodes whose journal every live node had applied, removed from the bucket
    pub nodes_removed: Vec<String>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The newest snapshot of each node, by node id (snapshot names end in `-<node>`).
async fn newest_snapshots(objects: &dyn ObjectStore) -> Result<BTreeMap<String, String>, StoreError> {
    let mut out = BTreeMap::new();
    for name in objects.list_meta(snapshot::DIR).await? {
        if let Some(node) = snapshot::owner(&name) {
            out.insert(node.to_string(), name.clone()); // names sort by time: the last wins
        }
    }
    Ok(out)
}

/// Registered nodes and nodes with a snapshot, sorted.
fn known_nodes(registered: &[String], snaps: &BTreeMap<String, String>) -> Vec<String> {
    let mut all: Vec<String> = registered.iter().chain(snaps.keys()).cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// What the bucket's nodes may still name.
pub struct References {
    /// nodes (registered or with a snapshot), gone ones included
    pub nodes: usize,
    /// blobs some name may refer to
    pub blobs: HashSet<BlobId>,
    /// per journal: every change up to this seq is covered by every live node's newest snapshot
    pub covered: HashMap<String, u64>,
    /// journals with no batch after what every live node's snapshot covers
    pub drained: HashSet<String>,
}

/// Every blob some live node's names may refer to. Nodes in `gone` are not waited for:
/// neither their snapshot's blobs nor its cursors count (their journals still do, until
/// every live node's snapshot covers them).
pub async fn referenced(objects: &dyn ObjectStore, gone: &BTreeSet<String>) -> Result<References, StoreError> {
    references_of(objects, &nodes(objects).await?, &newest_snapshots(objects).await?, gone).await
}

/// [`referenced`] from the registry and the newest snapshots already listed.
async fn references_of(objects: &dyn ObjectStore, registered: &[String], snaps: &BTreeMap<String, String>, gone: &BTreeSet<String>) -> Result<References, StoreError> {
    let all_nodes = known_nodes(registered, snaps);
    let mut refs = HashSet::new();
    let mut cursors: Vec<HashMap<String, u64>> = Vec::new();
    for node in all_nodes.iter().filter(|n| !gone.contains(*n)) {
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
    let mut drained = HashSet::new();
    for journal in registered {
        let from = cursors.iter().map(|c| c.get(journal.as_str()).copied().unwrap_or(0)).min().unwrap_or(0);
        let tail = batches_after(objects, journal, from).await?;
        if tail.is_empty() {
            drained.insert(journal.clone());
        }
        for b in tail {
            refs.extend(b.changes.iter().filter_map(|(_, c)| c.blob()));
        }
        covered.insert(journal.clone(), from);
    }
    Ok(References { nodes: all_nodes.len(), blobs: refs, covered, drained })
}

/// Where nodes the collector no longer waits for are recorded (`gone/<node>`, its body says
/// why and when): a node finding itself there refuses to start on its old cache dir.
pub const GONE: &str = "gone";

/// How a collection runs.
#[derive(Clone, Debug)]
pub struct Policy {
    /// how long a blob stays unreferenced (across runs) before it is deleted
    pub grace: Duration,
    /// a node whose newest change-feed marker (it writes a heartbeat every few minutes) is
    /// older than this is gone
    pub lease: Duration,
    /// report, delete nothing
    pub dry_run: bool,
}

fn gone_key(node: &str) -> String {
    format!("{GONE}/{node}")
}

/// Record that `node` is gone, and why.
async fn record_gone(objects: &dyn ObjectStore, node: &str, why: String) -> Result<(), StoreError> {
    objects.put_meta(&gone_key(node), why.into_bytes()).await
}

/// Why `node` is recorded as gone, if it is.
pub async fn gone_record(objects: &dyn ObjectStore, node: &str) -> Result<Option<String>, StoreError> {
    match objects.get_meta(&gone_key(node)).await {
        Ok(body) => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Record by hand that `node` left for good: the next collection stops waiting for it.
pub async fn forget_node(objects: &dyn ObjectStore, node: &str) -> Result<(), StoreError> {
    if !change::valid_node_id(node) {
        return Err(StoreError::Config(format!("{node:?} is not a node id")));
    }
    let known = nodes(objects).await?.iter().any(|n| n == node) || newest_snapshots(objects).await?.contains_key(node);
    if !known {
        return Err(StoreError::Config(format!("no node {node} in this bucket (neither registered nor with a snapshot)")));
    }
    record_gone(objects, node, format!("forgotten by hand (wombatfs gc --forget-node) at unix time {}", now_secs())).await
}

/// The nodes recorded as gone, and those whose lease expired (recorded now unless `dry_run`).
async fn gone_nodes(objects: &dyn ObjectStore, markers: &[feed::Marker], policy: &Policy) -> Result<BTreeSet<String>, StoreError> {
    let mut gone: BTreeSet<String> = objects.list_meta(GONE).await?.iter().filter_map(|k| k.strip_prefix(GONE)?.strip_prefix('/')).map(str::to_string).collect();
    let newest = feed::newest_by_node(markers);
    // measured against the newest marker in the bucket, not this clock: a fleet that was
    // down together (or a collector with a wrong clock) expires nobody
    let newest_any = newest.values().copied().max().unwrap_or(0);
    let cutoff = newest_any.saturating_sub(policy.lease.as_millis() as u64);
    for (node, ms) in newest {
        if ms < cutoff && !gone.contains(node) {
            tracing::warn!(node, last_seen_ms = ms, lease_secs = policy.lease.as_secs(), "a node's lease expired: the collector no longer waits for it");
            if !policy.dry_run {
                let why = format!("lease expired: no change-feed marker since unix ms {ms} (lease {} s), recorded at unix time {}", policy.lease.as_secs(), now_secs());
                record_gone(objects, node, why).await?;
            }
            gone.insert(node.to_string());
        }
    }
    Ok(gone)
}

/// Delete what is left of a gone node whose journal every live node has applied: its
/// journal, registry entry and feed markers (its `gone/` record stays).
async fn remove_node(objects: &dyn ObjectStore, node: &str, markers: &[feed::Marker]) -> Result<(), StoreError> {
    for key in objects.list_meta(&change::journal_dir(node)).await? {
        keep_carried(objects, &key).await?;
        objects.delete_meta(&key).await?;
    }
    for m in markers.iter().filter(|m| m.node == node) {
        objects.delete_meta(&m.key()).await?;
    }
    objects.delete_meta(&change::registry_key(node)).await
}

/// Delete a gone node's snapshots, so no node restores a tree the collector no longer keeps.
async fn drop_snapshots(objects: &dyn ObjectStore, node: &str) -> Result<usize, StoreError> {
    let mine: Vec<String> = objects.list_meta(snapshot::DIR).await?.into_iter().filter(|n| snapshot::owner(n) == Some(node)).collect();
    for name in &mine {
        objects.delete_meta(name).await?;
    }
    Ok(mine.len())
}

/// Delete journal batches every node's newest snapshot already covers (nobody restoring or
/// catching up reads them again). Returns how many were deleted.
async fn compact_journals(objects: &dyn ObjectStore, covered: &HashMap<String, u64>, gone: &BTreeSet<String>, dry_run: bool) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for (node, upto) in covered {
        let keys = objects.list_meta(&change::journal_dir(node)).await?;
        let firsts: Vec<u64> = keys.iter().filter_map(|k| change::parse_batch_key(k).map(|(_, f)| f)).collect();
        // batch i ends before batch i+1 starts; the newest batch is always kept
        for (i, key) in keys.iter().enumerate().take(keys.len().saturating_sub(1)) {
            if firsts.get(i + 1).is_some_and(|next| next.saturating_sub(1) <= *upto) {
                if !dry_run {
                    if gone.contains(node) {
                        keep_carried(objects, key).await?;
                    }
                    objects.delete_meta(key).await?;
                }
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// Before a gone node's batch is deleted: the small blobs it carries (`Batch::inline`) that
/// never became objects of their own — the node left before its queued uploads were done —
/// are uploaded from it, so the names every live node bound to them keep their bytes. A live
/// node's batch needs none of this: the collector deletes it only once that node's own
/// snapshot covers it, and a node writes a snapshot only with no upload pending.
async fn keep_carried(objects: &dyn ObjectStore, key: &str) -> Result<(), StoreError> {
    let batch = change::Batch::open(&objects.get_meta(key).await?).map_err(|why| StoreError::Config(format!("{key}: {why}")))?;
    for i in batch.inline.iter().filter(|i| i.verified()) {
        if objects.has_blob(&i.id).await? {
            continue;
        }
        let tmp = std::env::temp_dir().join(format!("wombatfs-gc-{}-{}", std::process::id(), i.id));
        std::fs::write(&tmp, &i.bytes).map_err(|e| StoreError::io("write a carried blob for upload", e))?;
        let put = objects.put_blob(&i.id, &tmp).await;
        let _ = std::fs::remove_file(&tmp);
        put?;
        tracing::info!(%key, id = %i.id, "a gone node's carried blob uploaded before its batch is deleted");
    }
    Ok(())
}

/// Delete the change-feed markers older than [`feed::KEEP`], except each node's newest.
async fn compact_feed(objects: &dyn ObjectStore, markers: &[feed::Marker], dry_run: bool) -> Result<usize, StoreError> {
    let old = feed::expired(markers, change::now_ms());
    if !dry_run {
        for m in &old {
            objects.delete_meta(&m.key()).await?;
        }
    }
    Ok(old.len())
}

/// Collect: record new candidates, delete those unreferenced for at least `grace`; stop
/// waiting for nodes that are gone (forgotten by hand, or lease expired) and remove what is
/// left of them once every live node has applied their journal.
pub async fn collect(objects: &dyn ObjectStore, policy: &Policy) -> Result<GcReport, StoreError> {
    if objects.is_local() {
        return Err(StoreError::Config("a local store belongs to one node, which deletes unreferenced blobs itself; gc is for shared buckets".into()));
    }
    let dry_run = policy.dry_run;
    let markers: Vec<feed::Marker> = objects.list_meta(feed::FEED).await?.iter().filter_map(|k| feed::Marker::parse(k)).collect();
    let gone = gone_nodes(objects, &markers, policy).await?;
    let (registered, snaps) = (nodes(objects).await?, newest_snapshots(objects).await?);
    let known = known_nodes(&registered, &snaps);
    if !known.is_empty() && known.iter().all(|n| gone.contains(n)) {
        return Err(StoreError::Config("every node of the bucket is gone: refusing to decide that nothing is referenced (a new node can restore the tree only from a live node's snapshot)".into()));
    }
    let mut report = GcReport { gone: gone.iter().cloned().collect(), ..Default::default() };
    if !dry_run {
        // before anything it names is collected, no new node may restore a gone node's tree
        for node in &gone {
            report.snapshots_deleted += drop_snapshots(objects, node).await?;
        }
    }
    // the snapshots listed before the gone nodes' were dropped: those are skipped anyway
    let References { nodes, blobs: refs, covered, drained } = references_of(objects, &registered, &snaps, &gone).await?;
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
    report.nodes = nodes;
    report.blobs = blobs.len();
    report.referenced = refs.len();
    let mut next = BTreeMap::new();
    for id in blobs.into_iter().filter(|id| !refs.contains(id)) {
        let first = pending.remove(&id).unwrap_or(now);
        if now.saturating_sub(first) >= policy.grace.as_secs() {
            if !dry_run {
                objects.delete_blob(&id).await?;
            }
            report.deleted.push(id);
        } else {
            next.insert(id, first);
            report.waiting += 1;
        }
    }
    report.journal_batches_deleted = compact_journals(objects, &covered, &gone, dry_run).await?;
    for node in gone.iter().filter(|n| drained.contains(*n)) {
        if !dry_run {
            remove_node(objects, node, &markers).await?;
        }
        report.nodes_removed.push(node.clone());
    }
    let kept: Vec<feed::Marker> = markers.into_iter().filter(|m| !report.nodes_removed.contains(&m.node)).collect();
    report.feed_markers_deleted = compact_feed(objects, &kept, dry_run).await?;
    if !dry_run {
        let body = bincode::serialize(&next).map_err(|e| StoreError::Config(e.to_string()))?;
        objects.put_meta(PENDING, codec::seal_meta(&body)).await?;
    }
    Ok(report)
}
