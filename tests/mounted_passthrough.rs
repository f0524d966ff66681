//! FUSE passthrough (the tests run as root on a kernel that has it; a mount without it logs
//! so and these tests say so and check the fallback instead): read-only opens of local blobs
//! are served by the kernel from the flat file, and the per-inode mode switch never makes an
//! open fail or a reader see bytes that were not sealed.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use common::mount::Mount;
use common::scrape::{get, scrape};

const OPENS: &str = "wombatfs_passthrough_opens_total";
const READ_BYTES: &str = "wombatfs_fuse_read_bytes_total";
const WRITE_BYTES: &str = "wombatfs_fuse_write_bytes_total";

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn passthrough_on(m: &Mount) -> bool {
    let log = m.log();
    assert!(log.contains("passthrough: on") || log.contains("passthrough: off"), "the mount says which mode it runs in: {log}");
    log.contains("passthrough: on")
}

/// Whether writers of new or truncated files write through the kernel (`--passthrough
/// read-write` on Linux >= 6.13).
fn write_passthrough(m: &Mount) -> bool {
    let on = m.log().contains("writes of new or truncated files are served by the kernel");
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let v: Vec<u32> = release.split(|c: char| !c.is_ascii_digit()).take(2).map(|p| p.parse().unwrap()).collect();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 && (v[0], v[1]) >= (6, 13) && m.log().contains("passthrough: on") {
        assert!(on, "root on Linux >= 6.13 writes through the kernel: {}", m.log());
    }
    on
}

/// The bytes of a blob's flat file, if the flat tier holds it.
fn flat_file(m: &Mount, bytes: &[u8]) -> Option<Vec<u8>> {
    let id = wombatfs::blob::BlobId::of(bytes);
    fs::read(m.cache.join("flat").join(id.fanout()).join(id.to_hex())).ok()
}

/// Read the whole file with `O_DIRECT` and `preadv`-sized aligned 2 MiB requests, as vLLM's
/// file tier does.
fn read_direct(p: &std::path::Path, len: usize) -> Vec<u8> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(p).unwrap();
    let mut raw = vec![0u8; (2 << 20) + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let mut out = Vec::with_capacity(len);
    let mut pos = 0u64;
    loop {
        let n = f.read_at(&mut raw[off..off + (2 << 20)], pos).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&raw[off..off + n]);
        pos += n as u64;
    }
    out
}

