//! Several nodes on one bucket, without a kernel: each node is an `FsCore` on its own cache
//! dir over one shared in-memory object store; changes travel through the change journals.

mod common;

use std::sync::Arc;

use common::Fixture;
use wombatfs::tiers::memory::MemoryStore;
use wombatfs::tiers::ObjectStore;

fn bucket() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

#[test]
fn write_on_a_read_on_b_unlink_on_b_gone_on_a() {
    let s = bucket();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns/layer0");
    let block: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    a.write_file("ns/layer0/blk", &block).unwrap();
    a.write_file("ns/small", b"tiny").unwrap();
    assert!(a.publish() >= 4, "mkdir×2 + files published");
    assert!(b.poll() >= 4);
    assert_eq!(b.read_file("ns/layer0/blk").unwrap(), block, "B reads A's bytes from the bucket");
    assert_eq!(b.read_file("ns/small").unwrap(), b"tiny");
    assert_eq!(b.stat("ns/small").unwrap().perm, a.stat("ns/small").unwrap().perm);

    b.unlink("ns/layer0/blk").unwrap();
    b.publish();
    a.poll();
    assert_eq!(a.stat("ns/layer0/blk").unwrap_err(), libc::ENOENT, "B's unlink reached A");
    assert_eq!(a.read_file("ns/small").unwrap(), b"tiny", "other names untouched");
    // nothing travels twice: a second poll applies nothing
    assert_eq!(a.poll(), 0);
    assert_eq!(b.poll(), 0);
}

#[test]
fn renames_directories_and_symlinks_travel() {
    let s = bucket();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns/tmp");
    a.write_file("ns/tmp/part", b"payload").unwrap();
    a.rename("ns/tmp/part", "ns/tmp/final", 0).unwrap();
    a.rename("ns/tmp", "ns/done", 0).unwrap();
    let (p, n) = a.split("ns/link").unwrap();
    a.core().symlink(common::CALLER, p, n.as_bytes(), b"done/final").unwrap();
    a.mkdir_p("ns/empty");
    a.mkdir_p("ns/gone");
    a.rmdir("ns/gone").unwrap();
    a.publish();
    b.poll();
    assert_eq!(b.read_file("ns/done/final").unwrap(), b"payload");
    assert_eq!(b.stat("ns/tmp").unwrap_err(), libc::ENOENT);
    assert_eq!(b.core().readlink(b.resolve("ns/link").unwrap()).unwrap(), b"done/final");
    assert!(b.list("ns/empty").unwrap().is_empty());
    assert_eq!(b.stat("ns/gone").unwrap_err(), libc::ENOENT);
    let mut names: Vec<String> = b.list("ns").unwrap().into_iter().map(|e| e.0).collect();
    names.sort();
    assert_eq!(names, ["done", "empty", "link"]);
}

#[test]
fn a_stale_remove_never_destroys_newer_content() {
    let s = bucket();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/f", b"v1").unwrap();
    a.publish();
    b.poll();
    // B rewrites f while A (not yet aware) removes the old version
    b.write_file("ns/f", b"v2 from b").unwrap();
    a.unlink("ns/f").unwrap();
    a.publish();
    b.poll();
    assert_eq!(b.read_file("ns/f").unwrap(), b"v2 from b", "A's removal of v1 must not remove B's v2");
    b.publish();
    a.poll();
    assert_eq!(a.read_file("ns/f").unwrap(), b"v2 from b", "and B's newer write reaches A");
}

#[test]
fn same_block_on_two_nodes_is_one_object() {
    let s = bucket();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns");
    b.mkdir_p("ns");
    let block = vec![7u8; 2 << 20];
    a.write_file("ns/a", &block).unwrap();
    b.write_file("ns/b", &block).unwrap();
    a.publish();
    b.publish();
    a.poll();
    b.poll();
    let blobs = a.block_on(s.list_blobs()).unwrap();
    assert_eq!(blobs.len(), 2, "the block and the empty blob, once each: {blobs:?}");
    for f in [&a, &b] {
        assert_eq!(f.read_file("ns/a").unwrap(), block);
        assert_eq!(f.read_file("ns/b").unwrap(), block);
    }
}

