//! Filesystem semantics through the fuser-free core (no kernel).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, CALLER, ROOT};
use wombatfs::blob::BlobId;
use wombatfs::fs::Kind;

#[test]
fn root_holds_namespaces_only_and_names_are_checked() {
    let f = Fixture::new();
    assert_eq!(f.write_file("rootfile", b"x"), Err(libc::EPERM));
    assert_eq!(f.core().symlink(CALLER, ROOT, b"l", b"t").unwrap_err().errno(), libc::EPERM);
    f.mkdir("ns").unwrap();
    assert_eq!(f.mkdir("ns"), Err(libc::EEXIST));
    f.write_file("ns/a", b"1").unwrap();
    assert_eq!(f.link("ns/a", "a"), Err(libc::EPERM));
    assert_eq!(f.rename("ns/a", "a", 0), Err(libc::EPERM));
    let long = "n".repeat(256);
    assert_eq!(f.mkdir(&format!("ns/{long}")), Err(libc::ENAMETOOLONG));
    assert_eq!(f.core().lookup(ROOT, long.as_bytes()).unwrap_err().errno(), libc::ENAMETOOLONG);
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
        let ns = f.resolve("ns").unwrap();
        assert_eq!(f.core().mkdir(CALLER, ns, bad, 0o755, 0).unwrap_err().errno(), libc::EINVAL, "{bad:?}");
    }
    assert!(f.core().lookup(ROOT, b"missing").unwrap().is_none(), "negative lookups are answers, not errors");
}

#[test]
fn write_read_seal_and_identical_content_stored_once() {
    let f = Fixture::new();
    f.mkdir_p("ns1/deep/er");
    f.mkdir("ns2").unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    f.write_file("ns1/deep/er/a.bin", &data).unwrap();
    f.write_file("ns2/b.bin", &data).unwrap();
    f.write_file("ns1/c.bin", &data).unwrap();
    assert_eq!(f.read_file("ns2/b.bin").unwrap(), data);
    assert_eq!(f.stat("ns1/c.bin").unwrap().size, data.len() as u64);
    let id = BlobId::of(&data).to_hex().into_bytes();
    let ino = f.resolve("ns2/b.bin").unwrap();
    assert_eq!(f.core().getxattr(ino, b"user.wombatfs.blake3").unwrap(), id);
    f.drain();
    // three names, one blob, plus the pinned empty blob every new file starts bound to
    assert_eq!(f.flat_count(), 2);
    assert_eq!(f.object_count(), 2);
}

#[test]
fn read_your_writes_while_open_random_writes_truncate_fallocate() {
    let f = Fixture::new();
    f.mkdir("ns").unwrap();
    let fh = f.open_write("ns/f", true).unwrap();
    f.core().write(fh, 10, b"world").unwrap();
    f.core().write(fh, 0, b"hello").unwrap();
    let mut want = b"hello".to_vec();
    want.extend_from_slice(&[0; 5]);
    want.extend_from_slice(b"world");
    assert_eq!(f.read_fh(fh), want, "reads see unsealed writes");
    assert_eq!(f.stat("ns/f").unwrap().size, 15);
    // a second handle on the same inode sees the same bytes
    let ino = f.resolve("ns/f").unwrap();
    let fh2 = f.core().open(ino, libc::O_RDONLY).unwrap().fh;
    assert_eq!(f.read_fh(fh2), want);
    let ch = wombatfs::fs::SetAttr { size: Some(7), ..Default::default() };
    f.core().setattr(ino, ch, Some(fh)).unwrap();
    f.core().fallocate(fh, 0, 9, 0).unwrap();
    assert_eq!(f.core().fallocate(fh, 0, 9, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE).unwrap_err().errno(), libc::EOPNOTSUPP);
    f.close(fh).unwrap();
    let want = b"hello\0\0\0\0".to_vec();
    assert_eq!(f.read_fh(fh2), want, "after the seal the other handle reads the new blob");
    f.core().release(fh2);
    assert_eq!(f.read_file("ns/f").unwrap(), want);
    // truncate without a handle (truncate(2)) seals at once
    f.truncate("ns/f", 2).unwrap();
    assert_eq!(f.read_file("ns/f").unwrap(), b"he");
    // O_TRUNC rewrite of the same name
    f.write_file("ns/f", b"new").unwrap();
    assert_eq!(f.read_file("ns/f").unwrap(), b"new");
}

