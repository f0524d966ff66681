//! The process's metrics, in the Prometheus text format: counters and histograms updated where
//! the work happens (FUSE requests, tier reads, object-store calls, uploads, the change
//! journal), gauges set at scrape time from the mount's state ([`Metrics::render`] takes a
//! closure that sets them). One set per process: a library embedding several nodes in one
//! process sees their sums. Every metric is described in docs/operations.md.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// An operation's name (a FUSE op, an object-store call).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// e.g. `lookup`, `read`, `get_blob`
    pub op: &'static str,
}

/// A failed FUSE request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrnoLabel {
    /// the FUSE op
    pub op: &'static str,
    /// the errno's symbolic name (`ENOENT`…)
    pub errno: &'static str,
}

/// An object-store call and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// the call (`put_blob`, `fetch_blob`, `list_meta`…)
    pub op: &'static str,
    /// `ok`, or the error kind (`timeout`, `auth`, `not_found`, `throttled`, `server`,
    /// `network`, `client`, `corrupt`, `io`, `config`)
    pub outcome: &'static str,
}

/// A tier of the read path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    /// `flat`, `foyer_memory`, `foyer_disk`, `object_store`
    pub tier: &'static str,
}

/// A namespace (top-level directory).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    /// its name
    pub namespace: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;
type FGauge = Gauge<f64, AtomicU64>;

/// Latency buckets from 10 µs to about 84 s (doubling): FUSE ops on the hot path take
/// microseconds, object-store calls tens of milliseconds to seconds.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 24))
}

