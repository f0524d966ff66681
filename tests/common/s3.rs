//! S3 test server access: `scripts/test` starts SeaweedFS and exports `WOMBATFS_TEST_S3`; tests
//! that need their own server (outages) start one with `scripts/s3-server`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use wombatfs::tiers::s3::{S3Config, S3Store};

pub const BUCKET: &str = "wombat-test";

/// The shared test server's endpoint. Outside CI a missing server skips the test (with a
/// message); in CI (`CI=true`) it is a failure.
pub fn endpoint() -> Option<String> {
    match std::env::var("WOMBATFS_TEST_S3") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(std::env::var("CI").is_err(), "CI must run the S3 tests: start scripts/s3-server (scripts/test does)");
            eprintln!("skipped: WOMBATFS_TEST_S3 not set (scripts/test starts a local S3 server)");
            None
        }
    }
}

/// `wombatfs mount` arguments for the bucket prefix on `ep`, then `extra`.
pub fn mount_args(ep: &str, prefix: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--store", &format!("s3://{BUCKET}/{prefix}"), "--s3-endpoint", ep, "--s3-path-style"].iter().map(|s| s.to_string()).collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn unique_prefix(tag: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{}-{t}", std::process::id())
}

pub fn config(endpoint: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        region: "us-east-1".into(),
        path_style: true,
        access_key: Some("test".into()),
        secret_key: Some("test-secret".into()),
        ..Default::default()
    }
}

pub fn store(endpoint: &str, prefix: &str) -> S3Store {
    S3Store::new(&config(endpoint, prefix)).unwrap()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server")
}

/// A private SeaweedFS for tests that stop and restart their server.
pub struct PrivateServer {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub port: u16,
}

impl PrivateServer {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("wombat-s3-").tempdir().unwrap();
        let out = Command::new(script()).arg("start").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let endpoint = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let port = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        PrivateServer { dir, endpoint, port }
    }

    pub fn stop(&self) {
        assert!(Command::new(script()).arg("stop").arg(self.dir.path()).status().unwrap().success());
    }

    /// Freeze the server (SIGSTOP to its process group): requests hang instead of failing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undo `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("pid")).unwrap();
        assert!(Command::new("kill").arg(sig).arg("--").arg(format!("-{}", pid.trim())).status().unwrap().success());
    }

    /// Start again on the same port and data.
    pub fn restart(&self) {
        let out = Command::new(script()).arg("start").arg(self.dir.path()).env("S3_PORT", self.port.to_string()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if self.dir.path().join("pid").exists() {
            let _ = std::panic::catch_unwind(|| self.resume()); // a paused server would not stop
        }
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).status();
    }
}