#[test]
fn unpublished_changes_survive_a_crash() {
    let s = bucket();
    let mut a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/f", b"written before the crash").unwrap();
    a.drain();
    // the object store refuses the journal: the change stays in the outbox
    s.fail_next(1);
    assert!(a.block_on(a.core().publish_ready()).is_err());
    a.crash();
    assert!(a.block_on(a.core().start_publishing(&Default::default())));
    a.publish();
    b.poll();
    assert_eq!(b.read_file("ns/f").unwrap(), b"written before the crash");
}

#[test]
fn a_batch_published_just_before_a_crash_is_adopted_not_repeated() {
    let s = bucket();
    let mut a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/f", b"one").unwrap();
    a.drain();
    // a crash image of A with the change still in its outbox
    let image = tempfile::tempdir().unwrap();
    a.crash_with(|cache| copy_dir(cache, image.path()));
    assert_eq!(a.publish(), 2);
    // the crash lands between the journal PUT and the local record of it
    a.crash_with(|cache| {
        std::fs::remove_dir_all(cache).unwrap();
        copy_dir(image.path(), cache);
    });
    assert!(a.block_on(a.core().start_publishing(&Default::default())));
    assert!(a.core().outbox_empty(), "the batch in the bucket is adopted");
    assert_eq!(a.publish(), 0, "nothing is published twice");
    a.write_file("ns/g", b"two").unwrap();
    a.publish();
    let keys = a.block_on(s.list_meta("journal")).unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let batch = |k: &str| wombatfs::sync::change::Batch::open(&a.block_on(s.get_meta(k)).unwrap()).unwrap();
    assert!(batch(&keys[1]).changes[0].0 > batch(&keys[0]).last_seq(), "no change is published twice");
    assert_eq!(b.poll(), 3);
    assert_eq!(b.read_file("ns/f").unwrap(), b"one");
    assert_eq!(b.read_file("ns/g").unwrap(), b"two");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

#[test]
fn a_new_node_restores_snapshot_then_journal() {
    let s = bucket();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns/d");
    for i in 0..50 {
        a.write_file(&format!("ns/d/f{i}"), format!("file {i}").as_bytes()).unwrap();
    }
    a.publish();
    a.core().write_snapshot("nodea").unwrap();
    // after the snapshot: more changes, only in the journal
    a.unlink("ns/d/f0").unwrap();
    a.write_file("ns/d/late", b"after the snapshot").unwrap();
    a.publish();
    let c = Fixture::node(s.clone());
    c.poll();
    assert_eq!(c.stat("ns/d/f0").unwrap_err(), libc::ENOENT);
    assert_eq!(c.read_file("ns/d/late").unwrap(), b"after the snapshot");
    for i in 1..50 {
        assert_eq!(c.read_file(&format!("ns/d/f{i}")).unwrap(), format!("file {i}").as_bytes());
    }
    assert_eq!(c.list("ns/d").unwrap().len(), 50);
}

#[test]
fn sync_mode_close_waits_for_the_journal_and_fails_with_eio() {
    let s = bucket();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    // nothing publishes in this test (no publisher task): a sync-mode wait must time out or
    // fail, never pretend
    s.fail_next(1);
    let _ = a.block_on(a.core().publish_ready());
    let err = a.core().wait_published(std::time::Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    a.publish();
    a.core().wait_published(std::time::Duration::from_millis(200)).unwrap();
}

fn snapshot(f: &Fixture) {
    f.publish();
    f.core().write_snapshot(&f.core().node_id()).unwrap();
}

#[test]
fn the_library_restore_rebuilds_the_same_names_as_a_node() {
    use wombatfs::sync::names::{restore, Entry, NameTable};
    let s = bucket();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns/x/y");
    for i in 0..30 {
        a.write_file(&format!("ns/x/f{i}"), format!("{i}").as_bytes()).unwrap();
    }
    snapshot(&a);
    a.rename("ns/x", "ns/z", 0).unwrap();
    a.unlink("ns/z/f3").unwrap();
    a.write_file("ns/z/y/deep", b"deep").unwrap();
    a.link("ns/z/f4", "ns/z/f4-again").unwrap();
    a.rmdir("ns/z/y").unwrap_err();
    a.publish();
    // directory mtimes are per node (a child's change touches them locally, unpublished)
    let strip = |t: NameTable| -> Vec<(Vec<u8>, Entry)> {
        t.entries.into_iter().map(|(k, e)| match e {
            Entry::Dir { mut attrs } => {
                attrs.mtime = Default::default();
                (k, Entry::Dir { attrs })
            }
            e => (k, e),
        }).collect()
    };
    let table = a.block_on(restore(s.as_ref())).unwrap();
    let mine = NameTable::from_snapshot(&a.core().export_records());
    assert_eq!(strip(table.clone()), strip(mine));
    assert!(table.entries.contains_key(&b"ns/z/y/deep"[..]));
    assert!(!table.entries.contains_key(&b"ns/z/f3"[..]));
    assert_eq!(table.entries.len(), 3 + 29 + 1 + 1, "ns, ns/z, ns/z/y, 29 files, deep, the second link");
}

#[test]
fn gc_deletes_only_blobs_unreferenced_everywhere_after_the_grace_period() {
    use std::time::Duration;
    use wombatfs::sync::gc::collect;
    let s = bucket();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/old", b"old block").unwrap();
    a.write_file("ns/keep", b"kept block").unwrap();
    a.publish();
    b.poll();
    a.unlink("ns/old").unwrap();
    snapshot(&a);
    let old = wombatfs::blob::BlobId::of(b"old block");
    let keep = wombatfs::blob::BlobId::of(b"kept block");
    let gc = |grace| a.block_on(collect(s.as_ref(), &policy(Duration::from_secs(grace)))).unwrap();
    // B has no snapshot: what it may still name is everything in the journals
    let r = gc(0);
    assert!(r.deleted.is_empty(), "{r:?}");
    assert_eq!(r.nodes, 2);
    b.poll();
    snapshot(&b);
    // now no node names the old block; it must first wait out the grace period
    let r = gc(3600);
    assert_eq!((r.deleted.len(), r.waiting), (0, 1), "{r:?}");
    assert_eq!(r.journal_batches_deleted, 1, "A's first batch is covered by both snapshots; its newest is kept");
    assert_eq!(a.block_on(s.list_meta("journal")).unwrap().len(), 1);
    let r = gc(0);
    assert_eq!(r.deleted, vec![old]);
    let left = a.block_on(s.list_blobs()).unwrap();
    assert!(left.contains(&keep) && !left.contains(&old));
    // a new node still reads everything that is named
    let c = Fixture::node(s.clone());
    c.poll();
    assert_eq!(c.read_file("ns/keep").unwrap(), b"kept block");
    assert_eq!(c.stat("ns/old").unwrap_err(), libc::ENOENT);
}

#[test]
fn gc_forgets_a_candidate_that_is_named_again() {
    use std::time::Duration;
    use wombatfs::sync::gc::collect;
    let s = bucket();
    let a = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/f", b"content").unwrap();
    a.publish(); // uploaded before it is unlinked
    a.unlink("ns/f").unwrap();
    snapshot(&a);
    let gc = |grace| a.block_on(collect(s.as_ref(), &policy(Duration::from_secs(grace)))).unwrap();
    assert_eq!(gc(3600).waiting, 1);
    // the same content is written again (dedup: no new upload) before the grace period ends
    a.write_file("ns/g", b"content").unwrap();
    snapshot(&a);
    let r = gc(0);
    assert!(r.deleted.is_empty() && r.waiting == 0, "{r:?}");
    assert_eq!(a.read_file("ns/g").unwrap(), b"content");
}

#[test]
fn gc_refuses_to_guess() {
    use std::time::Duration;
    let s = bucket();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob");
    std::fs::write(&src, b"orphan?").unwrap();
    rt.block_on(s.put_blob(&wombatfs::blob::BlobId::of(b"orphan?"), &src)).unwrap();
    let err = rt.block_on(wombatfs::sync::gc::collect(s.as_ref(), &policy(Duration::ZERO))).unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    assert_eq!(rt.block_on(s.list_blobs()).unwrap().len(), 1);
    let local = wombatfs::tiers::local::LocalStore::open(dir.path(), wombatfs::codec::Compression::None).unwrap();
    assert!(rt.block_on(wombatfs::sync::gc::collect(&local, &policy(Duration::ZERO))).is_err());
}

mod one_set_of_rules {
    //! A mounted node's tree and the library's name table follow a bucket by the same rules
    //! (`sync::apply`): any sequence of changes leaves both with the same names and contents.
    use super::*;
    use proptest::prelude::*;
    use wombatfs::blob::BlobId;
    use wombatfs::hlc::Stamp;
    use wombatfs::index::records::Ts;
    use wombatfs::sync::change::{Attrs, Batch, Change};
    use wombatfs::sync::names::{Entry, NameTable};

    const PATHS: &[&str] = &["ns", "ns/a", "ns/b", "ns/d", "ns/d/x", "ns/d/e", "ns/d/e/y", "ns2", "ns2/a", "top"];

    fn attrs(perm: u16) -> Attrs {
        Attrs { perm, uid: 0, gid: 0, mtime: Ts::new(1_700_000_000, 0) }
    }

    fn change() -> impl Strategy<Value = Change> {
        let path = proptest::sample::select(PATHS).prop_map(|p| p.as_bytes().to_vec());
        prop_oneof![
            (path.clone(), 0u8..3, 0o600u16..0o700).prop_map(|(path, b, perm)| Change::File { path, blob: BlobId::of(&[b]), size: 1, attrs: attrs(perm) }),
            (path.clone(), 0o700u16..0o777).prop_map(|(path, perm)| Change::Dir { path, attrs: attrs(perm) }),
            (path.clone(), 0u8..2).prop_map(|(path, t)| Change::Symlink { path, target: vec![b'a' + t], attrs: attrs(0o777) }),
            (path.clone(), proptest::option::of(0u8..3)).prop_map(|(path, b)| Change::Remove { path, blob: b.map(|b| BlobId::of(&[b])) }),
            (path.clone(), path).prop_map(|(from, to)| Change::Rename { from, to }),
        ]
    }

    /// Names and contents only: a node's default attributes of created parents are its own.
    fn shape(t: &NameTable) -> Vec<(Vec<u8>, String)> {
        t.entries.iter().map(|(p, e)| (p.clone(), match e {
            Entry::File { blob, .. } => format!("file {blob}"),
            Entry::Symlink { target, .. } => format!("link {target:?}"),
            Entry::Dir { .. } => "dir".into(),
        })).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn a_node_and_a_name_table_agree(changes in proptest::collection::vec((change(), proptest::option::of(1u64..30)), 1..40)) {
            let node = common::Fixture::new();
            // unstamped (writers before stamps) and stamped changes, mixed
            let stamps = changes.iter().map(|(_, s)| s.map(|s| Stamp { hlc: s, node: 1 }).unwrap_or(Stamp::ZERO)).collect();
            let changes = changes.into_iter().enumerate().map(|(i, (c, _))| (i as u64 + 1, c)).collect();
            let batch = Batch { node: "peer".into(), changes, sealed_ms: None, inline: Vec::new(), stamps };
            node.core().apply_peer_batch("peer", &batch).unwrap();
            let mut table = NameTable::default();
            table.apply_batch(&batch);
            let mine = NameTable::from_snapshot(&node.core().export_records());
            prop_assert_eq!(shape(&mine), shape(&table));
        }
    }
}

/// A collection with this grace period and the default node lease.
fn policy(grace: std::time::Duration) -> wombatfs::sync::gc::Policy {
    wombatfs::sync::gc::Policy { grace, lease: std::time::Duration::from_secs(wombatfs::config::defaults::GC_NODE_LEASE_SECS), dry_run: false }
}

/// A node that leaves for good stops holding the collector back once its lease expires: its
/// snapshot's blobs are collected, its journal, registry entry and markers removed once the
/// live nodes applied them, and a new node sees exactly the live nodes' tree.
#[test]
fn gc_stops_waiting_for_a_node_whose_lease_expired() {
    use std::time::Duration;
    use wombatfs::sync::gc::{collect, gone_record, Policy};
    let s = bucket();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    let c = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/a", b"from a").unwrap();
    a.publish();
    c.poll();
    c.write_file("ns/c", b"from c, later unlinked").unwrap();
    c.publish();
    snapshot(&c); // C's tree names ns/c; then C leaves for good
    let gone_id = c.core().node_id();
    drop(c);
    for n in [&a, &b] {
        n.poll();
        assert_eq!(n.read_file("ns/c").unwrap(), b"from c, later unlinked");
    }
    a.unlink("ns/c").unwrap();
    a.publish();
    b.poll();
    snapshot(&a);
    snapshot(&b);
    let c_blob = wombatfs::blob::BlobId::of(b"from c, later unlinked");
    let lease = Duration::from_millis(1500);
    let run = |lease| a.block_on(collect(s.as_ref(), &Policy { grace: Duration::ZERO, lease, dry_run: false })).unwrap();
    // within its lease, C's snapshot still names the blob
    let r = run(lease);
    assert!(r.gone.is_empty() && !r.deleted.contains(&c_blob), "{r:?}");
    // the live nodes renew their leases; C does not
    std::thread::sleep(lease + Duration::from_millis(100));
    for n in [&a, &b] {
        n.block_on(n.core().namespace().heartbeat_now());
    }
    let dry = a.block_on(collect(s.as_ref(), &Policy { grace: Duration::ZERO, lease, dry_run: true })).unwrap();
    assert_eq!((dry.gone.clone(), dry.deleted.contains(&c_blob)), (vec![gone_id.clone()], true), "{dry:?}");
    assert_eq!(a.block_on(gone_record(s.as_ref(), &gone_id)).unwrap(), None, "a dry run records nothing");
    let r = run(lease);
    assert_eq!(r.gone, vec![gone_id.clone()]);
    assert_eq!(r.snapshots_deleted, 1);
    assert!(r.deleted.contains(&c_blob), "only C's snapshot named it: {r:?}");
    assert_eq!(r.nodes_removed, vec![gone_id.clone()], "both live nodes' snapshots cover C's journal");
    let names = a.block_on(s.list_meta("")).unwrap();
    assert!(!names.iter().any(|n| n.contains(&gone_id) && !n.starts_with("gone/")), "nothing of C but its record: {names:?}");
    assert!(a.block_on(gone_record(s.as_ref(), &gone_id)).unwrap().unwrap().contains("lease expired"));
    // the live nodes are untouched, and a new node sees their tree
    let d = Fixture::node(s.clone());
    d.poll();
    assert_eq!(d.read_file("ns/a").unwrap(), b"from a");
    assert_eq!(d.stat("ns/c").unwrap_err(), libc::ENOENT);
    // a later run finds nothing more to do, and nobody expires while the fleet is quiet
    std::thread::sleep(lease + Duration::from_millis(100));
    let r = run(lease);
    assert!(r.deleted.is_empty() && r.nodes_removed.is_empty(), "{r:?}");
    assert_eq!(r.gone, [gone_id], "the newest marker is the clock: a quiet fleet keeps its leases");
}

#[test]
fn gc_forgets_a_node_by_hand_and_refuses_unknown_ids_and_an_all_gone_bucket() {
    use std::time::Duration;
    use wombatfs::sync::gc::{collect, forget_node, Policy};
    let s = bucket();
    let a = Fixture::node(s.clone());
    let b = Fixture::node(s.clone());
    a.mkdir_p("ns");
    a.write_file("ns/f", b"kept").unwrap();
    snapshot(&a);
    b.poll();
    snapshot(&b);
    let policy = Policy { grace: Duration::ZERO, lease: Duration::from_secs(3600), dry_run: false };
    for bad in ["nope", "a/b", ""] {
        assert!(a.block_on(forget_node(s.as_ref(), bad)).is_err(), "{bad}");
    }
    a.block_on(forget_node(s.as_ref(), &b.core().node_id())).unwrap();
    let r = a.block_on(collect(s.as_ref(), &policy)).unwrap();
    assert_eq!((r.gone.len(), r.nodes_removed.len(), r.deleted.len()), (1, 1, 0), "{r:?}");
    assert_eq!(a.read_file("ns/f").unwrap(), b"kept");
    a.block_on(forget_node(s.as_ref(), &a.core().node_id())).unwrap();
    let err = a.block_on(collect(s.as_ref(), &policy)).unwrap_err();
    assert!(err.to_string().contains("every node of the bucket is gone"), "{err}");
    assert!(a.block_on(s.list_blobs()).unwrap().contains(&wombatfs::blob::BlobId::of(b"kept")));
}
