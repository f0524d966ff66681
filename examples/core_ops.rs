//! What the daemon itself spends on a small-file create, without FUSE: the core's handlers
//! (`lookup_for_kernel`, `create`, `write`, `flush`, `release`, as a FUSE worker calls them)
//! timed one by one over
//! N files of 4 KiB, beside a native create+write+close loop in a directory of the same
//! filesystem. The difference between a mount's per-file time and this is the transport.
//!
//! ```sh
//! cargo run --release --example core_ops -- DIR [N]    # DIR on the filesystem to measure
//! ```
//!
//! Prints `native <µs> us/file` and `core <µs> us/file` on stdout, the per-handler split on
//! stderr. The handlers run in the order the kernel sends them for `open(O_CREAT|O_EXCL)`,
//! `write`, `close`: LOOKUP (a miss), CREATE, WRITE, FLUSH (the seal), RELEASE.

use std::io::Write;
use std::time::{Duration, Instant};

use wombatfs::fs::Caller;

const ROOT: u64 = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).ok_or("usage: core_ops DIR [N]")?);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3000);
    let work = tempfile::Builder::new().prefix("core-ops-").tempdir_in(&dir)?;
    let mut data: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();

    // native: create, one write, close
    let native = work.path().join("native");
    std::fs::create_dir(&native)?;
    let t0 = Instant::now();
    for i in 0..n {
        data[..8].copy_from_slice(&(i as u64).to_le_bytes()); // distinct blocks, as below
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(native.join(format!("f{i}")))?;
        f.write_all(&data)?;
    }
    let native_us = t0.elapsed().as_secs_f64() * 1e6 / n as f64;

    // the core on a cache dir beside it, opened as a mount opens it, with the embedded
    // default (local object store)
    let node = wombatfs::daemon::open_node(&wombatfs::cli::embedded_settings(&work.path().join("cache"), None, &[])?)?;
    let core = node.core().clone();
    let caller = Caller { uid: 0, gid: 0 };
    let ns = core.mkdir(caller, ROOT, b"ns", 0o755, 0)?.ino;

    let mut spent = [Duration::ZERO; 5];
    let names = ["lookup", "create", "write", "flush", "release"];
    // a warm-up round of n/4 files, not counted, then the timed round
    for (round, count) in [(0, n / 4), (1, n)] {
        let t_all = Instant::now();
        for i in 0..count {
            let name = format!("r{round}-f{i}");
            // distinct blocks (no dedup), distinct from the native loop's too
            data[..8].copy_from_slice(&((round * n + i) as u64 | 1 << 63).to_le_bytes());
            let mut d = [Duration::ZERO; 5];
            let t = Instant::now();
            assert!(core.lookup_for_kernel(ns, name.as_bytes())?.is_none());
            d[0] = t.elapsed();
            let t = Instant::now();
            let (_, opened) = core.create(caller, ns, name.as_bytes(), 0o644, 0o022, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
            d[1] = t.elapsed();
            let t = Instant::now();
            core.write(opened.fh, 0, &data)?;
            d[2] = t.elapsed();
            let t = Instant::now();
            core.flush(opened.fh)?;
            d[3] = t.elapsed();
            let t = Instant::now();
            core.release(opened.fh);
            d[4] = t.elapsed();
            if round == 1 {
                spent.iter_mut().zip(d).for_each(|(s, d)| *s += d);
            }
        }
        if round == 1 {
            let total = t_all.elapsed().as_secs_f64() * 1e6 / n as f64;
            for (k, name) in names.iter().enumerate() {
                eprintln!("  {name:8} {:6.1} us", spent[k].as_secs_f64() * 1e6 / n as f64);
            }
            eprintln!("core/native: {:.2}", total / native_us);
            // `<metric> <value> <unit>`, as examples/fsbench prints, for scripts/bench
            println!("native {native_us:.2} us/file");
            println!("core {total:.2} us/file");
        }
    }
    drop(core);
    node.shutdown()?;
    Ok(())
}