#[test]
fn rename_replace_noreplace_exchange_and_dirs() {
    let f = Fixture::new();
    f.mkdir_p("a/d1");
    f.mkdir_p("b");
    f.write_file("a/tmp.123", b"new").unwrap();
    f.write_file("a/final", b"old").unwrap();
    // a reader of the replaced name keeps the old bytes
    let old_ino = f.resolve("a/final").unwrap();
    let rfh = f.core().open(old_ino, libc::O_RDONLY).unwrap().fh;
    f.rename("a/tmp.123", "a/final", 0).unwrap();
    assert_eq!(f.read_file("a/final").unwrap(), b"new");
    assert_eq!(f.read_fh(rfh), b"old");
    f.core().release(rfh);
    assert_eq!(f.resolve("a/tmp.123"), Err(libc::ENOENT));
    f.write_file("a/x", b"x").unwrap();
    assert_eq!(f.rename("a/x", "a/final", libc::RENAME_NOREPLACE), Err(libc::EEXIST));
    f.rename("a/x", "a/final", libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(f.read_file("a/final").unwrap(), b"x");
    assert_eq!(f.read_file("a/x").unwrap(), b"new");
    assert_eq!(f.rename("a/x", "a/none", libc::RENAME_EXCHANGE), Err(libc::ENOENT));
    // directories: across namespaces, not into themselves, not over non-empty dirs
    f.write_file("a/d1/in", b"i").unwrap();
    assert_eq!(f.rename("a", "a/d1/sub", 0), Err(libc::EINVAL));
    f.mkdir("b/full").unwrap();
    f.write_file("b/full/x", b"").unwrap();
    assert_eq!(f.rename("a/d1", "b/full", 0), Err(libc::ENOTEMPTY));
    assert_eq!(f.rename("a/d1", "a/final", 0), Err(libc::ENOTDIR));
    assert_eq!(f.rename("a/final", "b/full", 0), Err(libc::EISDIR));
    let nlink_a = f.stat("a").unwrap().nlink;
    f.rename("a/d1", "b/d1", 0).unwrap();
    assert_eq!(f.read_file("b/d1/in").unwrap(), b"i");
    assert_eq!(f.stat("a").unwrap().nlink, nlink_a - 1);
    // a whole namespace can be renamed at the root
    f.rename("b", "c", 0).unwrap();
    assert_eq!(f.read_file("c/d1/in").unwrap(), b"i");
}

#[test]
fn unlink_while_open_hard_links_symlinks() {
    let f = Fixture::new();
    f.mkdir("ns").unwrap();
    f.write_file("ns/f", b"data").unwrap();
    f.link("ns/f", "ns/g").unwrap();
    assert_eq!(f.stat("ns/f").unwrap().nlink, 2);
    let ino = f.resolve("ns/f").unwrap();
    let fh = f.core().open(ino, libc::O_RDONLY).unwrap().fh;
    f.unlink("ns/f").unwrap();
    f.unlink("ns/g").unwrap();
    assert_eq!(f.read_fh(fh), b"data", "open handles survive unlink");
    f.core().release(fh);
    f.drain();
    assert_eq!(f.flat_count(), 1, "only the pinned empty blob is left once the last handle closed");
    let ns = f.resolve("ns").unwrap();
    f.core().symlink(CALLER, ns, b"l", b"../target").unwrap();
    let l = f.resolve("ns/l").unwrap();
    assert_eq!(f.core().readlink(l).unwrap(), b"../target");
    assert_eq!(f.stat("ns/l").unwrap().kind, Kind::Symlink);
    assert_eq!(f.link("ns", "ns/dirlink"), Err(libc::EPERM));
    assert_eq!(f.unlink("ns"), Err(libc::EISDIR));
}

#[test]
fn a_replaced_file_the_kernel_still_holds_stays_readable_until_its_forget() {
    let f = Fixture::new();
    f.mkdir("ns").unwrap();
    f.write_file("ns/blk", b"old").unwrap();
    f.write_file("ns/tmp", b"new").unwrap();
    let ns = f.resolve("ns").unwrap();
    let c = f.core();
    // the kernel looked the name up (a reader about to open it), then a writer replaced it
    let old = c.lookup_for_kernel(ns, b"blk").unwrap().unwrap().ino;
    f.rename("ns/tmp", "ns/blk", 0).unwrap();
    assert_eq!(f.read_file("ns/blk").unwrap(), b"new");
    assert_eq!(c.getattr(old).unwrap().nlink, 0, "the old inode is unlinked but still answers");
    let fh = c.open(old, libc::O_RDONLY).unwrap().fh;
    assert_eq!(f.read_fh(fh), b"old", "the racing reader reads the version it resolved");
    c.release(fh);
    f.drain();
    assert_eq!(f.flat_count(), 3, "the kernel's reference keeps the old blob (+ new + empty)");
    c.forget(old, 1);
    assert_eq!(c.getattr(old).map(|_| ()).map_err(common::e), Err(libc::ENOENT), "freed at forget");
    f.drain();
    assert_eq!(f.flat_count(), 2, "and its blob with it");

    // a kernel reference from readdirplus counts the same; . and .. are not references
    f.write_file("ns/b2", b"x").unwrap();
    let dh = c.opendir(ns).unwrap();
    let mut handed = Vec::new();
    c.readdir_from(dh, 0, true, |_, e, _| {
        handed.push(e.name.clone());
        false
    })
    .unwrap();
    c.releasedir(dh);
    assert!(handed.len() == 4, "., .., blk, b2: {handed:?}");
    let b2 = f.resolve("ns/b2").unwrap();
    f.unlink("ns/b2").unwrap();
    assert_eq!(c.getattr(b2).unwrap().nlink, 0, "kept for the kernel");
    c.forget(b2, 1);
    assert!(c.getattr(b2).is_err());
    c.forget(ns, 1);
    assert!(c.getattr(ns).is_ok(), "forget frees only unlinked files, never a live directory");

    // the daemon's own removals (budget eviction) free at once, held or not
    f.write_file("ns/evicted", b"e").unwrap();
    let ev = c.lookup_for_kernel(ns, b"evicted").unwrap().unwrap().ino;
    c.evict(ns, b"evicted").unwrap();
    assert!(c.getattr(ev).is_err(), "an evicted name is gone even while the kernel holds it");
    c.forget(ev, 1);
}

#[test]
fn rmdir_rules() {
    let f = Fixture::new();
    f.mkdir_p("ns/d");
    f.write_file("ns/d/x", b"").unwrap();
    assert_eq!(f.rmdir("ns/d"), Err(libc::ENOTEMPTY));
    assert_eq!(f.rmdir("ns/d/x"), Err(libc::ENOTDIR));
    assert_eq!(f.unlink("ns/d"), Err(libc::EISDIR));
    f.unlink("ns/d/x").unwrap();
    f.rmdir("ns/d").unwrap();
    assert_eq!(f.stat("ns").unwrap().nlink, 2);
    f.rmdir("ns").unwrap();
    assert!(f.list("").unwrap().is_empty());
}

#[test]
fn xattrs_user_namespace_and_virtual_ones() {
    let f = Fixture::new();
    f.mkdir("ns").unwrap();
    f.write_file("ns/f", b"abc").unwrap();
    let ino = f.resolve("ns/f").unwrap();
    let c = f.core();
    c.setxattr(ino, b"user.model", b"llama", 0).unwrap();
    assert_eq!(c.setxattr(ino, b"user.model", b"x", libc::XATTR_CREATE).unwrap_err().errno(), libc::EEXIST);
    assert_eq!(c.setxattr(ino, b"user.other", b"x", libc::XATTR_REPLACE).unwrap_err().errno(), libc::ENODATA);
    assert_eq!(c.setxattr(ino, b"trusted.x", b"x", 0).unwrap_err().errno(), libc::EOPNOTSUPP);
    assert_eq!(c.setxattr(ino, b"user.wombatfs.tier", b"s3", 0).unwrap_err().errno(), libc::EPERM);
    assert_eq!(c.setxattr(ino, b"user.big", &vec![0; 65537], 0).unwrap_err().errno(), libc::E2BIG);
    assert_eq!(c.getxattr(ino, b"user.wombatfs.tier").unwrap(), b"flat");
    let list = c.listxattr(ino).unwrap();
    assert_eq!(list, b"user.wombatfs.blake3\0user.wombatfs.tier\0user.model\0");
    c.removexattr(ino, b"user.model").unwrap();
    assert_eq!(c.getxattr(ino, b"user.model").unwrap_err().errno(), libc::ENODATA);
}

#[test]
fn closed_files_survive_clean_remount_and_crash() {
    let mut f = Fixture::new();
    f.mkdir_p("ns/sub");
    f.write_file("ns/sub/a", b"alpha").unwrap();
    f.write_file("ns/b", b"beta").unwrap();
    f.link("ns/b", "ns/b2").unwrap();
    let ino = f.resolve("ns/b").unwrap();
    f.core().setxattr(ino, b"user.k", b"v", 0).unwrap();
    let ch = wombatfs::fs::SetAttr { mode: Some(0o600), uid: Some(1000), gid: Some(1001), ..Default::default() };
    f.core().setattr(ino, ch, None).unwrap();
    // a file that is still open and unsealed at the crash must not come back
    let fh = f.open_write("ns/unsealed", true).unwrap();
    f.core().write(fh, 0, b"partial").unwrap();
    f.crash();
    assert_eq!(f.read_file("ns/sub/a").unwrap(), b"alpha");
    assert_eq!(f.read_file("ns/b2").unwrap(), b"beta");
    let st = f.stat("ns/b").unwrap();
    assert_eq!((st.perm, st.uid, st.gid, st.nlink), (0o600, 1000, 1001, 2));
    assert_eq!(f.core().getxattr(st.ino, b"user.k").unwrap(), b"v");
    // the create itself was committed, the bytes were not: the name exists, empty
    assert_eq!(f.read_file("ns/unsealed").unwrap(), b"");
    assert_eq!(std::fs::read_dir(f.cache().join("staging")).unwrap().count(), 0, "staging cleared");
    f.remount();
    assert_eq!(f.read_file("ns/sub/a").unwrap(), b"alpha");
    let names: Vec<String> = f.list("ns").unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["b", "b2", "sub", "unsealed"]);
    // new inode numbers never collide with old ones after a crash
    f.write_file("ns/c", b"gamma").unwrap();
    assert_ne!(f.resolve("ns/c").unwrap(), f.resolve("ns/b").unwrap());
}

