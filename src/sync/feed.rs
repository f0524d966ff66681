//! The bucket's change feed: one time-ordered prefix every node lists to learn which journals
//! moved, so following the fleet costs one LIST per poll instead of one per node.
//!
//! Each published journal batch gets an empty marker object whose key says when, who and
//! which changes: `feed/<ms, 13 digits>-<node>-<prev>-<first>-<last>` (sequence numbers, 20
//! digits). `prev` is the node's published cursor before the batch, so a reader whose cursor
//! for that node equals `prev` GETs `journal/<node>/<first>` directly and is then at `last`.
//! A node that published nothing for [`HEARTBEAT`] writes a heartbeat marker (`first` = 0,
//! `prev` = `last` = its cursor): the same key, no batch. A reader whose cursor is behind a
//! marker's `prev` missed something and lists that node's journal after its cursor: the
//! journals stay the truth, the feed only says where to look, so a marker that is late,
//! lost or stamped by a skewed clock costs a LIST later, never a lost change.
//!
//! A reader lists the feed start-after (its clock at its previous poll − [`WINDOW`]): the
//! window absorbs clock skew between nodes and PUTs that land after their key's time. Markers
//! outside every reader's window are deleted by the collector after [`KEEP`] (each node's
//! newest is kept: it is the node's lease). A node that could not read the feed for
//! [`RESWEEP_AFTER`] (or is starting) sweeps instead: it lists `nodes/` and every journal.

use std::time::Duration;

/// Where the markers live.
pub const FEED: &str = "feed";
/// How far before its previous poll a reader lists the feed again.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How long a node that publishes nothing waits before writing a heartbeat marker.
pub const HEARTBEAT: Duration = Duration::from_secs(300);
/// How long markers stay in the bucket (each node's newest stays longer).
pub const KEEP: Duration = Duration::from_secs(3600);
/// A reader that has not read the feed for this long sweeps every journal instead.
pub const RESWEEP_AFTER: Duration = Duration::from_secs(600);

/// One feed marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// the publisher's clock when it published, ms since the epoch
    pub ms: u64,
    /// the publishing node
    pub node: String,
    /// the node's published cursor before this batch
    pub prev: u64,
    /// first change of the batch (`journal/<node>/<first>`); 0 for a heartbeat
    pub first: u64,
    /// last change of the batch (for a heartbeat: the node's cursor)
    pub last: u64,
}

impl Marker {
    /// A heartbeat of `node` whose published cursor is `cursor`.
    pub fn heartbeat(ms: u64, node: &str, cursor: u64) -> Self {
        Marker { ms, node: node.to_string(), prev: cursor, first: 0, last: cursor }
    }

    /// The marker's object name.
    pub fn key(&self) -> String {
        format!("{FEED}/{:013}-{}-{:020}-{:020}-{:020}", self.ms, self.node, self.prev, self.first, self.last)
    }

    /// Parse an object name made by [`Marker::key`].
    pub fn parse(key: &str) -> Option<Marker> {
        let rest = key.strip_prefix(FEED)?.strip_prefix('/')?;
        let (ms, rest) = rest.split_once('-')?;
        // node ids may hold '-': the three numbers are taken from the right
        let mut parts = rest.rsplitn(4, '-');
        let last = parts.next()?;
        let first = parts.next()?;
        let prev = parts.next()?;
        let node = parts.next()?;
        let num = |s: &str| (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten();
        let m = Marker { ms: (ms.len() == 13).then(|| ms.parse().ok()).flatten()?, node: node.to_string(), prev: num(prev)?, first: num(first)?, last: num(last)? };
        (crate::sync::change::valid_node_id(&m.node) && m.prev <= m.last && (m.first == 0 || (m.prev < m.first && m.first <= m.last))).then_some(m)
    }

    /// Whether it is a heartbeat (no batch).
    pub fn is_heartbeat(&self) -> bool {
        self.first == 0
    }
}

/// The start-after key that lists the markers stamped after `ms`.
pub fn after(ms: u64) -> String {
    format!("{FEED}/{ms:013}")
}

/// What a reader at `cursor` for a marker's node does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// nothing new: the reader is at or past it
    Skip,
    /// GET this one batch; afterwards the reader is at the marker's `last`
    Get(String),
    /// the reader missed batches: list the node's journal after its cursor
    CatchUp,
}

/// How long a publisher's marker writer waits after a batch for the markers of more batches,
/// which it then writes as one (see [`coalesce`]): under a stream of `--upload sync` closes a
/// node writes a few markers a second instead of one PUT per batch.
pub const MARKER_GATHER: Duration = Duration::from_millis(25);

/// One marker for the consecutive batches `(prev, first, last)` of one node, in publication
/// order: a single batch keeps its own marker (readers at `prev` GET it directly); several
/// become one marker with `first` = 0 from the first's `prev` to the last's `last`, which every
/// reader behind `last` answers by listing the node's journal ([`step`]: `CatchUp`).
pub fn coalesce(batches: &[(u64, u64, u64)]) -> Option<(u64, u64, u64)> {
    match batches {
        [] => None,
        [one] => Some(*one),
        [first, .., last] => Some((first.0, 0, last.2)),
    }
}