/// Delay buckets from 10 ms to about 164 s (doubling), for the change feed.
fn delay() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// FUSE requests by op, with their latency (request to reply)
    pub fuse_latency: Hist<OpLabel>,
    /// FUSE requests answered with an error, by op and errno
    pub fuse_errors: Family<ErrnoLabel, Counter>,
    /// bytes returned by READ requests (reads the page cache did not serve)
    pub fuse_read_bytes: Counter,
    /// bytes accepted by WRITE requests
    pub fuse_write_bytes: Counter,
    /// blob opens served by a tier (the first tier down the path that held the blob)
    pub tier_hits: Family<TierLabel, Counter>,
    /// blob opens a tier could not serve (the read went on down)
    pub tier_misses: Family<TierLabel, Counter>,
    /// bytes read from a tier: READ bytes served from flat files, blob bytes brought up from
    /// foyer or downloaded from the object store
    pub tier_read_bytes: Family<TierLabel, Counter>,
    /// blobs evicted from the flat tier (their bytes stay in foyer and the object store)
    pub flat_evictions: Counter,
    /// opens served by FUSE passthrough (the kernel reads the flat file itself)
    pub passthrough_opens: Counter,
    /// FUSE requests that arrived on an io_uring queue (`--fuse-transport uring`)
    pub fuse_uring_requests: Counter,
    /// files removed because their namespace was over its budget
    pub budget_removals: Family<NamespaceLabel, Counter>,
    /// object-store calls by op and outcome
    pub store_requests: Family<OutcomeLabel, Counter>,
    /// object-store call latency by op
    pub store_latency: Hist<OpLabel>,
    /// bytes sent (puts) and received (gets) by op
    pub store_bytes: Family<OpLabel, Counter>,
    /// requests retried inside an object-store call, by op
    pub store_retries: Family<OpLabel, Counter>,
    /// reads that gave up waiting for the object store (`--store-timeout`)
    pub store_timeouts: Counter,
    /// blobs uploaded by the upload queue
    pub uploads: Counter,
    /// bytes uploaded by the upload queue
    pub upload_bytes: Counter,
    /// upload attempts that failed (each retried)
    pub upload_failures: Counter,
    /// blobs waiting in the upload queue or in flight (scrape time)
    pub upload_queue_blobs: Gauge,
    /// their bytes (scrape time)
    pub upload_queue_bytes: Gauge,
    /// how long the oldest queued upload has waited (scrape time)
    pub upload_queue_oldest_seconds: FGauge,
    /// this node's changes published to its journal
    pub journal_published: Counter,
    /// this node's changes not yet published (scrape time)
    pub journal_unpublished: Gauge,
    /// how long the oldest unpublished change has waited (scrape time)
    pub journal_publish_lag_seconds: FGauge,
    /// other nodes' changes applied here
    pub journal_applied: Counter,
    /// feed markers this node could not write
    pub feed_marker_failures: Counter,
    /// feed markers that showed a missed batch, so a journal was listed
    pub feed_catch_ups: Counter,
    /// from a batch's publication (its node's clock) to its application here
    pub journal_apply_delay: Histogram,
    /// flat tier bytes and bound (scrape time)
    pub tier_used_bytes: Family<TierLabel, Gauge>,
    /// bounds of the local tiers (scrape time)
    pub tier_capacity_bytes: Family<TierLabel, Gauge>,
    /// bytes of files in each namespace (scrape time)
    pub namespace_used_bytes: Family<NamespaceLabel, Gauge>,
    /// each namespace's budget, where one is set (scrape time)
    pub namespace_budget_bytes: Family<NamespaceLabel, Gauge>,
    /// names (inodes) in the tree (scrape time)
    pub inodes: Gauge,
    /// bytes of the index directory on disk (scrape time)
    pub index_disk_bytes: Gauge,
    /// the daemon's resident memory (scrape time)
    pub resident_memory_bytes: Gauge,
    /// start of the process (seconds since the epoch)
    pub start_time_seconds: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("wombatfs");
        let m = Metrics {
            fuse_latency: Family::new_with_constructor(latency),
            fuse_errors: Family::default(),
            fuse_read_bytes: Counter::default(),
            fuse_write_bytes: Counter::default(),
            tier_hits: Family::default(),
            tier_misses: Family::default(),
            tier_read_bytes: Family::default(),
            flat_evictions: Counter::default(),
            passthrough_opens: Counter::default(),
            fuse_uring_requests: Counter::default(),
            budget_removals: Family::default(),
            store_requests: Family::default(),
            store_latency: Family::new_with_constructor(latency),
            store_bytes: Family::default(),
            store_retries: Family::default(),
            store_timeouts: Counter::default(),
            uploads: Counter::default(),
            upload_bytes: Counter::default(),
            upload_failures: Counter::default(),
            upload_queue_blobs: Gauge::default(),
            upload_queue_bytes: Gauge::default(),
            upload_queue_oldest_seconds: FGauge::default(),
            journal_published: Counter::default(),
            journal_unpublished: Gauge::default(),
            journal_publish_lag_seconds: FGauge::default(),
            journal_applied: Counter::default(),
            feed_marker_failures: Counter::default(),
            feed_catch_ups: Counter::default(),
            journal_apply_delay: delay(),
            tier_used_bytes: Family::default(),
            tier_capacity_bytes: Family::default(),
            namespace_used_bytes: Family::default(),
            namespace_budget_bytes: Family::default(),
            inodes: Gauge::default(),
            index_disk_bytes: Gauge::default(),
            resident_memory_bytes: Gauge::default(),
            start_time_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("fuse_request_duration_seconds", "FUSE requests by op: latency from request to reply", m.fuse_latency.clone());
        r.register("fuse_errors", "FUSE requests answered with an error, by op and errno", m.fuse_errors.clone());
        r.register("fuse_read_bytes", "Bytes returned by READ requests (reads the kernel page cache did not serve)", m.fuse_read_bytes.clone());
        r.register("fuse_write_bytes", "Bytes accepted by WRITE requests", m.fuse_write_bytes.clone());
        r.register("tier_hits", "Blob opens served by a tier (the first tier down the read path that held the blob)", m.tier_hits.clone());
        r.register("tier_misses", "Blob opens a tier could not serve", m.tier_misses.clone());
        r.register("tier_read_bytes", "Bytes read from a tier: READ bytes served from flat files, blob bytes brought up from foyer or downloaded from the object store", m.tier_read_bytes.clone());
        r.register("flat_evictions", "Blobs evicted from the flat tier to stay within --flat-size", m.flat_evictions.clone());
        r.register("passthrough_opens", "Opens served by FUSE passthrough: the kernel reads the blob's flat file (or, with --passthrough read-write, writes the staging file), no READ or WRITE reaches the daemon", m.passthrough_opens.clone());
        r.register("fuse_uring_requests", "FUSE requests that arrived on an io_uring queue (--fuse-transport uring) rather than /dev/fuse", m.fuse_uring_requests.clone());
        r.register("budget_removals", "Files removed because their namespace was over its budget", m.budget_removals.clone());
        r.register("object_store_requests", "Object-store calls by op and outcome", m.store_requests.clone());
        r.register("object_store_request_duration_seconds", "Object-store call latency by op (retries inside a call included)", m.store_latency.clone());
        r.register("object_store_bytes", "Bytes sent (put ops) or received (get and fetch ops) by op", m.store_bytes.clone());
        r.register("object_store_retries", "Requests retried inside an object-store call, by op", m.store_retries.clone());
        r.register("object_store_timeouts", "Reads that gave up waiting for the object store (--store-timeout)", m.store_timeouts.clone());
        r.register("uploads", "Blobs the upload queue stored in the object store", m.uploads.clone());
        r.register("upload_bytes", "Bytes the upload queue stored in the object store", m.upload_bytes.clone());
        r.register("upload_failures", "Upload attempts that failed (each is retried; no blob is dropped)", m.upload_failures.clone());
        r.register("upload_queue_blobs", "Blobs waiting in the upload queue or in flight", m.upload_queue_blobs.clone());
        r.register("upload_queue_bytes", "Bytes of the blobs waiting in the upload queue or in flight", m.upload_queue_bytes.clone());
        r.register("upload_queue_oldest_age_seconds", "How long the oldest queued upload has waited", m.upload_queue_oldest_seconds.clone());
        r.register("journal_changes_published", "This node's changes published to its journal in the bucket", m.journal_published.clone());
        r.register("journal_unpublished_changes", "This node's committed changes not yet in the bucket", m.journal_unpublished.clone());
        r.register("journal_publish_lag_seconds", "How long the oldest unpublished change of this node has waited", m.journal_publish_lag_seconds.clone());
        r.register("journal_changes_applied", "Other nodes' changes applied on this node", m.journal_applied.clone());
        r.register("feed_marker_failures", "Change-feed markers this node could not write (the other nodes find the batch at its next marker)", m.feed_marker_failures.clone());
        r.register("feed_catch_ups", "Change-feed markers ahead of this node's cursor, after which that node's journal was listed", m.feed_catch_ups.clone());
        r.register("journal_apply_delay_seconds", "From a batch's publication (by its node's clock) to its application here", m.journal_apply_delay.clone());
        r.register("tier_used_bytes", "Bytes held by a local tier", m.tier_used_bytes.clone());
        r.register("tier_capacity_bytes", "Bound of a local tier", m.tier_capacity_bytes.clone());
        r.register("namespace_used_bytes", "Bytes of the files in a namespace", m.namespace_used_bytes.clone());
        r.register("namespace_budget_bytes", "Budget of a namespace, where one is set", m.namespace_budget_bytes.clone());
        r.register("inodes", "Inodes (names) in the tree", m.inodes.clone());
        r.register("index_disk_bytes", "Bytes of the metadata index on disk", m.index_disk_bytes.clone());
        r.register("resident_memory_bytes", "Resident memory of the daemon", m.resident_memory_bytes.clone());
        r.register("start_time_seconds", "Start time of the daemon, seconds since the epoch", m.start_time_seconds.clone());
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        m.start_time_seconds.set(start as i64);
        Metrics { registry: r, ..m }
    }

    /// The Prometheus text exposition, after `refresh` set the scrape-time gauges.
    pub fn render(&self, refresh: impl FnOnce(&Metrics)) -> String {
        refresh(self);
        self.resident_memory_bytes.set(crate::sys::resident_bytes().unwrap_or(0) as i64);
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Record an object-store call.
    pub fn store_call(&self, op: &'static str, outcome: &'static str, took: Duration, bytes: u64) {
        self.store_requests.get_or_create(&OutcomeLabel { op, outcome }).inc();
        self.store_latency.get_or_create(&OpLabel { op }).observe(took.as_secs_f64());
        if bytes > 0 {
            self.store_bytes.get_or_create(&OpLabel { op }).inc_by(bytes);
        }
    }

    /// Count a blob open `tier` served with the `n` bytes it brought up.
    pub fn tier_served(&self, tier: &'static str, n: u64) {
        self.tier_hit(tier);
        self.tier_bytes(tier, n);
    }

    /// Count a blob open served by `tier`.
    pub fn tier_hit(&self, tier: &'static str) {
        self.tier_hits.get_or_create(&TierLabel { tier }).inc();
    }

    /// Count a blob open `tier` could not serve.
    pub fn tier_miss(&self, tier: &'static str) {
        self.tier_misses.get_or_create(&TierLabel { tier }).inc();
    }

    /// Count bytes read from `tier`.
    pub fn tier_bytes(&self, tier: &'static str, n: u64) {
        self.tier_read_bytes.get_or_create(&TierLabel { tier }).inc_by(n);
    }

    /// Record a FUSE request that took `took` (and its errno, if it failed).
    pub fn fuse_request(&self, op: &'static str, took: Duration) {
        self.fuse_latency.get_or_create(&OpLabel { op }).observe(took.as_secs_f64());
    }

    /// Count a failed FUSE request.
    pub fn fuse_error(&self, op: &'static str, errno: i32) {
        self.fuse_errors.get_or_create(&ErrnoLabel { op, errno: errno_name(errno) }).inc();
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

/// Seconds since `t`.
pub fn age(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The symbolic name of the errnos a filesystem answers with.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTTY => "ENOTTY",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EDQUOT => "EDQUOT",
        libc::E2BIG => "E2BIG",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_follow_the_prometheus_conventions() {
        let m = get();
        m.store_call("get_blob", "ok", Duration::from_millis(3), 100);
        m.fuse_error("open", libc::EIO);
        m.tier_hit("flat");
        let text = m.render(|m| {
            m.upload_queue_blobs.set(7);
        });
        assert!(text.contains("wombatfs_object_store_requests_total{op=\"get_blob\",outcome=\"ok\"} "), "{text}");
        assert!(text.contains("wombatfs_object_store_request_duration_seconds_bucket{le=\"0.00512\",op=\"get_blob\"} ") || text.contains("wombatfs_object_store_request_duration_seconds_bucket{op=\"get_blob\",le="), "{text}");
        assert!(text.contains("wombatfs_fuse_errors_total{op=\"open\",errno=\"EIO\"} "), "{text}");
        assert!(text.contains("wombatfs_tier_hits_total{tier=\"flat\"} "), "{text}");
        assert!(text.contains("wombatfs_upload_queue_blobs 7\n"), "{text}");
        assert!(text.contains("# TYPE wombatfs_resident_memory_bytes gauge"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("wombatfs_"), "{line}");
        }
    }
}