/// The clean shutdown locks the tree to write the index checkpoint, and the index close waits
/// on the runtime; runtime tasks read the tree (the publisher, a metrics scrape). With every
/// worker waiting for the tree the close never ended (CI saw a daemon hang at unmount), so the
/// tree must be unlocked before anything waits on the runtime.
#[test]
fn a_clean_shutdown_ends_while_every_runtime_worker_reads_the_tree() {
    let f = Fixture::new();
    f.mkdir_p("ns");
    f.write_file("ns/a", b"alpha").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // more readers than workers, each yielding between reads, so every worker is inside
    // `getattr` whenever the tree is locked for writing
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (core, stop) = (f.core_arc(), stop.clone());
            f.handle().spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let _ = core.getattr(ROOT);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let core = f.core_arc();
    std::thread::spawn(move || tx.send(core.shutdown(Duration::from_secs(10)).map_err(|e| e.to_string())));
    let done = rx.recv_timeout(Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    if !matches!(done, Ok(Ok(()))) {
        // the runtime's workers are stuck: dropping it would wait for them forever
        std::mem::forget(f);
        panic!("the shutdown did not end (or failed) while runtime tasks read the tree: {done:?}");
    }
    for r in readers {
        f.block_on(r).unwrap();
    }
    assert!(f.cache().join("index/checkpoint").exists(), "and it wrote the index checkpoint");
}

#[test]
fn flat_tier_loss_is_repaired_from_the_object_store_and_corruption_is_eio() {
    let mut f = Fixture::new();
    f.mkdir("ns").unwrap();
    let data = vec![9u8; 100_000];
    f.write_file("ns/f", &data).unwrap();
    f.drain();
    f.remount();
    let id = BlobId::of(&data);
    let flat = f.cache().join("flat").join(id.fanout()).join(id.to_hex());
    let obj = f.cache().join("objects/blobs").join(id.fanout()).join(id.to_hex());
    // losing the flat link keeps the object-store link: reads refetch and verify
    std::fs::remove_file(&flat).unwrap();
    assert_eq!(f.read_file("ns/f").unwrap(), data);
    assert!(flat.exists());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&flat).unwrap().nlink(), 2, "relinked from the local store, not copied");
    // corrupt bytes in the store with no flat copy: EIO, never wrong data
    f.remount();
    std::fs::remove_file(&flat).unwrap();
    std::fs::remove_file(&obj).unwrap();
    std::fs::write(&obj, vec![8u8; 100_000]).unwrap();
    let ino = f.resolve("ns/f").unwrap();
    let fh = f.core().open(ino, libc::O_RDONLY).unwrap().fh;
    assert_eq!(f.core().read(fh, 0, 10).unwrap_err().errno(), libc::EIO);
    f.core().release(fh);
}