/// Decide what a reader at `cursor` for the marker's node does with the marker.
pub fn step(m: &Marker, cursor: u64) -> Step {
    if m.last <= cursor {
        Step::Skip
    } else if m.prev == cursor && !m.is_heartbeat() {
        Step::Get(crate::sync::change::batch_key(&m.node, m.first))
    } else {
        Step::CatchUp
    }
}

/// The poll interval after a poll: back to `base` when the fleet moved, else doubled up to
/// `idle_max` (never below `base`), so an idle fleet's LIST rate falls towards zero.
pub fn next_interval(current: Duration, base: Duration, idle_max: Duration, moved: bool) -> Duration {
    if moved {
        base
    } else {
        (current * 2).min(idle_max.max(base)).max(base)
    }
}

/// Each node's newest marker stamp (its lease).
pub fn newest_by_node(markers: &[Marker]) -> std::collections::BTreeMap<&str, u64> {
    let mut newest = std::collections::BTreeMap::new();
    for m in markers {
        let e = newest.entry(m.node.as_str()).or_insert(0);
        *e = (*e).max(m.ms);
    }
    newest
}

/// Which markers the collector deletes: those older than [`KEEP`] at `now_ms`, except each
/// node's newest (its lease).
pub fn expired(markers: &[Marker], now_ms: u64) -> Vec<&Marker> {
    let newest = newest_by_node(markers);
    let cutoff = now_ms.saturating_sub(KEEP.as_millis() as u64);
    markers.iter().filter(|m| m.ms < cutoff && newest.get(m.node.as_str()).is_some_and(|n| *n > m.ms)).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn markers_of_several_batches_become_one_that_readers_catch_up_from() {
        assert_eq!(coalesce(&[]), None);
        assert_eq!(coalesce(&[(4, 5, 7)]), Some((4, 5, 7)));
        let m = coalesce(&[(4, 5, 7), (7, 8, 8), (8, 9, 12)]).unwrap();
        assert_eq!(m, (4, 0, 12));
        let marker = Marker { ms: 1, node: "n".into(), prev: m.0, first: m.1, last: m.2 };
        // a reader at the first batch's prev, or anywhere before the end, reads the journal
        assert_eq!(step(&marker, 4), Step::CatchUp);
        assert_eq!(step(&marker, 8), Step::CatchUp);
        assert_eq!(step(&marker, 12), Step::Skip);
    }

    use super::*;

    #[test]
    fn keys_round_trip_sort_by_time_and_reject_junk() {
        let m = Marker { ms: 1_700_000_000_123, node: "a-b_1".into(), prev: 4, first: 6, last: 9 };
        assert_eq!(Marker::parse(&m.key()), Some(m.clone()));
        let h = Marker::heartbeat(1_700_000_000_124, "n", 9);
        assert!(Marker::parse(&h.key()).unwrap().is_heartbeat());
        assert!(m.key() < h.key() && after(m.ms) < m.key() && after(m.ms + 1) > m.key());
        for bad in ["feed/x", "feed/1700000000123-n-1-2-3", "journal/1700000000123-n-00000000000000000001-00000000000000000002-00000000000000000003"] {
            assert_eq!(Marker::parse(bad), None, "{bad}");
        }
        // first must lie in (prev, last]
        let odd = Marker { first: 3, ..m.clone() };
        assert_eq!(Marker::parse(&odd.key()), None);
    }

    #[test]
    fn a_reader_gets_the_next_batch_and_catches_up_after_a_gap() {
        let m = Marker { ms: 1, node: "n".into(), prev: 4, first: 6, last: 9 };
        assert_eq!(step(&m, 4), Step::Get(crate::sync::change::batch_key("n", 6)));
        assert_eq!(step(&m, 9), Step::Skip);
        assert_eq!(step(&m, 12), Step::Skip);
        assert_eq!(step(&m, 2), Step::CatchUp, "a batch before this one was missed");
        assert_eq!(step(&Marker::heartbeat(1, "n", 9), 9), Step::Skip);
        assert_eq!(step(&Marker::heartbeat(1, "n", 9), 4), Step::CatchUp, "the heartbeat shows a missed tail");
    }

    #[test]
    fn the_interval_backs_off_while_idle_and_snaps_back() {
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(10));
        let mut i = base;
        let mut seen = vec![];
        for _ in 0..5 {
            i = next_interval(i, base, max, false);
            seen.push(i.as_secs());
        }
        assert_eq!(seen, [4, 8, 10, 10, 10]);
        assert_eq!(next_interval(i, base, max, true), base);
        assert_eq!(next_interval(base, base, Duration::from_secs(1), false), base, "a max below the base means no back-off");
    }

    #[test]
    fn expiry_keeps_each_nodes_newest_marker() {
        let keep = KEEP.as_millis() as u64;
        let now = 10 * keep;
        let ms = [(now - 3 * keep, "a"), (now - 2 * keep, "a"), (now - 2 * keep, "b"), (now - 1, "a")];
        let markers: Vec<Marker> = ms.iter().map(|(t, n)| Marker::heartbeat(*t, n, 0)).collect();
        let gone: Vec<(u64, &str)> = expired(&markers, now).iter().map(|m| (m.ms, m.node.as_str())).collect();
        assert_eq!(gone, [(now - 3 * keep, "a"), (now - 2 * keep, "a")], "b's only marker is its lease");
    }
}
