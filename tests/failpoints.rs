//! Crash windows driven by failpoints (the `fail` crate; the tests build the library with its
//! `failpoints` feature). One test binary of its own: failpoints are process-wide.

mod common;

use common::Fixture;

/// A commit that fails must not have deleted anything it would have made unreferenced: the
/// unlink of a file's only name fails, and after a crash the file reads back whole (before the
/// fix the blob's flat file and, with the local store, its only object were removed first).
#[test]
fn a_failed_commit_deletes_no_blob() {
    let scenario = fail::FailScenario::setup();
    let mut f = Fixture::new();
    f.mkdir_p("ns");
    let data = common::random_bytes(3 << 20, 11);
    f.write_file("ns/a", &data).unwrap();
    f.write_file("ns/b", b"other").unwrap();
    fail::cfg("tree-commit", "return").unwrap();
    assert_eq!(f.unlink("ns/a").unwrap_err(), libc::EIO, "the commit failed");
    fail::remove("tree-commit");
    f.crash();
    assert!(f.read_file("ns/a").unwrap() == data, "the old content, not EIO");
    assert_eq!(f.read_file("ns/b").unwrap(), b"other");
    // and a commit that succeeds does reclaim it
    f.unlink("ns/a").unwrap();
    f.remount();
    assert_eq!(f.flat_count(), 2, "the empty blob and b's");
    scenario.teardown();
}
