//! The embedded key-value API: a Rust engine keeps KV blocks in wombatfs by `(namespace, key)`
//! without mounting it. A [`Kv`] is a node like a mount: its own cache dir and tiers, the same
//! object store, the same change journal. A key put here is the file `<namespace>/<key>` on
//! every node of the bucket, and a file written through any mount is a key here.
//!
//! ```no_run
//! let kv = wombatfs::kv::Kv::open("/nvme/wombat", Some("s3://kv-bucket/cluster1"), &["--upload", "sync"])?;
//! kv.put("llama-3-8b", "block-00af", b"...")?;
//! assert_eq!(kv.get("llama-3-8b", "block-00af")?.as_deref(), Some(&b"..."[..]));
//! // how many blocks of a prefix chain are cached, answered from memory
//! let n = kv.longest_cached_prefix("llama-3-8b", &["block-00af", "block-17c2", "block-9e01"]);
//! kv.prefetch("llama-3-8b", &["block-17c2", "block-9e01"]); // into the local tiers
//! kv.close()?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Keys are names below the namespace; a `/` in a key makes directories (as a file path
//! does). Names follow the filesystem's rules: no empty component, `.`, `..` or NUL, at most
//! 255 bytes per component. Errors are [`FsError`]s, with the errno a mount would return.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::daemon::node::Node;
use crate::fs::core::FsCore;
use crate::fs::error::{FsError, FsResult};
use crate::fs::tree::ROOT;
use crate::fs::{Caller, Kind};

/// Bytes per read and write call, as FUSE would hand them.
const IO: usize = 1 << 20;

/// A wombatfs node opened as a library.
pub struct Kv {
    node: Option<Node>,
    caller: Caller,
}

impl Kv {
    /// Open (or create) a node on `cache_dir` over `store` (`s3://BUCKET[/PREFIX]`,
    /// `file:///DIR`; `None`: the local store in the cache dir). `flags` are `wombatfs mount`'s
    /// (`--upload sync`, `--flat-size 20GiB`, `--s3-endpoint URL`, `--poll-interval-ms 500`…),
    /// defaulted and validated as for a mount. An empty cache dir on a bucket that has a tree
    /// restores it first (the seed's `restore_from_s3`), then follows the other nodes.
    pub fn open(cache_dir: impl AsRef<Path>, store: Option<&str>, flags: &[&str]) -> Result<Kv> {
        let settings = crate::cli::embedded_settings(cache_dir.as_ref(), store, flags)?;
        let node = crate::daemon::open_node(&settings)?;
        // SAFETY: geteuid/getegid cannot fail.
        let caller = unsafe { Caller { uid: libc::geteuid(), gid: libc::getegid() } };
        Ok(Kv { node: Some(node), caller })
    }

    fn core(&self) -> &Arc<FsCore> {
        self.node.as_ref().expect("open until close").core()
    }

    /// The inode of `ns/key`'s parent directory and the key's last component; directories
    /// are made on the way when `make`.
    fn parent(&self, ns: &str, key: &str, make: bool) -> FsResult<Option<(u64, Vec<u8>)>> {
        let mut parts: Vec<&str> = std::iter::once(ns).chain(key.split('/')).collect();
        let leaf = parts.pop().unwrap_or_default();
        let mut dir = ROOT;
        for part in parts {
            dir = match self.core().lookup(dir, part.as_bytes())? {
                Some(a) if a.kind == Kind::Dir => a.ino,
                Some(_) => return Err(FsError::NotDir),
                None if make => match self.core().mkdir(self.caller, dir, part.as_bytes(), 0o755, 0o022) {
                    Ok(a) => a.ino,
                    // made by another writer meanwhile
                    Err(FsError::Exists) => self.core().lookup(dir, part.as_bytes())?.ok_or(FsError::NotFound)?.ino,
                    Err(e) => return Err(e),
                },
                None => return Ok(None),
            };
        }
        Ok(Some((dir, leaf.as_bytes().to_vec())))
    }

    fn file(&self, ns: &str, key: &str) -> FsResult<Option<u64>> {
        let Some((dir, leaf)) = self.parent(ns, key, false)? else { return Ok(None) };
        Ok(self.core().lookup(dir, &leaf)?.filter(|a| a.kind == Kind::File).map(|a| a.ino))
    }

