//! Micro-benchmarks of the file operations KV engines perform, run against any directory
//! (a wombatfs mount or a native directory on the same disk) by `scripts/bench`.
//!
//! Usage: `fsbench <write4m|small|stat|statmiss|firstmiss|seqread|mkfiles|readdir|vllmstore|vllmlookup|vllmload> PATH [N]`; prints
//! `<metric> <value> <unit>`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: fsbench <write4m|small|stat|statmiss|firstmiss|seqread|mkfiles|readdir|vllmstore|vllmlookup|vllmload> PATH [N]");
        std::process::exit(2);
    }
    let (cmd, path) = (args[1].as_str(), Path::new(&args[2]));
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    match cmd {
        "write4m" => {
            let block: Vec<u8> = (0..4 << 20).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
            fs::create_dir_all(path).unwrap();
            let t = Instant::now();
            for i in 0..n {
                let mut b = block.clone();
                b[..8].copy_from_slice(&(i as u64).to_le_bytes()); // distinct blocks: no dedup
                let mut f = File::create(path.join(format!("b{i:06}.bin"))).unwrap();
                f.write_all(&b).unwrap();
            }
            let s = t.elapsed().as_secs_f64();
            println!("write4m {:.1} MiB/s", (n * 4) as f64 / s);
        }
        "small" => {
            fs::create_dir_all(path).unwrap();
            let mut data = vec![7u8; 4096];
            let t = Instant::now();
            for i in 0..n {
                data[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let mut f = File::create(path.join(format!("s{i:07}"))).unwrap();
                f.write_all(&data).unwrap();
            }
            println!("small {:.2} us/file", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        "stat" | "statmiss" => {
            let names: Vec<_> = (0..n).map(|i| path.join(format!("{}{i:07}", if cmd == "stat" { "s" } else { "missing-" }))).collect();
            for p in &names {
                let _ = fs::metadata(p); // first touch: fills kernel caches, like a burst of access()
            }
            let rounds = 5;
            let t = Instant::now();
            for _ in 0..rounds {
                for p in &names {
                    let r = fs::metadata(p);
                    assert_eq!(r.is_ok(), cmd == "stat");
                }
            }
            println!("{cmd} {:.0} ns/op", t.elapsed().as_secs_f64() * 1e9 / (n * rounds) as f64);
        }
        "seqread" => {
            let mut f = File::open(path).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let t = Instant::now();
            let mut total = 0u64;
            loop {
                let k = f.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                total += k as u64;
            }
            println!("seqread {:.1} MiB/s", total as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64());
        }
        "mkfiles" => {
            fs::create_dir_all(path).unwrap();
            for i in 0..n {
                File::create(path.join(format!("entry-{i:07}.bin"))).unwrap();
            }
            println!("mkfiles {n} files");
        }
        "vllmstore" => {
            // vLLM's file tier storing blocks: a temp file opened
            // O_CREAT|O_EXCL|O_WRONLY|O_TRUNC|O_DIRECT, one write of the block from an aligned
            // buffer, close, rename into <root>/<3 hex>/<2 hex>/<hash>.bin; N blocks of 16 MiB
            use std::os::unix::fs::OpenOptionsExt;
            let mut raw = vec![0u8; (16 << 20) + 4096];
            let off = raw.as_ptr().align_offset(4096);
            for (i, b) in raw[off..].iter_mut().enumerate() {
                *b = ((i as u32).wrapping_mul(2654435761) >> 24) as u8;
            }
            let t = Instant::now();
            for i in 0..n {
                let block = &mut raw[off..off + (16 << 20)];
                block[..8].copy_from_slice(&(i as u64).to_le_bytes()); // distinct blocks: no dedup
                let final_path = vllm_block_path(path, i as u64);
                fs::create_dir_all(final_path.parent().unwrap()).unwrap();
                let tmp = final_path.with_extension(format!("tmp.{}", std::process::id()));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .truncate(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&tmp)
                    .unwrap();
                f.write_all(block).unwrap();
                drop(f);
                fs::rename(&tmp, &final_path).unwrap();
            }
            println!("vllmstore {:.1} MiB/s", (n * 16) as f64 / t.elapsed().as_secs_f64());
        }
        "vllmlookup" => {
            // vLLM's lookup: a burst of 4096 access(F_OK), alternately one of the N stored
            // blocks and a name never stored
            let stored = n as u64;
            let n: usize = 4096;
            let names: Vec<std::ffi::CString> = (0..n as u64)
                .map(|i| {
                    let p = vllm_block_path(path, if i % 2 == 0 { (i / 2) % stored } else { 1_000_000 + i });
                    std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap()
                })
                .collect();
            let t = Instant::now();
            let mut hits = 0;
            for c in &names {
                // SAFETY: a valid C string.
                if unsafe { libc::access(c.as_ptr(), libc::F_OK) } == 0 {
                    hits += 1;
                }
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            assert_eq!(hits, n.div_ceil(2), "half of the names are stored blocks");
            println!("vllmlookup {us:.2} us/op");
        }
        "firstmiss" => {
            // first-time misses: access(F_OK) of N distinct names never asked for before, so
            // each one is a lookup the filesystem must answer (no negative entry cached yet)
            let tag = std::process::id();
            let names: Vec<std::ffi::CString> =
                (0..n).map(|i| std::ffi::CString::new(path.join(format!("never-{tag}-{i:07}")).into_os_string().into_encoded_bytes()).unwrap()).collect();
            let t = Instant::now();
            for c in &names {
                // SAFETY: a valid C string.
                assert_ne!(unsafe { libc::access(c.as_ptr(), libc::F_OK) }, 0, "the name does not exist");
            }
            println!("firstmiss {:.2} us/op", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        "vllmload" => {
            // vLLM's file tier loading blocks: every file of the directory opened
            // O_RDONLY|O_DIRECT and read by preadv into aligned 2 MiB buffers, 4 threads
            use std::os::unix::fs::{FileExt, OpenOptionsExt};
            let mut files = Vec::new();
            walk(path, &mut files);
            files.sort();
            let next = std::sync::atomic::AtomicUsize::new(0);
            let total = std::sync::atomic::AtomicU64::new(0);
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        let mut raw = vec![0u8; (2 << 20) + 4096];
                        let off = raw.as_ptr().align_offset(4096);
                        let buf = &mut raw[off..off + (2 << 20)];
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(p) = files.get(i) else { break };
                            let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(p).unwrap();
                            let mut pos = 0u64;
                            loop {
                                let k = f.read_at(buf, pos).unwrap();
                                if k == 0 {
                                    break;
                                }
                                pos += k as u64;
                            }
                            total.fetch_add(pos, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
            });
            let bytes = total.load(std::sync::atomic::Ordering::Relaxed) as f64;
            println!("vllmload {:.1} MiB/s", bytes / (1 << 20) as f64 / t.elapsed().as_secs_f64());
        }
        _ => {
            eprintln!("unknown benchmark {cmd}");
            std::process::exit(2);
        }
    }
}

/// Every regular file under `dir`.
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// vLLM's block file layout: `<root>/<3 hex>/<2 hex>/<hash>.bin`.
fn vllm_block_path(root: &Path, i: u64) -> std::path::PathBuf {
    let h = format!("{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i ^ 0xD1B5_4A32_D192_ED03);
    root.join(&h[..3]).join(&h[3..5]).join(format!("{h}.bin"))
}