/// Run `open` (which opens the file once) until one of its opens was a passthrough open, and
/// return what that one returned: the kernel sends RELEASE after a close asynchronously, and
/// until the daemon has it the inode still counts the closed open. What an attempt returned is
/// dropped (closed) before the next: an open on the daemon's path keeps later ones off
/// passthrough.
fn until_passthrough<T>(m: &Mount, mut open: impl FnMut() -> T) -> Option<T> {
    let start = get(&scrape(m), OPENS);
    for _ in 0..100 {
        let got = open();
        if get(&scrape(m), OPENS) > start {
            return Some(got);
        }
        drop(got);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// Read `p` until one of the reads was a passthrough open.
fn reads_until_passthrough(m: &Mount, p: &std::path::Path, want: &[u8]) -> bool {
    until_passthrough(m, || assert!(fs::read(p).unwrap() == want)).is_some()
}

#[test]
fn local_reads_are_served_by_the_kernel_from_the_flat_file() {
    let mut m = Mount::start();
    let on = passthrough_on(&m);
    fs::create_dir(m.path("ns")).unwrap();
    let data = random(1, (6 << 20) + 12345);
    fs::write(m.path("ns/block"), &data).unwrap();
    let before = scrape(&m);
    assert!(fs::read(m.path("ns/block")).unwrap() == data, "buffered read");
    let direct = read_direct(&m.path("ns/block"), data.len());
    assert!(direct == data, "O_DIRECT read");
    {
        let f = File::open(m.path("ns/block")).unwrap();
        // SAFETY: a read-only private mapping of a file we keep open for its lifetime.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), data.len(), libc::PROT_READ, libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&f), 0) };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the mapping is data.len() bytes long.
        let view = unsafe { std::slice::from_raw_parts(p as *const u8, data.len()) };
        assert!(view == &data[..], "mmap");
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(p, data.len()) };
    }
    let after = scrape(&m);
    let d = |k: &str| get(&after, k) - get(&before, k);
    if on {
        assert_eq!(d(OPENS), 3.0, "three read-only opens of a local blob");
        assert_eq!(d(READ_BYTES), 0.0, "no READ reached the daemon");
    } else {
        eprintln!("passthrough is off on this machine: checked the fallback");
        assert_eq!(d(OPENS), 0.0);
        assert!(d(READ_BYTES) > 0.0);
    }
    // a remount serves the same bytes the same way
    m.unmount();
    m.mount();
    assert!(fs::read(m.path("ns/block")).unwrap() == data);
    m.unmount();
}

#[test]
fn a_writer_waits_for_passthrough_readers_and_never_truncates_a_file_it_cannot_open() {
    let m = Mount::start();
    let on = passthrough_on(&m);
    fs::create_dir(m.path("ns")).unwrap();
    let v1 = random(2, 3 << 20);
    fs::write(m.path("ns/f"), &v1).unwrap();
    let mut v2 = v1.clone();
    v2[1 << 20..(1 << 20) + 9].copy_from_slice(b"REWRITTEN");

    // reader A holds the inode (passthrough); a writer's open waits for it, then goes on (the
    // first write's RELEASE may still be on its way: opened until it is a passthrough open)
    let open_a = || File::open(m.path("ns/f")).unwrap();
    let mut a = match on {
        true => until_passthrough(&m, open_a).expect("a reader gets passthrough once the writer's release is in"),
        false => open_a(),
    };
    let mut head = vec![0u8; 4096];
    a.read_exact(&mut head).unwrap();
    assert!(head == v1[..4096]);
    let path = m.path("ns/f");
    let writer = std::thread::spawn(move || {
        let mut w = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        w.seek(SeekFrom::Start(1 << 20)).unwrap();
        w.write_all(b"REWRITTEN").unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    if on {
        assert!(!writer.is_finished(), "the writer waits while the passthrough reader is open");
    }
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!([head, rest].concat() == v1, "the reader read the sealed blob it opened");
    drop(a);
    writer.join().unwrap();
    assert!(fs::read(m.path("ns/f")).unwrap() == v2, "a reader after the writer's close sees its bytes");

    // while a writer is open, readers take the daemon's path and see its bytes
    let before = scrape(&m);
    let mut w = OpenOptions::new().write(true).open(m.path("ns/f")).unwrap();
    w.write_all(b"HEAD").unwrap();
    let mut r = vec![0u8; 4];
    File::open(m.path("ns/f")).unwrap().read_exact(&mut r).unwrap();
    assert_eq!(&r, b"HEAD");
    assert_eq!(get(&scrape(&m), OPENS), get(&before, OPENS), "no passthrough beside a writer");
    drop(w);
    let mut v3 = v2.clone();
    v3[..4].copy_from_slice(b"HEAD");
    if on {
        assert!(reads_until_passthrough(&m, &m.path("ns/f"), &v3), "the new blob is served by passthrough");

        // a reader that stays open past the wait: the writer gets ETXTBSY, and an O_TRUNC
        // open that fails truncates nothing
        let held = File::open(m.path("ns/f")).unwrap();
        let t = std::time::Instant::now();
        let err = OpenOptions::new().write(true).truncate(true).open(m.path("ns/f")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ETXTBSY), "{err}");
        assert!(t.elapsed() >= std::time::Duration::from_millis(1500), "it waited first");
        drop(held);
        assert!(fs::read(m.path("ns/f")).unwrap() == v3, "nothing was truncated");
    }
    assert_eq!(get(&scrape(&m), "wombatfs_fuse_errors_total{op=\"open\",errno=\"EIO\"}"), 0.0);
}

#[test]
fn a_cached_open_keeps_later_opens_of_its_inode_off_passthrough_until_it_closes() {
    let mut m = Mount::start();
    let on = passthrough_on(&m);
    fs::create_dir(m.path("ns")).unwrap();
    let data = random(3, 2 << 20);
    fs::write(m.path("ns/cold"), &data).unwrap();
    // the flat tier loses the blob (the local store keeps it): the next open is not local
    m.unmount();
    fs::remove_dir_all(m.cache.join("flat")).unwrap();
    m.mount();
    let before = scrape(&m);
    let mut x = File::open(m.path("ns/cold")).unwrap(); // cached: the blob is not in the flat tier
    let mut first = vec![0u8; 4096];
    x.read_exact(&mut first).unwrap(); // brings the blob back into the flat tier
    // the blob is local now, but X is a cached open of the inode: Y must not be passthrough
    let y = fs::read(m.path("ns/cold")).unwrap();
    assert!(y == data);
    let mid = scrape(&m);
    assert_eq!(get(&mid, OPENS), get(&before, OPENS), "no passthrough open beside a cached one");
    drop(x);
    if on {
        assert!(reads_until_passthrough(&m, &m.path("ns/cold"), &data), "once the cached opens are gone, passthrough");
    } else {
        assert!(fs::read(m.path("ns/cold")).unwrap() == data);
    }
    m.unmount();
}

#[test]
fn passthrough_off_serves_reads_through_the_daemon() {
    let mut m = Mount::start_with(&["--passthrough", "off"]);
    assert!(m.log().contains("passthrough: off (--passthrough off)"), "{}", m.log());
    fs::create_dir(m.path("ns")).unwrap();
    let data = random(4, 1 << 20);
    let before = scrape(&m);
    fs::write(m.path("ns/f"), &data).unwrap();
    assert_eq!(get(&scrape(&m), WRITE_BYTES) - get(&before, WRITE_BYTES), data.len() as f64, "writes go through the daemon");
    let before = scrape(&m);
    assert!(read_direct(&m.path("ns/f"), data.len()) == data);
    let after = scrape(&m);
    assert_eq!(get(&after, OPENS), 0.0);
    assert_eq!(get(&after, READ_BYTES) - get(&before, READ_BYTES), data.len() as f64);
    m.unmount();
}

#[test]
fn writers_of_new_and_truncated_files_write_through_the_kernel_and_close_seals_them() {
    let mut m = Mount::start_with(&["--passthrough", "read-write"]);
    let on = passthrough_on(&m) && write_passthrough(&m);
    fs::create_dir(m.path("ns")).unwrap();
    let before = scrape(&m);

    // a new file: one big write, as the engines do; stat sees the kernel's writes
    let data = random(5, (6 << 20) + 777);
    let mut f = OpenOptions::new().write(true).create_new(true).open(m.path("ns/new")).unwrap();
    f.write_all(&data[..1 << 20]).unwrap();
    assert_eq!(fs::metadata(m.path("ns/new")).unwrap().len(), 1 << 20, "stat while writing");
    f.write_all(&data[1 << 20..]).unwrap();
    assert_eq!(f.metadata().unwrap().len(), data.len() as u64);
    drop(f);
    assert!(fs::read(m.path("ns/new")).unwrap() == data);
    assert!(flat_file(&m, &data).is_some_and(|b| b == data), "close sealed it into the flat tier");

    // O_TRUNC over an existing file, with O_DIRECT and aligned buffers (vLLM's store)
    let v2 = random(6, 2 << 20);
    let mut raw = vec![0u8; v2.len() + 4096];
    let off = raw.as_ptr().align_offset(4096);
    raw[off..off + v2.len()].copy_from_slice(&v2);
    let mut f = OpenOptions::new().write(true).truncate(true).custom_flags(libc::O_DIRECT).open(m.path("ns/new")).unwrap();
    f.write_all(&raw[off..off + v2.len()]).unwrap();
    drop(f);
    assert!(fs::read(m.path("ns/new")).unwrap() == v2);
    assert_eq!(read_direct(&m.path("ns/new"), v2.len()), v2);

    // an empty new file stays empty; fsync in the middle, then more writes
    File::create(m.path("ns/empty")).unwrap();
    assert_eq!(fs::metadata(m.path("ns/empty")).unwrap().len(), 0);
    let mut f = File::create(m.path("ns/synced")).unwrap();
    f.write_all(&data[..3 << 20]).unwrap();
    f.sync_all().unwrap();
    assert!(flat_file(&m, &data[..3 << 20]).is_some(), "fsync sealed what was written");
    f.write_all(&data[3 << 20..]).unwrap();
    drop(f);
    assert!(fs::read(m.path("ns/synced")).unwrap() == data);

    let after = scrape(&m);
    if on {
        assert_eq!(get(&after, WRITE_BYTES), get(&before, WRITE_BYTES), "no WRITE reached the daemon");
        assert!(get(&after, OPENS) >= get(&before, OPENS) + 4.0, "the writers were passthrough opens");
    } else {
        assert!(get(&after, WRITE_BYTES) >= get(&before, WRITE_BYTES) + (data.len() * 2 + v2.len()) as f64);
    }

    // everything survives a remount
    m.unmount();
    m.mount();
    assert!(fs::read(m.path("ns/new")).unwrap() == v2);
    assert!(fs::read(m.path("ns/synced")).unwrap() == data);
    assert_eq!(fs::read(m.path("ns/empty")).unwrap().len(), 0);
    m.unmount();
}

#[test]
fn writes_after_a_seal_never_reach_the_sealed_blob() {
    let mut m = Mount::start_with(&["--passthrough", "read-write"]);
    let on = passthrough_on(&m) && write_passthrough(&m);
    fs::create_dir(m.path("ns")).unwrap();

    // a duplicated descriptor outlives the close that sealed the file: its later writes
    // make a new version, as on a local filesystem, and the first blob keeps its bytes
    let a = random(7, 1 << 20);
    let b = random(8, 4096);
    let mut f = File::create(m.path("ns/dup")).unwrap();
    f.write_all(&a).unwrap();
    let mut g = f.try_clone().unwrap();
    drop(f); // FLUSH: sealed as `a`
    assert!(fs::read(m.path("ns/dup")).unwrap() == a);
    g.write_all(&b).unwrap();
    drop(g); // FLUSH + RELEASE: sealed again
    let ab = [a.clone(), b].concat();
    assert!(fs::read(m.path("ns/dup")).unwrap() == ab);
    assert!(flat_file(&m, &a).is_none_or(|x| x == a), "the first version's flat file still holds it");
    assert!(flat_file(&m, &ab).is_some_and(|x| x == ab));

    // a shared writable mapping written after the close: the sealed blob is never changed
    let c = random(9, 64 << 10);
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.path("ns/mapped")).unwrap();
    f.write_all_at(&c, 0).unwrap();
    // SAFETY: a mapping of a file we hold open; unmapped below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), c.len(), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&f), 0) };
    assert_ne!(p, libc::MAP_FAILED);
    drop(f); // sealed as `c`
    // SAFETY: the mapping is c.len() bytes long.
    unsafe {
        std::ptr::write_bytes(p.cast::<u8>(), b'X', 4096);
        libc::msync(p, c.len(), libc::MS_SYNC);
        libc::munmap(p, c.len());
    }
    let now = fs::read(m.path("ns/mapped")).unwrap();
    let mut cx = c.clone();
    cx[..4096].fill(b'X');
    assert!(now == c || now == cx, "the file reads as one version or the other");
    assert!(flat_file(&m, &c).is_none_or(|x| x == c), "the sealed blob's flat file was not written through the mapping");

    // a fresh mount reads what the index names, and it hashes to its id
    m.unmount();
    m.mount();
    assert!(fs::read(m.path("ns/dup")).unwrap() == ab);
    let after = fs::read(m.path("ns/mapped")).unwrap();
    assert!(after == c || after == cx);
    if on {
        assert!(flat_file(&m, &c).is_none_or(|x| x == c));
    }
    m.unmount();
}