#[test]
fn unreferenced_blobs_are_reclaimed_locally() {
    let mut f = Fixture::new();
    f.mkdir("ns").unwrap();
    for i in 0..5u8 {
        f.write_file("ns/f", &[i; 1000]).unwrap();
    }
    f.drain();
    // (+1: the pinned empty blob)
    assert_eq!(f.flat_count(), 2, "each rewrite releases the previous blob");
    assert_eq!(f.object_count(), 2);
    f.unlink("ns/f").unwrap();
    f.drain();
    assert_eq!(f.flat_count(), 1);
    assert_eq!(f.object_count(), 1);
    // stray files in the flat tier (left by a crash mid-seal) are swept at the mount after
    // the crash (a clean shutdown saves the tier's order instead, and the next mount lists
    // nothing)
    let stray = f.cache().join("flat/00/not-a-blob");
    f.crash_with(|cache| std::fs::write(cache.join("flat/00/not-a-blob"), b"junk").unwrap());
    assert!(!stray.exists());
}

#[test]
fn statfs_and_large_directory() {
    let f = Fixture::new();
    let s = f.core().statfs(1).unwrap();
    assert!(s.blocks > 0 && s.bavail <= s.blocks);
    f.mkdir("ns").unwrap();
    let ns = f.resolve("ns").unwrap();
    for i in 0..20_000 {
        f.core().mknod(CALLER, ns, format!("block-{i:06}.bin").as_bytes(), libc::S_IFREG | 0o644, 0, 0).unwrap();
    }
    let names = f.list("ns").unwrap();
    assert_eq!(names.len(), 20_000);
    assert_eq!(names[0].0, "block-000000.bin");
    assert_eq!(f.core().mknod(CALLER, ns, b"odd", 0o170000 | 0o644, 0, 0).unwrap_err().errno(), libc::EINVAL, "not a file type");
}

