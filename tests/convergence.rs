//! Concurrent writers of one name on several nodes: three `FsCore` nodes on one in-memory
//! bucket make random interleavings of creates, rewrites, renames and unlinks of the same few
//! names, publishing and polling at random moments (and crashing now and then); once the feed
//! quiesces every node — and a fresh node restored from the bucket, and the library's name
//! table — must hold the same names with the same contents. The winner of concurrent writes
//! is the greater version stamp (`wombatfs::hlc`); see `sync::apply`.

mod common;

use std::sync::Arc;

use common::Fixture;
use proptest::prelude::*;
use wombatfs::sync::names::{self, Entry, NameTable};
use wombatfs::tiers::memory::MemoryStore;

const NODES: usize = 3;
const NAMES: &[&str] = &["ns/a", "ns/b", "ns/c", "ns/d/x", "ns/d/y"];

#[derive(Clone, Debug)]
enum Op {
    /// create or rewrite a name with one of a few contents (equal contents on two nodes are
    /// one blob)
    Write(usize, usize, u8),
    Rename(usize, usize, usize),
    Unlink(usize, usize),
    Publish(usize),
    Poll(usize),
    /// kill -9 and mount again on the same cache dir
    Crash(usize),
    /// publish, then write a tree snapshot to the bucket
    Snapshot(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    let name = 0..NAMES.len();
    prop_oneof![
        6 => (node.clone(), name.clone(), 0u8..4).prop_map(|(n, f, c)| Op::Write(n, f, c)),
        3 => (node.clone(), name.clone(), name.clone()).prop_map(|(n, f, t)| Op::Rename(n, f, t)),
        3 => (node.clone(), name).prop_map(|(n, f)| Op::Unlink(n, f)),
        3 => node.clone().prop_map(Op::Publish),
        3 => node.clone().prop_map(Op::Poll),
        1 => node.clone().prop_map(Op::Crash),
        1 => node.prop_map(Op::Snapshot),
    ]
}

/// Names and contents of a table (directory attributes are per node).
fn shape(t: &NameTable) -> Vec<(String, String)> {
    t.entries
        .iter()
        .map(|(p, e)| {
            let what = match e {
                Entry::File { blob, .. } => format!("file {blob}"),
                Entry::Symlink { target, .. } => format!("link {target:?}"),
                Entry::Dir { .. } => "dir".into(),
            };
            (String::from_utf8_lossy(p).into_owned(), what)
        })
        .collect()
}

fn names_of(f: &Fixture) -> Vec<(String, String)> {
    shape(&NameTable::from_snapshot(&f.core().export_records()))
}

/// Publish and poll everywhere until a whole round moves nothing.
fn quiesce(nodes: &[Fixture]) {
    for _ in 0..10 {
        let mut moved = 0;
        for n in nodes {
            moved += n.publish();
        }
        for n in nodes {
            moved += n.poll();
        }
        if moved == 0 {
            return;
        }
    }
    panic!("the feed did not quiesce in 10 rounds");
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let bucket = Arc::new(MemoryStore::new());
    let mut nodes: Vec<Fixture> = (0..NODES).map(|_| Fixture::node(bucket.clone())).collect();
    nodes[0].mkdir_p("ns/d");
    quiesce(&nodes);
    for op in ops {
        match *op {
            // a node's own errors (ENOENT for a name it does not hold, EXDEV…) are its business
            Op::Write(n, f, c) => {
                let _ = nodes[n].write_file(NAMES[f], format!("content {c}").as_bytes());
            }
            Op::Rename(n, f, t) => {
                let _ = nodes[n].rename(NAMES[f], NAMES[t], 0);
            }
            Op::Unlink(n, f) => {
                let _ = nodes[n].unlink(NAMES[f]);
            }
            Op::Publish(n) => {
                nodes[n].publish();
            }
            Op::Poll(n) => {
                nodes[n].poll();
            }
            Op::Crash(n) => nodes[n].crash(),
            Op::Snapshot(n) => {
                nodes[n].publish();
                let id = nodes[n].core().node_id();
                nodes[n].core().write_snapshot(&id).unwrap();
            }
        }
    }
    quiesce(&nodes);
    let first = names_of(&nodes[0]);
    for (i, n) in nodes.iter().enumerate().skip(1) {
        prop_assert_eq!(&names_of(n), &first, "node {} differs from node 0 after the feed quiesced; ops {:?}", i, ops);
    }
    // a node that joins now (newest snapshot + journals) and the library's restore agree too
    let fresh = Fixture::node(bucket.clone());
    fresh.poll();
    prop_assert_eq!(&names_of(&fresh), &first, "a fresh node differs; ops {:?}", ops);
    let table = fresh.block_on(names::restore(bucket.as_ref())).unwrap();
    prop_assert_eq!(&shape(&table), &first, "the library's restore differs; ops {:?}", ops);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn three_nodes_converge_on_the_same_names(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}

/// The interleaving that diverged before version stamps: two nodes rewrite one name before
/// either sees the other's write; each took the other's.
#[test]
fn concurrent_rewrites_of_one_name_end_with_the_later_on_every_node() {
    let bucket = Arc::new(MemoryStore::new());
    let nodes: Vec<Fixture> = (0..2).map(|_| Fixture::node(bucket.clone())).collect();
    let (a, b) = (&nodes[0], &nodes[1]);
    a.mkdir_p("ns");
    quiesce(&nodes);
    a.write_file("ns/f", b"from a").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2)); // a later millisecond
    b.write_file("ns/f", b"from b, later").unwrap();
    quiesce(&nodes);
    assert_eq!(a.read_file("ns/f").unwrap(), b"from b, later");
    assert_eq!(b.read_file("ns/f").unwrap(), b"from b, later");
}

/// A removal leaves a tombstone: an older write that reaches a node after the removal of a
/// newer version stays out, on that node and on the others — also across a crash.
#[test]
fn an_older_write_arriving_after_a_removal_stays_out() {
    let bucket = Arc::new(MemoryStore::new());
    let mut nodes: Vec<Fixture> = (0..3).map(|_| Fixture::node(bucket.clone())).collect();
    nodes[0].mkdir_p("ns");
    quiesce(&nodes);
    // C writes first but publishes last; B writes later (a greater stamp), A removes B's version
    nodes[2].write_file("ns/f", b"old, from c").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2)); // a later millisecond
    nodes[1].write_file("ns/f", b"newer, from b").unwrap();
    nodes[1].publish();
    nodes[0].poll();
    assert_eq!(nodes[0].read_file("ns/f").unwrap(), b"newer, from b");
    nodes[0].unlink("ns/f").unwrap();
    nodes[0].publish();
    nodes[0].crash(); // the tombstone is on disk, not only in memory
    nodes[2].publish();
    assert_eq!(nodes[0].poll(), 0, "C's older write is left out where B's version was removed");
    quiesce(&nodes);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.stat("ns/f").unwrap_err(), libc::ENOENT, "node {i}");
    }
    // a later write of the name wins over the tombstone everywhere
    nodes[2].write_file("ns/f", b"again").unwrap();
    quiesce(&nodes);
    for n in &nodes {
        assert_eq!(n.read_file("ns/f").unwrap(), b"again");
    }
}
