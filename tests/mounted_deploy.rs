//! Deployment as an operator does it: `scripts/install`, an /etc/fstab line mounted by
//! util-linux's real `mount` through the `mount.fuse.wombatfs` helper and taken down by
//! `umount`, and the systemd unit's commands (start, stop, restart after `kill -9`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mount::{answers, bin, daemon_gone, is_mounted, lazy_unmount, wait_child};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    eprintln!("{cmd:?}: {} {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// The daemon of a cache dir is gone: exited and not a zombie.
fn wait_daemon_gone(cache: &Path) {
    assert!(daemon_gone(cache, Duration::from_secs(60)), "daemon of {} did not exit; log:\n{}", cache.display(), log(cache));
}

fn log(cache: &Path) -> String {
    std::fs::read_to_string(cache.join("wombatfs.log")).unwrap_or_default()
}

/// `/sbin/mount.fuse.<type>` for a type unique to this test, removed on drop (with any mount
/// left behind), so an installed wombatfs on the machine is never touched.
struct Helper {
    fstype: String,
    link: PathBuf,
    mnt: PathBuf,
}

impl Helper {
    fn new(tag: &str, mnt: &Path) -> Self {
        let fstype = format!("fuse.wombatfs-test-{tag}-{}", std::process::id());
        let link = Path::new("/sbin").join(format!("mount.{fstype}"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(bin(), &link).unwrap();
        Helper { fstype, link, mnt: mnt.to_path_buf() }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
        let _ = std::fs::remove_file(&self.link);
    }
}

fn mounts_at(mnt: &Path) -> usize {
    let want = mnt.to_string_lossy();
    std::fs::read_to_string("/proc/self/mounts").unwrap().lines().filter(|l| l.split(' ').nth(1) == Some(&want)).count()
}

/// `umount` returns before the daemon finished its clean shutdown: wait for it.
fn umount(mnt: &Path, cache: &Path) {
    let t = Instant::now();
    // a file closed a moment ago may hold the mount busy for a moment
    while !run(Command::new("umount").arg(mnt)).status.success() {
        assert!(t.elapsed() < Duration::from_secs(10), "umount kept failing");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_daemon_gone(cache);
    assert!(!is_mounted(mnt));
}

fn fstab_mount(store: Option<(&str, &str)>) {
    if !is_root() {
        eprintln!("skipped: mount(8) helpers and /etc/fstab are root's");
        return;
    }
    let dir = tempfile::Builder::new().prefix("wombat-fstab-").tempdir().unwrap();
    let (mnt, cache) = (dir.path().join("kv"), dir.path().join("cache"));
    std::fs::create_dir(&mnt).unwrap();
    let helper = Helper::new(if store.is_some() { "s3" } else { "local" }, &mnt);
    let (source, s3_opts) = match store {
        Some((ep, prefix)) => (format!("s3://{}/{prefix}", common::s3::BUCKET), format!(",s3_endpoint={ep},s3_path_style,upload=sync")),
        None => ("wombatfs".to_string(), String::new()),
    };
    let fstab = dir.path().join("fstab");
    let line = |opts: &str| {
        format!("# an operator's line\n{source}  {}  {}  cache_dir={}{s3_opts},metrics_addr=127.0.0.1:0,allow_other,_netdev,nofail,x-systemd.after=network-online.target{opts}  0 0\n", mnt.display(), helper.fstype, cache.display())
    };
    std::fs::write(&fstab, line("")).unwrap();
    let mount = |args: &[&str]| {
        run(Command::new("mount").arg("-T").arg(&fstab).args(args).env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test-secret"))
    };
    // mount -a mounts the line; a second mount -a finds it mounted and changes nothing
    assert!(mount(&["-a"]).status.success(), "mount -a; log:\n{}", log(&cache));
    assert!(is_mounted(&mnt));
    assert!(mount(&["-a"]).status.success(), "mount -a again");
    assert_eq!(mounts_at(&mnt), 1, "one mount after two mount -a");
    std::fs::create_dir(mnt.join("llama")).unwrap();
    let data = common::random_bytes(3 << 20, 7);
    std::fs::write(mnt.join("llama/block-0"), &data).unwrap();
    std::fs::write(mnt.join("llama/block-1"), b"small block").unwrap();
    // umount(8) takes it down; the daemon shuts down cleanly
    umount(&mnt, &cache);
    assert!(log(&cache).contains("clean shutdown"), "{}", log(&cache));
    // mount by mountpoint (as systemd's generated unit and `mount /var/cache/kv` do)
    assert!(mount(&[mnt.to_str().unwrap()]).status.success(), "mount MOUNTPOINT; log:\n{}", log(&cache));
    assert!(std::fs::read(mnt.join("llama/block-0")).unwrap() == data, "a block after the remount");
    assert_eq!(std::fs::read(mnt.join("llama/block-1")).unwrap(), b"small block");
    // `mount -f` pretends: nothing changes
    assert!(mount(&["-f", mnt.to_str().unwrap()]).status.success());
    assert_eq!(mounts_at(&mnt), 1);
    umount(&mnt, &cache);
    // a bad line fails with what is wrong and mounts nothing
    std::fs::write(&fstab, line(",threads=many")).unwrap();
    let out = mount(&[mnt.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("many"), "names the bad value");
    assert!(!is_mounted(&mnt));
    std::fs::write(&fstab, line(",aws_secret_access_key=s3cr3t")).unwrap();
    let out = mount(&[mnt.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("world-readable"));
    assert!(!is_mounted(&mnt));
    // systemd at boot: its fstab generator turns the line into a .mount unit, and the unit
    // runs `mount WHAT WHERE -t TYPE -o OPTIONS`
    std::fs::write(&fstab, line("")).unwrap();
    let generator = Path::new("/usr/lib/systemd/system-generators/systemd-fstab-generator");
    if generator.exists() {
        let units = dir.path().join("units");
        for d in ["normal", "early", "late"] {
            std::fs::create_dir_all(units.join(d)).unwrap();
        }
        let out = run(Command::new(generator).args([units.join("normal"), units.join("early"), units.join("late")]).env("SYSTEMD_FSTAB", &fstab));
        assert!(out.status.success());
        let name = String::from_utf8(run(Command::new("systemd-escape").args(["-p", "--suffix=mount"]).arg(&mnt)).stdout).unwrap();
        let name = name.trim();
        let unit = std::fs::read_to_string(units.join("normal").join(name)).unwrap_or_else(|e| panic!("no {name}: {e}"));
        let field = |k: &str| unit.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_else(|| panic!("{k} in {unit}")).to_string();
        assert_eq!(field("Type"), helper.fstype);
        // `_netdev`: a remote mount, ordered after the network (`nofail`: wanted, not required)
        assert!(units.join("normal/remote-fs.target.wants").join(name).exists() || units.join("normal/remote-fs.target.requires").join(name).exists(), "_netdev: under remote-fs.target");
        let out = run(Command::new("mount").arg(field("What")).arg(field("Where")).args(["-t", &field("Type"), "-o", &field("Options")]).env("AWS_ACCESS_KEY_ID", "test").env("AWS_SECRET_ACCESS_KEY", "test-secret"));
        assert!(out.status.success(), "the generated unit's mount; log:\n{}", log(&cache));
        assert!(std::fs::read(mnt.join("llama/block-0")).unwrap() == data, "through the generated unit");
        umount(&mnt, &cache);
    }
}

#[test]
fn an_fstab_line_mounts_with_mount_a_and_comes_down_with_umount() {
    fstab_mount(None);
}

#[test]
fn an_fstab_line_with_an_s3_source_mounts_the_bucket() {
    let Some(ep) = common::s3::endpoint() else {
        return;
    };
    fstab_mount(Some((&ep, &common::s3::unique_prefix("fstab"))));
}

#[test]
fn scripts_install_stages_the_binary_the_helper_and_the_unit() {
    let dest = tempfile::Builder::new().prefix("wombat-install-").tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install");
    let out = run(Command::new(script).args(["--prefix", "/opt/wombat", "--binary", bin()]).arg("--destdir").arg(dest.path()));
    assert!(out.status.success());
    let d = dest.path();
    let installed = d.join("opt/wombat/bin/wombatfs");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(bin()).unwrap());
    assert_eq!(std::fs::read_link(d.join("sbin/mount.fuse.wombatfs")).unwrap(), Path::new("/opt/wombat/bin/wombatfs"));
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/wombatfs.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/wombat/bin/wombatfs mount"), "{unit}");
    // the installed binary answers as the helper: `-f` (fake) is a no-op that succeeds
    let link = d.join("mount.fuse.wombatfs");
    std::os::unix::fs::symlink(&installed, &link).unwrap();
    assert!(run(Command::new(&link).args(["wombatfs", "/nonexistent", "-f"])).status.success());
    let out = run(Command::new(&link).args(["http://nowhere", "/mnt"]));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("s3://BUCKET"));
    let out = run(Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install")).arg("--uninstall").arg("--destdir").arg(d).args(["--prefix", "/opt/wombat"]));
    assert!(out.status.success() && !installed.exists() && !d.join("sbin/mount.fuse.wombatfs").exists());
}

/// The `[Service]` lines of mount/wombatfs.service with the machine paths replaced by a test's.
struct Unit {
    text: String,
}

impl Unit {
    fn load(mnt: &Path, cache: &Path) -> Self {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("mount/wombatfs.service")).unwrap();
        let text = text
            .replace("/usr/local/bin/wombatfs", bin())
            .replace("/var/cache/kv", mnt.to_str().unwrap())
            .replace("/var/lib/wombatfs", cache.to_str().unwrap());
        Unit { text }
    }

    fn values(&self, key: &str) -> Vec<String> {
        self.text.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
    }

    /// Run a command line as systemd does (a leading `-` ignores its failure).
    fn command(line: &str) -> (Command, bool) {
        let (line, may_fail) = match line.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut c = Command::new(words[0]);
        c.args(&words[1..]).env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0");
        (c, may_fail)
    }

    fn run_all(&self, key: &str) {
        for line in self.values(key) {
            let (mut c, may_fail) = Self::command(&line);
            let ok = run(&mut c).status.success();
            assert!(ok || may_fail, "{key}={line} failed");
        }
    }

    /// `systemctl start`: ExecStartPre, then ExecStart as the main process (Type=simple).
    fn start(&self, mnt: &Path, cache: &Path) -> std::process::Child {
        self.run_all("ExecStartPre");
        let (mut c, _) = Self::command(&self.values("ExecStart")[0]);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(cache.with_extension("journal")).unwrap();
        let child = c.stdout(std::process::Stdio::null()).stderr(log).spawn().unwrap();
        wait_for("the unit's mount", &cache.with_extension("journal"), || is_mounted(mnt) && answers(mnt));
        child
    }
}

/// What systemd does with mount/wombatfs.service, step by step, on this machine (no systemd
/// runs here as PID 1): start, stop with the unit's KillSignal, restart after a `kill -9`
/// (Restart=on-failure; ExecStopPost clears the dead mount). Every closed file survives.
#[test]
fn the_systemd_unit_starts_stops_cleanly_and_restarts_after_kill_9() {
    if !is_root() {
        eprintln!("skipped: the unit runs as root");
        return;
    }
    let dir = tempfile::Builder::new().prefix("wombat-unit-").tempdir().unwrap();
    let (mnt, cache) = (dir.path().join("kv"), dir.path().join("lib"));
    let unit = Unit::load(&mnt, &cache);
    let _cleanup = Helper { fstype: String::new(), link: dir.path().join("no-link"), mnt: mnt.clone() };
    assert_eq!(unit.values("KillSignal"), ["SIGTERM"]);
    assert_eq!(unit.values("Restart"), ["on-failure"]);
    let stop_timeout: u64 = unit.values("TimeoutStopSec")[0].parse().unwrap();
    // systemd's own check of the unit file, where this machine has it
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let f = dir.path().join("wombatfs.service");
        std::fs::write(&f, &unit.text).unwrap();
        let out = run(Command::new("systemd-analyze").arg("verify").arg(&f));
        assert!(out.status.success(), "systemd-analyze verify: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut main = unit.start(&mnt, &cache);
    std::fs::create_dir(mnt.join("sglang")).unwrap();
    let data = common::random_bytes(2 << 20, 11);
    std::fs::write(mnt.join("sglang/page-0"), &data).unwrap();
    // systemctl stop: KillSignal to the main process, wait up to TimeoutStopSec, ExecStopPost
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(main.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut main, Duration::from_secs(stop_timeout)).expect("stop took longer than TimeoutStopSec");
    assert!(status.success(), "a stop is a clean exit, not a failure: {status}");
    unit.run_all("ExecStopPost");
    assert!(!is_mounted(&mnt), "the stop unmounted");
    // start, write, kill -9: the exit is a failure, so Restart=on-failure starts it again
    let mut main = unit.start(&mnt, &cache);
    std::fs::write(mnt.join("sglang/page-1"), b"written before the crash").unwrap();
    main.kill().unwrap();
    let status = main.wait().unwrap();
    assert!(!status.success(), "kill -9 counts as a failure for Restart=on-failure");
    unit.run_all("ExecStopPost");
    let mut main = unit.start(&mnt, &cache);
    assert!(std::fs::read(mnt.join("sglang/page-0")).unwrap() == data);
    assert_eq!(std::fs::read(mnt.join("sglang/page-1")).unwrap(), b"written before the crash");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(main.id() as i32, libc::SIGTERM) };
    assert!(main.wait().unwrap().success());
    unit.run_all("ExecStopPost");
    assert!(!is_mounted(&mnt));
}

/// A process started in a new mount namespace (`unshare`, through `nsenter` into a parent
/// one), killed on drop; `/proc/<pid>/root` resolves paths in its namespace.
struct Ns {
    child: std::process::Child,
}

impl Ns {
    /// `unshare --mount --propagation <p> <cmd>`, inside `parent`'s namespace when given.
    fn spawn(parent: Option<&Ns>, propagation: &str, cmd: &[&str], log: &Path) -> Ns {
        let mut c = match parent {
            Some(p) => {
                let mut c = Command::new("nsenter");
                c.arg("-t").arg(p.pid().to_string()).arg("-m").arg("unshare");
                c
            }
            None => Command::new("unshare"),
        };
        c.args(["--mount", "--propagation", propagation]).args(cmd);
        c.env("WOMBATFS_METRICS_ADDR", "127.0.0.1:0");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        Ns { child: c.stdout(std::process::Stdio::null()).stderr(log).spawn().unwrap() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `path` as this namespace sees it.
    fn path(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(path.strip_prefix("/").unwrap())
    }

    fn mounted(&self, point: &Path) -> bool {
        let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid())).unwrap_or_default();
        wombatfs::sys::parse_mountinfo(&table).iter().any(|m| m.point == point)
    }

    /// Run a command in this namespace.
    fn exec(&self, cmd: &[&str]) -> Output {
        run(Command::new("nsenter").arg("-t").arg(self.pid().to_string()).arg("-m").args(cmd))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, log: &Path, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out waiting: {what}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the kubelet does with a pod of a wombatfs sidecar and an engine (mount/sidecar.yaml),
/// with mount namespaces instead of containers: a "node" namespace holds the pod volume as an
/// rshared bind mount; the sidecar (mountPropagation: Bidirectional) mounts in its own
/// namespace of that peer group; the engine (HostToContainer) has an rslave copy and sees the
/// mount appear. The sidecar is killed and restarted (the engine sees the new mount at the
/// same path, every closed file intact); its preStop unmount leaves no mount in any namespace.
#[test]
fn a_sidecar_mount_reaches_the_engine_namespace_and_survives_a_sidecar_restart() {
    if !is_root() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    let dir = tempfile::Builder::new().prefix("wombat-pod-").tempdir().unwrap();
    let (volume, cache, log) = (dir.path().join("volume"), dir.path().join("cache"), dir.path().join("ns.log"));
    let kv = volume.join("kv");
    std::fs::create_dir_all(&kv).unwrap();
    let node = Ns::spawn(None, "private", &["sleep", "600"], &log);
    wait_for("the node namespace", &log, || std::fs::read_link(format!("/proc/{}/exe", node.pid())).is_ok_and(|e| e.ends_with("sleep")));
    let v = volume.to_str().unwrap();
    assert!(node.exec(&["mount", "--bind", v, v]).status.success());
    assert!(node.exec(&["mount", "--make-rshared", v]).status.success());
    // the engine starts first, as pods do not order containers: it sees the mount appear
    let engine = Ns::spawn(Some(&node), "slave", &["sleep", "600"], &log);
    wait_for("the engine namespace", &log, || std::fs::read_link(format!("/proc/{}/exe", engine.pid())).is_ok_and(|e| e.ends_with("sleep")));
    let sidecar_cmd = [bin(), "mount", kv.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap(), "--foreground", "-o", "allow_other"];
    let live = |ns: &Ns| ns.mounted(&kv) && answers(&ns.path(&kv));
    let mut sidecar = Ns::spawn(Some(&node), "unchanged", &sidecar_cmd, &log);
    wait_for("the mount in the engine namespace", &log, || live(&engine));
    assert!(node.mounted(&kv), "the pod volume (node namespace) holds the mount");
    assert!(!is_mounted(&kv), "nothing leaks into the host namespace");
    // the engine writes and reads blocks through its view
    let ekv = engine.path(&kv);
    std::fs::create_dir(ekv.join("vllm")).unwrap();
    let data = common::random_bytes(4 << 20, 21);
    std::fs::write(ekv.join("vllm/block-a"), &data).unwrap();
    std::fs::write(ekv.join("vllm/block-b"), b"tiny").unwrap();
    assert!(std::fs::read(ekv.join("vllm/block-a")).unwrap() == data);
    // the sidecar crashes: its mount is dead for the engine, then the restarted sidecar
    // clears it and mounts again at the same path
    sidecar.child.kill().unwrap();
    sidecar.child.wait().unwrap();
    // (names never looked up: the kernel still answers cached ones; with FUSE over io_uring
    // the queues are torn down after the process, and a request caught in that is aborted)
    let dead = |name: &str| std::fs::metadata(ekv.join(name)).err().and_then(|e| e.raw_os_error());
    let first = dead("never-looked-up");
    let dead = if first == Some(libc::ECONNABORTED) { dead("never-looked-up-either") } else { first };
    assert_eq!(dead, Some(libc::ENOTCONN), "a crashed sidecar's mount answers ENOTCONN");
    sidecar = Ns::spawn(Some(&node), "unchanged", &sidecar_cmd, &log);
    wait_for("the restarted mount in the engine namespace", &log, || live(&engine));
    assert!(std::fs::read(ekv.join("vllm/block-a")).unwrap() == data, "closed files survive the sidecar restart");
    assert_eq!(std::fs::read(ekv.join("vllm/block-b")).unwrap(), b"tiny");
    let count = |ns: &Ns| {
        let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", ns.pid())).unwrap();
        wombatfs::sys::parse_mountinfo(&table).iter().filter(|m| m.point == kv).count()
    };
    assert_eq!((count(&engine), count(&node)), (1, 1), "one mount at the path, the dead one cleared");
    // preStop: fusermount3 -u in the sidecar; the daemon exits 0 and no namespace keeps a mount
    assert!(sidecar.exec(&["fusermount3", "-u", kv.to_str().unwrap()]).status.success());
    let status = wait_child(&mut sidecar.child, Duration::from_secs(60)).expect("the sidecar did not exit after preStop");
    assert!(status.success(), "the sidecar exits cleanly: {status}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(!engine.mounted(&kv) && !node.mounted(&kv), "preStop left a mount behind");
    assert!(!is_mounted(&kv));
}

/// The daemon command lines of the container files (Dockerfile CMD, the Kubernetes manifests)
/// are ones the real command line accepts, and the manifests set the mount propagation the
/// sidecar test above reproduces.
#[test]
fn the_container_files_run_a_command_line_wombatfs_accepts() {
    use clap::Parser;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut check = |argv: Vec<String>, from: &str| {
        let cli = wombatfs::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{from}: {argv:?}: {e}"));
        assert!(matches!(cli.command, wombatfs::cli::Command::Mount(ref m) if m.foreground), "{from}: a container's daemon stays in the foreground");
        checked += 1;
    };
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let entry: Vec<String> = serde_json::from_str(docker.lines().find_map(|l| l.strip_prefix("ENTRYPOINT ")).unwrap()).unwrap();
    let cmd: Vec<String> = serde_json::from_str(docker.lines().find_map(|l| l.strip_prefix("CMD ")).unwrap()).unwrap();
    check([entry, cmd].concat(), "Dockerfile");
    for f in ["mount/sidecar.yaml", "mount/daemonset.yaml"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("command: ")) {
            let words: Vec<String> = serde_json::from_str(line).unwrap();
            // ["sh", "-c", "mkdir -p … && exec wombatfs mount …"]
            if let Some(script) = words.get(2).filter(|_| words[0] == "sh") {
                let exec = script.split("exec ").nth(1).unwrap_or_else(|| panic!("{f}: the shell must exec the daemon: {script}"));
                check(exec.split_whitespace().map(str::to_string).collect(), f);
            }
        }
        assert!(text.contains("mountPropagation: Bidirectional") && text.contains("mountPropagation: HostToContainer"), "{f}");
        assert!(text.contains(r#"command: ["fusermount3", "-u""#), "{f}: a preStop unmount");
    }
    assert_eq!(checked, 3);
}