/// FIFOs, sockets and device nodes are metadata-only inodes: created, listed, renamed,
/// linked and removed like files, kept across a remount and a crash, never opened here.
#[test]
fn special_files_are_metadata_only_inodes() {
    let mut f = Fixture::new();
    f.mkdir("ns").unwrap();
    let ns = f.resolve("ns").unwrap();
    let dev = (8 << 8) | 1;
    for (name, mode, rdev) in [("fifo", libc::S_IFIFO, 0), ("sock", libc::S_IFSOCK, 0), ("chr", libc::S_IFCHR, dev), ("blk", libc::S_IFBLK, dev)] {
        let a = f.core().mknod(CALLER, ns, name.as_bytes(), mode | 0o640, 0o022, rdev).unwrap();
        assert_eq!((a.size, a.perm, a.rdev), (0, 0o640, rdev), "{name}");
    }
    let kinds = |f: &Fixture| ["fifo", "sock", "chr", "blk"].map(|n| f.stat(&format!("ns/{n}")).map(|a| (a.kind, a.rdev)));
    let want = [Ok((Kind::Fifo, 0)), Ok((Kind::Socket, 0)), Ok((Kind::CharDevice, (8 << 8) | 1)), Ok((Kind::BlockDevice, (8 << 8) | 1))];
    assert_eq!(kinds(&f), want);
    assert_eq!(f.core().open(f.resolve("ns/fifo").unwrap(), libc::O_RDONLY).unwrap_err().errno(), libc::EPERM, "the kernel serves FIFOs itself");
    f.rename("ns/fifo", "ns/pipe", 0).unwrap();
    f.link("ns/sock", "ns/sock2").unwrap();
    assert_eq!(f.stat("ns/sock").unwrap().nlink, 2);
    f.rename("ns/pipe", "ns/fifo", 0).unwrap();
    f.remount();
    assert_eq!(kinds(&f), want, "kept across a remount");
    f.crash();
    assert_eq!(kinds(&f), want, "kept across a crash");
    f.unlink("ns/sock2").unwrap();
    for n in ["fifo", "sock", "chr", "blk"] {
        f.unlink(&format!("ns/{n}")).unwrap();
    }
    assert!(f.list("ns").unwrap().is_empty());
}

