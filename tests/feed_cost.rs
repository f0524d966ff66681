//! What following a fleet costs: 24 `FsCore` nodes on one in-memory bucket, every request
//! counted by operation (LIST counted by page of 1000 names, as S3 bills it). The change feed
//! must keep a poll at one LIST whatever the number of nodes, idle or busy, with one GET per
//! new batch; the sweep of every journal is for a node's first poll only.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::Fixture;
use wombatfs::blob::BlobId;
use wombatfs::sync::feed;
use wombatfs::tiers::memory::MemoryStore;
use wombatfs::tiers::{ObjectStore, StoreError};

const NODES: usize = 24;

/// A bucket that counts its requests.
#[derive(Default)]
struct Counted {
    inner: MemoryStore,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Counted {
    fn count(&self, op: &'static str, n: u64) {
        *self.counts.lock().unwrap().entry(op).or_default() += n;
    }

    fn take(&self) -> BTreeMap<&'static str, u64> {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }

    fn listed(&self, names: Result<Vec<String>, StoreError>) -> Result<Vec<String>, StoreError> {
        let pages = names.as_ref().map(|n| n.len().div_ceil(1000).max(1) as u64).unwrap_or(1);
        self.count("LIST", pages);
        names
    }
}

#[async_trait]
impl ObjectStore for Counted {
    fn describe(&self) -> String {
        "counted memory".into()
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
    async fn put_blob(&self, id: &BlobId, src: &Path) -> Result<(), StoreError> {
        self.count("PUT blob", 1);
        self.inner.put_blob(id, src).await
    }
    async fn get_blob(&self, id: &BlobId, dst: &Path) -> Result<u64, StoreError> {
        self.count("GET blob", 1);
        self.inner.get_blob(id, dst).await
    }
    async fn has_blob(&self, id: &BlobId) -> Result<bool, StoreError> {
        self.count("HEAD", 1);
        self.inner.has_blob(id).await
    }
    async fn delete_blob(&self, id: &BlobId) -> Result<(), StoreError> {
        self.count("DELETE", 1);
        self.inner.delete_blob(id).await
    }
    async fn list_blobs(&self) -> Result<Vec<BlobId>, StoreError> {
        self.count("LIST", 1);
        self.inner.list_blobs().await
    }
    async fn put_meta(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.count(if name.starts_with("feed/") { "PUT marker" } else { "PUT meta" }, 1);
        self.inner.put_meta(name, bytes).await
    }
    async fn get_meta(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.count("GET meta", 1);
        self.inner.get_meta(name).await
    }
    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        self.count("DELETE", 1);
        self.inner.delete_meta(name).await
    }
    async fn list_meta(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let r = self.inner.list_meta(dir).await;
        self.listed(r)
    }
    async fn list_meta_after(&self, dir: &str, after: &str) -> Result<Vec<String>, StoreError> {
        let r = self.inner.list_meta_after(dir, after).await;
        self.listed(r)
    }
}

fn get(c: &BTreeMap<&'static str, u64>, op: &str) -> u64 {
    c.get(op).copied().unwrap_or(0)
}

#[test]
fn a_poll_costs_one_list_whatever_the_fleet_size_and_one_get_per_new_batch() {
    let bucket = Arc::new(Counted::default());
    let nodes: Vec<Fixture> = (0..NODES).map(|_| Fixture::node(bucket.clone())).collect();
    for n in &nodes {
        n.poll(); // the first poll sweeps: nodes/ + every journal
    }
    let first = bucket.take();
    assert!(get(&first, "LIST") >= (NODES * NODES) as u64 / 2, "the first polls swept the journals: {first:?}");

    // idle: ten polls per node, one LIST each and nothing else
    for _ in 0..10 {
        for n in &nodes {
            assert_eq!(n.poll(), 0);
        }
    }
    let idle = bucket.take();
    assert_eq!(idle, BTreeMap::from([("LIST", 10 * NODES as u64)]), "idle polls: one feed LIST per poll");

    // busy: every node writes a file and publishes, then every node polls
    for (i, n) in nodes.iter().enumerate() {
        n.mkdir_p(&format!("ns{i}"));
        n.write_file(&format!("ns{i}/blk"), format!("block of node {i}").as_bytes()).unwrap();
        n.publish();
    }
    let wrote = bucket.take();
    assert_eq!(get(&wrote, "PUT marker"), NODES as u64, "one marker per published batch: {wrote:?}");
    assert_eq!(get(&wrote, "PUT meta"), NODES as u64, "one journal batch per node");
    for n in &nodes {
        assert!(n.poll() >= 2 * (NODES - 1), "mkdir + file of every other node");
    }
    let busy = bucket.take();
    assert_eq!(get(&busy, "LIST"), NODES as u64, "still one LIST per poll: {busy:?}");
    assert_eq!(get(&busy, "GET meta"), (NODES * (NODES - 1)) as u64, "one GET per new batch per reader");
    assert_eq!(busy.len(), 2, "no other requests: {busy:?}");
    for (i, n) in nodes.iter().enumerate() {
        let other = (i + 1) % NODES;
        assert_eq!(n.read_file(&format!("ns{other}/blk")).unwrap(), format!("block of node {other}").as_bytes());
    }
    bucket.take(); // the reads' blob GETs
    // the same markers are listed again within the window, but nothing is fetched twice
    for n in &nodes {
        assert_eq!(n.poll(), 0);
    }
    assert_eq!(bucket.take(), BTreeMap::from([("LIST", NODES as u64)]));
    // what the journal sweep would cost per round at this size: 1 + (NODES - 1) LISTs per node
    let sweep = NODES * NODES;
    eprintln!("{NODES} nodes, per poll round: feed {} LIST + {} GET (busy), {} LIST (idle); a sweep of every journal: {sweep} LIST", NODES, NODES * (NODES - 1), NODES);
}

#[test]
fn a_lost_marker_is_made_good_by_the_next_marker_or_heartbeat() {
    let bucket = Arc::new(Counted::default());
    let a = Fixture::node(bucket.clone());
    let b = Fixture::node(bucket.clone());
    a.mkdir_p("ns");
    a.publish();
    b.poll();
    a.write_file("ns/one", b"1").unwrap();
    a.publish();
    // the marker never reached the bucket (or landed before the reader's window)
    for key in a.block_on(bucket.inner.list_meta(feed::FEED)).unwrap() {
        if feed::Marker::parse(&key).is_some_and(|m| !m.is_heartbeat()) {
            a.block_on(bucket.inner.delete_meta(&key)).unwrap();
        }
    }
    assert_eq!(b.poll(), 0, "without its marker the batch is not seen yet");
    assert_eq!(b.stat("ns/one").unwrap_err(), libc::ENOENT);
    // A's next batch: its marker's prev is ahead of B's cursor, so B lists A's journal
    a.write_file("ns/two", b"2").unwrap();
    a.publish();
    assert_eq!(b.poll(), 2);
    assert_eq!((b.read_file("ns/one").unwrap(), b.read_file("ns/two").unwrap()), (b"1".to_vec(), b"2".to_vec()));

    // a lost marker at the tail: only a heartbeat tells
    a.write_file("ns/three", b"3").unwrap();
    a.publish();
    for key in a.block_on(bucket.inner.list_meta(feed::FEED)).unwrap() {
        if feed::Marker::parse(&key).is_some_and(|m| m.last == a.core().namespace().published_seq()) {
            a.block_on(bucket.inner.delete_meta(&key)).unwrap();
        }
    }
    assert_eq!(b.poll(), 0);
    a.block_on(a.core().namespace().heartbeat_now());
    assert_eq!(b.poll(), 1);
    assert_eq!(b.read_file("ns/three").unwrap(), b"3");
}

#[test]
fn a_reader_that_missed_the_window_still_gets_every_change_after_a_sweep() {
    let bucket = Arc::new(Counted::default());
    let a = Fixture::node(bucket.clone());
    let mut b = Fixture::node(bucket.clone());
    b.poll();
    b.remount(); // a restart: the first poll sweeps again
    a.mkdir_p("ns");
    for i in 0..5 {
        a.write_file(&format!("ns/f{i}"), &[i as u8; 100]).unwrap();
        a.publish();
    }
    // every marker gone (e.g. collected while B was away)
    for key in a.block_on(bucket.inner.list_meta(feed::FEED)).unwrap() {
        a.block_on(bucket.inner.delete_meta(&key)).unwrap();
    }
    assert_eq!(b.poll(), 6);
    for i in 0..5 {
        assert_eq!(b.read_file(&format!("ns/f{i}")).unwrap(), vec![i as u8; 100]);
    }
}
