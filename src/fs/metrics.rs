//! The scrape-time gauges of a mount: the state of its tiers, upload queue, journal and
//! namespaces, read when `/metrics` is asked for (the counters move where the work happens).

use crate::fs::core::FsCore;
use crate::fs::tree::ROOT;
use crate::index::records::InodeKind;
use crate::metrics::{Metrics, NamespaceLabel, TierLabel};

impl FsCore {
    /// Set the gauges of `m` from this mount's state now.
    pub fn refresh_metrics(&self, m: &Metrics) {
        let flat = self.store.flat();
        m.tier_used_bytes.get_or_create(&TierLabel { tier: "flat" }).set(flat.bytes() as i64);
        m.tier_capacity_bytes.get_or_create(&TierLabel { tier: "flat" }).set(flat.limit() as i64);
        if let Some(f) = self.store.foyer() {
            let (mem, disk) = f.capacity();
            m.tier_capacity_bytes.get_or_create(&TierLabel { tier: "foyer_memory" }).set(mem as i64);
            m.tier_capacity_bytes.get_or_create(&TierLabel { tier: "foyer_disk" }).set(disk as i64);
        }
        let q = self.store.upload_queue();
        m.upload_queue_blobs.set(q.blobs as i64);
        m.upload_queue_bytes.set(q.bytes as i64);
        m.upload_queue_oldest_seconds.set(q.oldest.as_secs_f64());
        let t = self.read_tree();
        let (unpublished, lag) = t.outbox.lag();
        m.journal_unpublished.set(unpublished as i64);
        m.journal_publish_lag_seconds.set(lag.as_secs_f64());
        m.inodes.set(t.inodes.len() as i64);
        // namespaces come and go: the families are rebuilt
        m.namespace_used_bytes.clear();
        m.namespace_budget_bytes.clear();
        for (name, &ns) in t.dirs.get(&ROOT).into_iter().flatten() {
            if !matches!(t.inodes.get(&ns).map(|r| &r.kind), Some(InodeKind::Dir { .. })) {
                continue;
            }
            let label = NamespaceLabel { namespace: String::from_utf8_lossy(name).into_owned() };
            m.namespace_used_bytes.get_or_create(&label).set(self.budgets.usage(&t, ns) as i64);
            if let Some(b) = self.budgets.budget_of(&t, ns) {
                m.namespace_budget_bytes.get_or_create(&label).set(b as i64);
            }
        }
        drop(t);
        m.index_disk_bytes.set(crate::sys::du(&self.cache_dir().join("index")) as i64);
    }

    /// The name of namespace `ns`, for labels and logs.
    pub fn namespace_name(&self, ns: u64) -> String {
        let t = self.read_tree();
        t.links(ns).and_then(|n| n.first()).map(|(_, name)| String::from_utf8_lossy(name).into_owned()).unwrap_or_else(|| ns.to_string())
    }
}