/// The core's side of write passthrough, with the test writing the staging file the way the
/// kernel would: the core learns lengths from the file, seals snapshots, and a write after a
/// seal makes a new version without touching the sealed blob's file.
#[test]
fn a_staging_file_the_kernel_writes_is_sealed_by_snapshot() {
    use std::os::unix::fs::FileExt;
    let mut f = Fixture::new();
    f.mkdir("ns").unwrap();
    let fh = f.open_write("ns/k", true).unwrap();
    let staging = f.core().kernel_writer(fh).unwrap().expect("a new file's staging file");
    let reader = f.core().open(f.resolve("ns/k").unwrap(), libc::O_RDONLY).unwrap().fh;
    let shared = f.core().kernel_writer(reader).unwrap().expect("a reader joins the writer's staging file");
    assert!(std::sync::Arc::ptr_eq(&staging, &shared));

    let a: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    staging.write_all_at(&a, 0).unwrap();
    assert_eq!(f.stat("ns/k").unwrap().size, a.len() as u64, "attributes come from the staging file");
    assert_eq!(f.read_fh(reader), a, "a daemon read sees the kernel's bytes");
    f.core().flush(fh).unwrap();
    let ino = f.resolve("ns/k").unwrap();
    assert_eq!(f.core().getxattr(ino, b"user.wombatfs.blake3").unwrap(), BlobId::of(&a).to_hex().into_bytes());
    let flat_a = f.cache().join("flat").join(BlobId::of(&a).fanout()).join(BlobId::of(&a).to_hex());
    assert_eq!(std::fs::read(&flat_a).unwrap(), a);
    f.core().flush(fh).unwrap(); // nothing written since: nothing to do

    // written after the seal (a duplicated descriptor): a new version at the next seal
    staging.write_all_at(b"LATER", 0).unwrap();
    assert_eq!(std::fs::read(&flat_a).unwrap(), a, "the sealed blob's file is not the staging file");
    f.core().release(reader);
    f.core().release(fh);
    let mut b = a.clone();
    b[..5].copy_from_slice(b"LATER");
    assert_eq!(f.read_file("ns/k").unwrap(), b, "the last release sealed the later bytes");
    f.remount();
    assert_eq!(f.read_file("ns/k").unwrap(), b);

    // a rewrite in place of a sealed file is not the kernel's to write
    let fh = f.open_write("ns/k", false).unwrap();
    assert!(f.core().kernel_writer(fh).unwrap().is_none());
    f.core().release(fh);
}

#[test]
fn times_persist_to_the_nanosecond_and_clamp_to_ext4s_range() {
    use std::time::{SystemTime, UNIX_EPOCH};
    use wombatfs::fs::{SetAttr, SetTime};
    let mut f = Fixture::new();
    f.mkdir("ns").unwrap();
    f.write_file("ns/a", b"a").unwrap();
    let ino = f.resolve("ns/a").unwrap();
    let before_1901 = UNIX_EPOCH - Duration::from_secs(3 << 31);
    let exact = UNIX_EPOCH - Duration::new(12_345, 678_901_234);
    let ch = SetAttr {
        atime: Some(SetTime::At(before_1901)),
        mtime: Some(SetTime::At(exact)),
        ..Default::default()
    };
    f.core().setattr(ino, ch, None).unwrap();
    f.write_file("ns/b", b"b").unwrap();
    let after_2446 = UNIX_EPOCH + Duration::new(1 << 36, 5);
    let ch = SetAttr {
        mtime: Some(SetTime::At(after_2446)),
        ..Default::default()
    };
    f.core()
        .setattr(f.resolve("ns/b").unwrap(), ch, None)
        .unwrap();
    let check = |f: &Fixture| {
        let a = f.stat("ns/a").unwrap();
        assert_eq!(a.mtime, exact, "to the nanosecond, before the epoch");
        assert_eq!(
            a.atime,
            UNIX_EPOCH - Duration::from_secs(1 << 31),
            "clamped to 1901-12-13T20:45:52Z"
        );
        let b = f.stat("ns/b").unwrap();
        assert_eq!(
            b.mtime,
            UNIX_EPOCH + Duration::new(15_032_385_535, 999_999_999),
            "clamped to the end of 2446-05-10"
        );
        assert!(b.ctime <= SystemTime::now() && b.ctime > UNIX_EPOCH);
    };
    check(&f);
    f.remount();
    check(&f);
}
