//! An engine embedding wombatfs by `(namespace, key)` instead of mounting it: store the KV
//! blocks of a prompt as a chain of block hashes, then ask how much of a new prompt's chain is
//! cached, prefetch the rest of the chain it shares, and load it.
//!
//!     cargo run --release --example kv -- /tmp/kv-demo                       # local store
//!     cargo run --release --example kv -- /tmp/kv-demo s3://kv-bucket/demo \
//!         --s3-endpoint http://127.0.0.1:8333 --s3-path-style                # a shared bucket
//!
//! Every key put here is the file `<namespace>/<key>` on each mount of the same store.

use wombatfs::kv::Kv;

fn block_hash(parent: &str, tokens: &[u32]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(parent.as_bytes());
    tokens.iter().for_each(|t| {
        h.update(&t.to_le_bytes());
    });
    h.finalize().to_hex()[..32].to_string()
}

/// The chain of block hashes of a token sequence, 16 tokens per block (as vLLM hashes prefixes).
fn chain(tokens: &[u32]) -> Vec<String> {
    let mut parent = String::new();
    tokens
        .chunks_exact(16)
        .map(|b| {
            parent = block_hash(&parent, b);
            parent.clone()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cache = args.first().cloned().unwrap_or_else(|| std::env::temp_dir().join("wombatfs-kv-example").display().to_string());
    let store = args.get(1).map(String::as_str);
    let flags: Vec<&str> = args.iter().skip(2).map(String::as_str).chain(["--metrics-addr", "off"]).collect();
    let kv = Kv::open(&cache, store, &flags)?;
    let ns = "llama-3-8b";
    let prompt: Vec<u32> = (0..16 * 8).collect();
    for (i, key) in chain(&prompt).iter().enumerate() {
        // a block's K and V tensors for every layer; here 256 KiB of stand-in bytes
        kv.put(ns, key, &vec![i as u8; 256 << 10])?;
    }
    // a new prompt sharing the first 5 blocks
    let mut next = prompt[..16 * 5].to_vec();
    next.extend(1000..1000 + 16 * 3);
    let keys = chain(&next);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let hit = kv.longest_cached_prefix(ns, &keys);
    println!("{hit} of {} blocks of the new prompt are cached", keys.len());
    kv.prefetch(ns, &keys[..hit]);
    let bytes: usize = keys[..hit].iter().map(|k| kv.get(ns, k).map(|b| b.map_or(0, |b| b.len()))).sum::<Result<usize, _>>()?;
    println!("loaded {bytes} bytes; the namespace holds {} keys", kv.list(ns)?.len());
    kv.close()
}
