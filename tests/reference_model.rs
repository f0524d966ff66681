//! Reference-model property test: random sequences of filesystem operations (create, write,
//! pwrite, truncate, rename with flags, link, unlink, mkdir, rmdir, a handle held open across
//! operations with writes and fsync, clean remounts and crashes) are applied to wombatfs' core
//! and to a plain temp directory on the host filesystem. Every operation must give the same
//! outcome (success or the same errno) and the trees — names, kinds, sizes, link counts and
//! bytes — must match after every step that ends a sequence or remounts.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::Fixture;
use proptest::prelude::*;

const DIRS: [&str; 4] = ["ns0", "ns1", "ns0/d", "ns1/d"];
const NAMES: [&str; 3] = ["f0", "f1", "f2"];

fn file_path(i: usize) -> String {
    format!("{}/{}", DIRS[i / NAMES.len() % DIRS.len()], NAMES[i % NAMES.len()])
}

#[derive(Clone, Debug)]
enum Op {
    Write { file: usize, len: usize, seed: u8 },
    Pwrite { file: usize, off: u64, len: usize, seed: u8 },
    Truncate { file: usize, size: u64 },
    Rename { from: usize, to: usize, flags: u32 },
    RenameDir { from: usize, to: usize },
    Link { from: usize, to: usize },
    Unlink { file: usize },
    Mkdir { dir: usize },
    Rmdir { dir: usize },
    Hold { file: usize },
    HeldWrite { off: u64, len: usize, seed: u8 },
    HeldFsync,
    HeldClose,
    Remount,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let nfiles = DIRS.len() * NAMES.len();
    let file = 0..nfiles;
    prop_oneof![
        4 => (file.clone(), 0..3000usize, any::<u8>()).prop_map(|(file, len, seed)| Op::Write { file, len, seed }),
        2 => (file.clone(), 0..4000u64, 1..2000usize, any::<u8>()).prop_map(|(file, off, len, seed)| Op::Pwrite { file, off, len, seed }),
        1 => (file.clone(), 0..5000u64).prop_map(|(file, size)| Op::Truncate { file, size }),
        3 => (file.clone(), file.clone(), prop_oneof![Just(0), Just(libc::RENAME_NOREPLACE), Just(libc::RENAME_EXCHANGE)])
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        1 => (2..4usize, 0..4usize).prop_map(|(from, to)| Op::RenameDir { from, to }),
        2 => (file.clone(), file.clone()).prop_map(|(from, to)| Op::Link { from, to }),
        2 => file.clone().prop_map(|file| Op::Unlink { file }),
        2 => (2..4usize).prop_map(|dir| Op::Mkdir { dir }),
        1 => (2..4usize).prop_map(|dir| Op::Rmdir { dir }),
        1 => file.clone().prop_map(|file| Op::Hold { file }),
        2 => (0..4000u64, 1..2000usize, any::<u8>()).prop_map(|(off, len, seed)| Op::HeldWrite { off, len, seed }),
        1 => Just(Op::HeldFsync),
        1 => Just(Op::HeldClose),
        1 => Just(Op::Remount),
        1 => Just(Op::Crash),
    ]
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i * 31 % 251) as u8)).collect()
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// The oracle: the same operations on a real directory.
struct Oracle {
    root: PathBuf,
    held: Option<File>,
}

impl Oracle {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn apply(&mut self, op: &Op) -> Result<(), i32> {
        use std::io::Write;
        match op {
            Op::Write { file, len, seed } => {
                let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(self.p(&file_path(*file))).map_err(errno)?;
                f.write_all(&bytes(*len, *seed)).map_err(errno)
            }
            Op::Pwrite { file, off, len, seed } => {
                let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(self.p(&file_path(*file))).map_err(errno)?;
                f.write_all_at(&bytes(*len, *seed), *off).map_err(errno)
            }
            Op::Truncate { file, size } => OpenOptions::new().write(true).open(self.p(&file_path(*file))).and_then(|f| f.set_len(*size)).map_err(errno),
            Op::Rename { from, to, flags } => renameat2(&self.p(&file_path(*from)), &self.p(&file_path(*to)), *flags),
            Op::RenameDir { from, to } => renameat2(&self.p(DIRS[*from]), &self.p(DIRS[*to]), 0),
            Op::Link { from, to } => std::fs::hard_link(self.p(&file_path(*from)), self.p(&file_path(*to))).map_err(errno),
            Op::Unlink { file } => std::fs::remove_file(self.p(&file_path(*file))).map_err(errno),
            Op::Mkdir { dir } => std::fs::create_dir(self.p(DIRS[*dir])).map_err(errno),
            Op::Rmdir { dir } => std::fs::remove_dir(self.p(DIRS[*dir])).map_err(errno),
            Op::Hold { file } => {
                let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(self.p(&file_path(*file))).map_err(errno)?;
                self.held = Some(f);
                Ok(())
            }
            Op::HeldWrite { off, len, seed } => match &self.held {
                Some(f) => f.write_all_at(&bytes(*len, *seed), *off).map_err(errno),
                None => Ok(()),
            },
            Op::HeldFsync => self.held.as_ref().map_or(Ok(()), |f| f.sync_all().map_err(errno)),
            Op::HeldClose | Op::Remount | Op::Crash => {
                self.held = None;
                Ok(())
            }
        }
    }
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    let a = CString::new(from.as_os_str().as_bytes()).unwrap();
    let b = CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings; renameat2 touches no other memory.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
    if rc == 0 { Ok(()) } else { Err(errno(std::io::Error::last_os_error())) }
}

