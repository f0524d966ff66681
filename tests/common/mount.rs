//! Mounted-test harness: runs the real `wombatfs` binary on a unique temp dir and guarantees
//! the mount is gone afterwards (RAII: unmount, lazy-unmount fallback, kill the daemon).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the daemon of `cache` (its pid is in the lock file) is gone within `limit`: exited,
/// or a zombie nobody reaped yet. A background daemon is no child of the test, so waiting on
/// it means watching its pid.
pub fn daemon_gone(cache: &Path, limit: Duration) -> bool {
    let pid = std::fs::read_to_string(cache.join("lock")).unwrap_or_default();
    let pid = pid.trim();
    if pid.is_empty() {
        return true;
    }
    let t = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) S …`
        if stat.is_empty() || stat.rsplit(')').next().is_none_or(|rest| rest.trim_start().starts_with('Z')) {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wombatfs")
}

pub fn is_mounted(mnt: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = mnt.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(&want))
}

pub fn lazy_unmount(mnt: &Path) {
    let ok = Command::new("fusermount3").arg("-uz").arg(mnt).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(mnt).stderr(Stdio::null()).status();
    }
}

/// Whether the daemon behind the mount at `mnt` answers: a `stat` of a name never looked up
/// before (the kernel answers cached names, and cached misses, of a dead mount by itself).
pub fn answers(mnt: &Path) -> bool {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let probe = mnt.join(format!(".probe-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    match std::fs::metadata(probe) {
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
        Ok(_) => true,
    }
}

/// The exit status of `child` once it exits, or `None` after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Mount {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    pub cache: PathBuf,
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl Mount {
    /// Mount in the foreground on a fresh temp dir.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("wombat-test-").tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        let cache = dir.path().join("cache");
        std::fs::create_dir(&mnt).unwrap();
        let mut m = Mount { dir, mnt, cache, extra: extra.iter().map(|s| s.to_string()).collect(), child: None };
        m.mount();
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// (Re)start the daemon on the same cache dir.
    pub fn mount(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap();
        let child = Command::new(bin())
            .arg("mount")
            .arg(&self.mnt)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--foreground")
            .args(&self.extra)
            .env("WOMBATFS_LOG", "info")
            // tests mount several at once: each daemon's metrics on a free port
            .env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        // a stale mount of a killed daemon is listed too: wait until the mount answers
        while !(is_mounted(&self.mnt) && self.answers()) {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited during mount: {st}; log:\n{}", self.log());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "mount did not appear; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        answers(&self.mnt)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Clean unmount through fusermount3 (falls back to umount); the daemon must exit 0.
    pub fn unmount(&mut self) {
        // a file closed a moment ago may still hold the mount busy (the kernel finishes the
        // close asynchronously): retry for a while before calling it a failure
        let t = Instant::now();
        loop {
            let st = Command::new("fusermount3").arg("-u").arg(&self.mnt).stderr(Stdio::null()).status();
            if st.map(|s| s.success()).unwrap_or(false) {
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                let out = Command::new("umount").arg(&self.mnt).output().unwrap();
                assert!(out.status.success(), "umount failed: {}; log:\n{}", String::from_utf8_lossy(&out.stderr), self.log());
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.wait_exit(0);
    }

    pub fn wait_exit(&mut self, code: i32) {
        let mut child = self.child.take().expect("daemon running");
        let st = wait_child(&mut child, Duration::from_secs(60)).unwrap_or_else(|| panic!("daemon did not exit; log:\n{}", self.log()));
        assert_eq!(st.code(), Some(code), "daemon exit; log:\n{}", self.log());
        assert!(!is_mounted(&self.mnt));
    }

    /// Send a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
    }

    /// kill -9 the daemon, leaving a dead mount behind, as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