    /// Store `bytes` under `key` (replacing what was there). Returns once sealed; with
    /// `--upload sync`, once the object store has it (the close of a mount).
    pub fn put(&self, ns: &str, key: &str, bytes: &[u8]) -> FsResult<()> {
        let (dir, leaf) = self.parent(ns, key, true)?.ok_or(FsError::NotFound)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        let core = self.core();
        let fh = match core.create(self.caller, dir, &leaf, 0o644, 0o022, flags) {
            Ok((_, opened)) => opened.fh,
            Err(FsError::Exists) => core.open(core.lookup(dir, &leaf)?.ok_or(FsError::NotFound)?.ino, flags)?.fh,
            Err(e) => return Err(e),
        };
        let written = bytes.chunks(IO).enumerate().try_for_each(|(i, c)| core.write(fh, (i * IO) as u64, c).map(|_| ()));
        let flushed = written.and_then(|()| core.flush(fh));
        core.release(fh);
        flushed
    }

    /// The bytes under `key`, or `None`. Served by the nearest tier that has them.
    pub fn get(&self, ns: &str, key: &str) -> FsResult<Option<Vec<u8>>> {
        let Some(ino) = self.file(ns, key)? else { return Ok(None) };
        let core = self.core();
        let fh = core.open(ino, libc::O_RDONLY)?.fh;
        let mut out = Vec::new();
        let res = loop {
            match core.read(fh, out.len() as u64, IO as u32) {
                Ok(chunk) if chunk.is_empty() => break Ok(()),
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(e) => break Err(e),
            }
        };
        core.release(fh);
        res.map(|()| Some(out))
    }

    /// Whether `key` exists (answered from memory).
    pub fn exists(&self, ns: &str, key: &str) -> FsResult<bool> {
        Ok(self.file(ns, key)?.is_some())
    }

    /// Every key of a namespace, sorted (keys with `/` as paths).
    pub fn list(&self, ns: &str) -> FsResult<Vec<String>> {
        let Some(top) = self.core().lookup(ROOT, ns.as_bytes())?.filter(|a| a.kind == Kind::Dir) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut dirs = vec![(top.ino, String::new())];
        while let Some((ino, prefix)) = dirs.pop() {
            for e in self.core().list_dir(ino)? {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let name = format!("{prefix}{}", String::from_utf8_lossy(&e.name));
                match e.kind {
                    Kind::Dir => dirs.push((e.ino, format!("{name}/"))),
                    Kind::File => out.push(name),
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove `key`; `false` when it was not there.
    pub fn delete(&self, ns: &str, key: &str) -> FsResult<bool> {
        let Some((dir, leaf)) = self.parent(ns, key, false)? else { return Ok(false) };
        match self.core().unlink(dir, &leaf) {
            Ok(()) => Ok(true),
            Err(FsError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How many leading keys of a chain (an engine's block hashes of a token prefix) are
    /// stored: the length of the longest cached prefix. Answered from this node's tree in
    /// memory, without a request per key; keys written on other nodes count once their
    /// change reached this node (`--poll-interval-ms`).
    pub fn longest_cached_prefix(&self, ns: &str, chain: &[&str]) -> usize {
        chain.iter().take_while(|k| self.file(ns, k).ok().flatten().is_some()).count()
    }

    /// Bring these keys' blobs into the local tiers in the background (from foyer or the
    /// object store), so the engine's next `get` of the chain is a local hit. Returns how many
    /// keys exist and were scheduled; missing keys are skipped.
    pub fn prefetch(&self, ns: &str, keys: &[&str]) -> usize {
        let inos: Vec<u64> = keys.iter().filter_map(|k| self.file(ns, k).ok().flatten()).collect();
        let n = inos.len();
        let node = self.node.as_ref().expect("open until close");
        for ino in inos {
            let core = node.core().clone();
            node.runtime().spawn_blocking(move || {
                if let Err(e) = core.warm(ino) {
                    tracing::warn!(ino, error = %e, "prefetch failed");
                }
            });
        }
        n
    }

    /// Seal, drain the uploads (up to 30 s), checkpoint, publish the last changes and release
    /// the cache dir, as an unmount does.
    pub fn close(mut self) -> Result<()> {
        self.node.take().map_or(Ok(()), Node::shutdown)
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            if let Err(e) = node.shutdown() {
                tracing::error!(error = %format!("{e:#}"), "closing the wombatfs node failed");
            }
        }
    }
}