struct Subject {
    f: Fixture,
    held: Option<u64>,
}

impl Subject {
    fn apply(&mut self, op: &Op) -> Result<(), i32> {
        let f = &mut self.f;
        match op {
            Op::Write { file, len, seed } => f.write_file(&file_path(*file), &bytes(*len, *seed)),
            Op::Pwrite { file, off, len, seed } => f.pwrite(&file_path(*file), *off, &bytes(*len, *seed)),
            Op::Truncate { file, size } => f.truncate(&file_path(*file), *size),
            Op::Rename { from, to, flags } => f.rename(&file_path(*from), &file_path(*to), *flags),
            Op::RenameDir { from, to } => f.rename(DIRS[*from], DIRS[*to], 0),
            Op::Link { from, to } => f.link(&file_path(*from), &file_path(*to)),
            Op::Unlink { file } => f.unlink(&file_path(*file)),
            Op::Mkdir { dir } => f.mkdir(DIRS[*dir]).map(|_| ()),
            Op::Rmdir { dir } => f.rmdir(DIRS[*dir]),
            Op::Hold { file } => {
                // holding another file closes the previous one once the new one is open, as the
                // oracle's assignment drops it
                let new = f.open_write(&file_path(*file), false)?;
                match self.held.replace(new) {
                    Some(old) => f.close(old),
                    None => Ok(()),
                }
            }
            Op::HeldWrite { off, len, seed } => match self.held {
                Some(fh) => f.core().write(fh, *off, &bytes(*len, *seed)).map(|_| ()).map_err(common::e),
                None => Ok(()),
            },
            Op::HeldFsync => self.held.map_or(Ok(()), |fh| f.core().fsync(fh).map_err(common::e)),
            Op::HeldClose => self.held.take().map_or(Ok(()), |fh| f.close(fh)),
            Op::Remount | Op::Crash => {
                // an open handle is closed (sealed) first on both sides; unsealed data is not
                // promised to survive a crash, so the model never crashes with one
                let r = self.held.take().map_or(Ok(()), |fh| f.close(fh));
                if matches!(op, Op::Remount) { f.remount() } else { f.crash() }
                r
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Node {
    Dir,
    File { nlink: u64, data: Vec<u8> },
}

fn oracle_tree(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let name = format!("{rel}{}{}", if rel.is_empty() { "" } else { "/" }, e.file_name().to_string_lossy());
            let md = e.metadata().unwrap();
            if md.is_dir() {
                out.insert(name.clone(), Node::Dir);
                walk(root, &name, out);
            } else {
                out.insert(name.clone(), Node::File { nlink: md.nlink(), data: std::fs::read(e.path()).unwrap() });
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn subject_tree(f: &Fixture) -> BTreeMap<String, Node> {
    fn walk(f: &Fixture, rel: &str, out: &mut BTreeMap<String, Node>) {
        for (n, kind) in f.list(rel).unwrap() {
            let name = format!("{rel}{}{n}", if rel.is_empty() { "" } else { "/" });
            if kind == wombatfs::fs::Kind::Dir {
                out.insert(name.clone(), Node::Dir);
                walk(f, &name, out);
            } else {
                let st = f.stat(&name).unwrap();
                let data = f.read_file(&name).unwrap();
                assert_eq!(st.size, data.len() as u64, "{name}: size attribute matches the bytes");
                out.insert(name.clone(), Node::File { nlink: st.nlink as u64, data });
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(f, "", &mut out);
    out
}

fn run(ops: &[Op]) {
    let oracle_dir = tempfile::Builder::new().prefix("wombat-oracle-").tempdir().unwrap();
    let mut oracle = Oracle { root: oracle_dir.path().to_path_buf(), held: None };
    let mut subject = Subject { f: Fixture::new(), held: None };
    for ns in ["ns0", "ns1"] {
        std::fs::create_dir(oracle.p(ns)).unwrap();
        subject.f.mkdir(ns).unwrap();
    }
    for (i, op) in ops.iter().enumerate() {
        let want = oracle.apply(op);
        let got = subject.apply(op);
        assert_eq!(got, want, "step {i}: {op:?}");
        if matches!(op, Op::Remount | Op::Crash) {
            assert_eq!(subject_tree(&subject.f), oracle_tree(&oracle.root), "tree after step {i}: {op:?}");
        }
    }
    let _ = subject.apply(&Op::HeldClose);
    oracle.held = None;
    assert_eq!(subject_tree(&subject.f), oracle_tree(&oracle.root), "final tree");
    subject.f.remount();
    assert_eq!(subject_tree(&subject.f), oracle_tree(&oracle.root), "tree after the final remount");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]
    #[test]
    fn wombatfs_matches_a_real_directory(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}

/// Shrunk failures found while building the model, kept as regression tests.
#[test]
fn regression_switching_the_held_file_closes_the_previous_one() {
    run(&[Op::Hold { file: 0 }, Op::HeldWrite { off: 0, len: 1, seed: 0 }, Op::Hold { file: 1 }, Op::Crash]);
}

#[test]
fn regression_exchange_file_with_dir_and_rewrite_held_file() {
    run(&[
        Op::Mkdir { dir: 2 },
        Op::Write { file: 0, len: 10, seed: 1 },
        Op::Hold { file: 0 },
        Op::HeldWrite { off: 100, len: 5, seed: 2 },
        Op::Rename { from: 0, to: 6, flags: 0 },
        Op::HeldFsync,
        Op::Crash,
        Op::Link { from: 6, to: 3 },
        Op::Unlink { file: 6 },
        Op::Remount,
    ]);
}
