//! `wombatfs warm PATH... [--tier flat|page-cache] [--jobs N]`: bring every file under the
//! paths into the local tiers before an engine needs them, in parallel and within the tier's
//! bound, with a progress bar and a summary of where the bytes came from.
//!
//! Per file, `flat` sets the virtual `user.wombatfs.warm` attribute (the daemon fetches the
//! blob into the flat tier, verified, and answers when it is there: no bytes cross FUSE);
//! `page-cache` reads the file through the mount, which also fills the flat tier. A file is
//! warmed whole or not at all (the daemon adopts only complete, verified blobs), so Ctrl-C
//! stops at a file boundary: files in flight finish, no new one starts.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Arguments of `warm`.
#[derive(clap::Args, Debug)]
pub struct WarmArgs {
    /// Files or directories on a wombatfs mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Where to bring the bytes: `flat` (the local flat tier) or `page-cache` (also read
    /// through the kernel, so the first reads are memory hits).
    #[arg(long, default_value = "flat", value_parser = ["flat", "page-cache"])]
    pub tier: String,
    /// Files warmed at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: a path with a NUL byte", p.display()))
}

/// A virtual attribute's value (`None` when the file has none).
fn getxattr(p: &Path, name: &str) -> Option<String> {
    let (c, n) = (cpath(p).ok()?, CString::new(name).ok()?);
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated; the buffer is writable for its length.
    let len = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

fn setxattr(p: &Path, name: &str) -> std::io::Result<()> {
    let (c, n) = (cpath(p).map_err(std::io::Error::other)?, CString::new(name).map_err(std::io::Error::other)?);
    // SAFETY: both strings are NUL-terminated; an empty value.
    let r = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), std::ptr::null(), 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every regular file under `p` with its size (symlinks are not followed).
fn walk(p: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let md = std::fs::symlink_metadata(p).with_context(|| format!("cannot stat {}", p.display()))?;
    if md.is_file() {
        out.push((p.to_path_buf(), md.len()));
    } else if md.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p).with_context(|| format!("cannot list {}", p.display()))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            walk(&e, out)?;
        }
    }
    Ok(())
}

fn stat_of(stats: &str, key: &str) -> Option<u64> {
    stats.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn mem_available() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = t.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn human(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// Where the warmed bytes were before: tier name → (files, bytes).
#[derive(Default)]
struct Sources {
    by: Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
}

impl Sources {
    fn add(&self, tier: &str, bytes: u64) {
        let mut m = self.by.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(tier.to_string()).or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    /// Files and bytes warmed so far.
    fn total(&self) -> (u64, u64) {
        self.by.lock().unwrap_or_else(|p| p.into_inner()).values().fold((0, 0), |(f, b), e| (f + e.0, b + e.1))
    }
}

/// Run `warm`.
pub fn run(args: &WarmArgs) -> Result<()> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let mount = crate::admin::find_mount(Some(&args.paths[0]))?;
    let mut files = Vec::new();
    for p in &args.paths {
        let m = crate::admin::find_mount(Some(p))?;
        if m.point != mount.point {
            bail!("{} and {} are on different mounts: warm one mount at a time", args.paths[0].display(), p.display());
        }
        walk(p, &mut files)?;
    }
    // the bound: what the flat tier holds (and, for the page cache, the memory available)
    let stats = getxattr(&mount.point, "user.wombatfs.stats").unwrap_or_default();
    let flat_limit = stat_of(&stats, "flat_limit").unwrap_or(u64::MAX);
    let bound = if args.tier == "page-cache" { flat_limit.min(mem_available().unwrap_or(u64::MAX)) } else { flat_limit };
    let total: u64 = files.iter().map(|f| f.1).sum();
    let mut chosen = Vec::new();
    let mut sum = 0u64;
    for f in files.iter() {
        if sum + f.1 > bound {
            break;
        }
        sum += f.1;
        chosen.push(f.clone());
    }
    if chosen.len() < files.len() {
        eprintln!(
            "warm: {} files ({}) do not fit the {} tier bound of {}: warming the first {} files ({}); the rest would evict them",
            files.len(),
            human(total),
            args.tier,
            human(bound),
            chosen.len(),
            human(sum)
        );
    }
    // SAFETY: the handler only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
    let bar = progress(chosen.len() as u64, sum);
    let (next, failed) = (AtomicUsize::new(0), AtomicU64::new(0));
    let sources = Sources::default();
    let page_cache = args.tier == "page-cache";
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.jobs.min(chosen.len().max(1)) {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                while !INTERRUPTED.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((path, size)) = chosen.get(i) else { break };
                    let was = getxattr(path, "user.wombatfs.tier").unwrap_or_else(|| "unknown".into());
                    let res = if page_cache { read_all(path, &mut buf) } else { setxattr(path, "user.wombatfs.warm") };
                    match res {
                        Ok(()) => {
                            sources.add(&was, *size);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            bar.suspend(|| eprintln!("warm: {}: {e}", path.display()));
                        }
                    }
                    bar.inc(*size);
                    bar.set_message(format!("{}/{} files", sources.total().0, chosen.len()));
                }
            });
        }
        // plain progress lines when stderr is not a terminal
        if bar.is_hidden() {
            let mut last = Instant::now();
            while next.load(Ordering::SeqCst) < chosen.len() && !INTERRUPTED.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(2) {
                    last = Instant::now();
                    let (nf, nb) = sources.total();
                    eprintln!("warm: {nf}/{} files, {} of {}", chosen.len(), human(nb), human(sum));
                }
            }
        }
    });
    bar.finish_and_clear();
    let took = t0.elapsed().as_secs_f64();
    let (nf, nb) = sources.total();
    let from: Vec<String> = sources
        .by
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(tier, (n, b))| format!("{}: {n} files ({})", tier_name(tier), human(*b)))
        .collect();
    let state = if INTERRUPTED.load(Ordering::SeqCst) { "interrupted" } else { "done" };
    println!(
        "warm {state}: {nf} of {} files, {} in {took:.1} s ({}/s) into the {} tier; {}{}",
        chosen.len(),
        human(nb),
        human((nb as f64 / took.max(1e-3)) as u64),
        args.tier,
        if from.is_empty() { "nothing warmed".into() } else { from.join(", ") },
        match failed.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!("; {n} files failed"),
        }
    );
    if INTERRUPTED.load(Ordering::SeqCst) {
        std::process::exit(130);
    }
    if failed.load(Ordering::Relaxed) > 0 {
        bail!("{} files could not be warmed", failed.load(Ordering::Relaxed));
    }
    Ok(())
}

/// Where a file's bytes were, as the summary says it.
fn tier_name(t: &str) -> String {
    match t {
        "flat" => "already in the flat tier".into(),
        "foyer" => "from foyer".into(),
        "store" => "from the object store".into(),
        other => format!("from {other}"),
    }
}

fn read_all(p: &Path, buf: &mut [u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::open(p)?;
    while f.read(buf)? > 0 {}
    Ok(())
}

fn progress(files: u64, bytes: u64) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(bytes);
    let style = indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("0/{files} files"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
