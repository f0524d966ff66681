//! Settings: every knob of a mount, with defaults and validation. Values come from the
//! command line, optionally layered over a TOML file (`--config`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::codec::Compression;

/// Every default of a mount, in one place (docs/configuration.md lists them).
pub mod defaults {
    /// kernel entry/attribute cache lifetime
    pub const ATTR_TTL_SECS: u64 = 3600;
    /// FUSE worker threads
    pub const THREADS: usize = 4;
    /// largest file (the filesystem core's own default)
    pub const MAX_FILE_SIZE: u64 = crate::fs::core::DEFAULT_MAX_FILE_SIZE;
    /// compression of enveloped objects
    pub const COMPRESSION: &str = "auto";
    /// upload mode
    pub const UPLOAD: &str = "async";
    /// seconds between tree snapshots of a changed tree
    pub const SNAPSHOT_INTERVAL_SECS: u64 = 300;
    /// milliseconds between polls of the other nodes' change journals
    pub const POLL_INTERVAL_MS: u64 = 2000;
    /// longest poll interval while no other node publishes anything
    pub const POLL_IDLE_MAX_MS: u64 = 10_000;
    /// kernel readahead of the mount
    pub const READAHEAD_KB: u32 = 1024;
    /// S3 region
    pub const S3_REGION: &str = "us-east-1";
    /// the longest wait for one object-store request, a stalled cold read or a `sync` close
    pub const STORE_TIMEOUT_SECS: u64 = 30;
    /// where a mount serves `/metrics` (loopback only)
    pub const METRICS_ADDR: &str = "127.0.0.1:9581";
    /// foyer RAM
    pub const FOYER_MEMORY: u64 = 64 << 20;
    /// seconds a blob stays unreferenced before `wombatfs gc` deletes it
    pub const GC_GRACE_SECS: u64 = 3600;
    /// seconds without a feed marker after which `wombatfs gc` treats a node as gone (7 days)
    pub const GC_NODE_LEASE_SECS: u64 = 7 * 24 * 3600;

    /// The flat tier's bound on a cache filesystem of `capacity` bytes: 40 %, 256 MiB … 16 GiB.
    pub fn flat_size(capacity: u64) -> u64 {
        (capacity / 10 * 4).clamp(256 << 20, 16 << 30)
    }

    /// foyer's disk on a filesystem of `capacity` bytes: 20 %, 64 MiB … 8 GiB.
    pub fn foyer_disk(capacity: u64) -> u64 {
        (capacity / 5).clamp(64 << 20, 8 << 30)
    }
}

/// A setting that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("config file {path}: {msg}")]
    File {
        /// the file
        path: PathBuf,
        /// what is wrong
        msg: String,
    },
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Where blobs are made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory with the object layout (`file:///path`).
    Local(PathBuf),
    /// An S3 bucket and key prefix (`s3://bucket[/prefix]`).
    S3 {
        /// bucket name
        bucket: String,
        /// key prefix, possibly empty
        prefix: String,
    },
}

impl StoreUrl {
    /// Parse `file:///abs/path`. Unknown schemes are refused with the list of known ones.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        if let Some(p) = s.strip_prefix("file://") {
            let p = Path::new(p);
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!("store URL {s:?}: the path must be absolute (file:///dir)")));
            }
            return Ok(StoreUrl::Local(p.to_path_buf()));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !valid {
                return Err(ConfigError::Invalid(format!("store URL {s:?}: {bucket:?} is not a valid S3 bucket name")));
            }
            return Ok(StoreUrl::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
        }
        let scheme = s.split("://").next().filter(|_| s.contains("://")).unwrap_or(s);
        Err(ConfigError::Invalid(format!(
            "unknown store scheme {scheme:?} in {s:?}: use file:///absolute/path or s3://bucket[/prefix]"
        )))
    }
}

/// Optional settings from a TOML file; every field is documented in `docs/configuration.md`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// cache directory
    pub cache_dir: Option<PathBuf>,
    /// object store URL
    pub store: Option<String>,
    /// kernel entry/attribute cache TTL in seconds
    pub attr_ttl_secs: Option<u64>,
    /// FUSE worker threads
    pub threads: Option<usize>,
    /// largest file in bytes
    pub max_file_size: Option<u64>,
    /// `auto`, `none` or `zstd[:LEVEL]`, for envelopes the store writes
    pub compression: Option<String>,
    /// flat tier bound (`256MiB`, `10GiB`, bytes)
    pub flat_size: Option<String>,
    /// foyer RAM capacity
    pub foyer_memory: Option<String>,
    /// foyer disk capacity
    pub foyer_disk: Option<String>,
    /// foyer disk directory
    pub foyer_dir: Option<PathBuf>,
    /// per-namespace byte budgets: namespace name → size
    pub budgets: Option<std::collections::BTreeMap<String, String>>,
    /// `async` or `sync`
    pub upload: Option<String>,
    /// seconds between tree snapshots (0: only at unmount)
    pub snapshot_interval_secs: Option<u64>,
    /// milliseconds between polls of the other nodes' journals (0: never)
    pub poll_interval_ms: Option<u64>,
    /// longest interval between polls while the other nodes publish nothing
    pub poll_idle_max_ms: Option<u64>,
    /// kernel readahead of the mount in KiB (0: kernel default)
    pub readahead_kb: Option<u32>,
    /// FUSE mount options (as `-o`)
    pub options: Option<Vec<String>>,
    /// S3 endpoint of a non-AWS service
    pub s3_endpoint: Option<String>,
    /// S3 region
    pub s3_region: Option<String>,
    /// path-style S3 addressing
    pub s3_path_style: Option<bool>,
    /// seconds before a wait for the object store fails with EIO
    pub store_timeout_secs: Option<u64>,
    /// `HOST:PORT` of the Prometheus endpoint, or `off`
    pub metrics_addr: Option<String>,
    /// `on` (local reads), `read-write` (also writers of new files) or `off`: FUSE passthrough
    pub passthrough: Option<String>,
    /// `dev` or `uring`: how FUSE requests reach the daemon
    pub fuse_transport: Option<String>,
}

impl FileSettings {
    /// Read a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File { path: path.into(), msg: e.to_string() })?;
        toml::from_str(&text).map_err(|e| ConfigError::File { path: path.into(), msg: e.to_string() })
    }
}

/// Validated settings of one mount.
#[derive(Clone, Debug)]
pub struct Settings {
    /// where the mount appears
    pub mountpoint: PathBuf,
    /// local state: flat tier, staging, index, lock, log
    pub cache_dir: PathBuf,
    /// durable store
    pub store: StoreUrl,
    /// stay attached to the terminal
    pub foreground: bool,
    /// extra FUSE mount options (`-o`)
    pub mount_options: Vec<String>,
    /// kernel entry/attr cache lifetime
    pub attr_ttl: Duration,
    /// FUSE worker threads
    pub threads: usize,
    /// largest file (EFBIG beyond)
    pub max_file_size: u64,
    /// compression of enveloped objects
    pub compression: Compression,
    /// seals wait for the object store (`--upload sync`)
    pub sync_uploads: bool,
    /// how often a changed tree is snapshotted into a remote store (zero: only at unmount)
    pub snapshot_interval: Duration,
    /// how often other nodes' change journals are polled (zero: never)
    pub poll_interval: Duration,
    /// the poll interval doubles while nothing moves, up to this
    pub poll_idle_max: Duration,
    /// kernel readahead of the mount in KiB (zero: kernel default)
    pub readahead_kb: u32,
    /// the longest wait for the object store before EIO
    pub store_timeout: Duration,
    /// local tier bounds and per-namespace budgets
    pub tiers: TierSettings,
    /// how to reach S3 when the store is `s3://`
    pub s3: crate::tiers::s3::S3Config,
    /// where `/metrics` is served (`None`: off); port 0 picks a free port
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// FUSE passthrough (where the kernel allows it): for read-only opens of local blobs, and
    /// with `ReadWrite` for writers of new or truncated files
    pub passthrough: crate::fs::passthrough::PassthroughMode,
    /// FUSE requests over io_uring queues where the kernel allows it (`--fuse-transport uring`)
    pub uring: bool,
}

/// Parse `--metrics-addr`: `HOST:PORT`, or `off`.
pub fn parse_metrics_addr(v: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    if v == "off" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| ConfigError::Invalid(format!("metrics_addr = {v:?}: use IP:PORT (e.g. {}) or off", defaults::METRICS_ADDR)))
}

/// Bounds of the local tiers (see docs/configuration.md). `None` sizes are derived from the
/// cache filesystem at mount: safe on a small machine.
#[derive(Clone, Debug, Default)]
pub struct TierSettings {
    /// flat tier bound in bytes (default: 40 % of the cache filesystem, at most 16 GiB)
    pub flat_size: Option<u64>,
    /// foyer RAM in bytes (default 64 MiB)
    pub foyer_memory: Option<u64>,
    /// foyer disk in bytes (default: 20 % of the foyer dir's filesystem, at most 8 GiB; 0: no disk)
    pub foyer_disk: Option<u64>,
    /// foyer disk directory (default `<cache-dir>/foyer`)
    pub foyer_dir: PathBuf,
    /// budgets set in the config file: namespace → bytes
    pub budgets: std::collections::BTreeMap<String, u64>,
}

impl TierSettings {
    /// Resolve flags over the config file.
    pub fn resolve(flat: Option<&str>, mem: Option<&str>, disk: Option<&str>, dir: Option<PathBuf>, file: &FileSettings, cache_dir: &Path) -> Result<Self, ConfigError> {
        let size = |flag: Option<&str>, key: &Option<String>| -> Result<Option<u64>, ConfigError> {
            flag.or(key.as_deref()).map(parse_size).transpose()
        };
        let mut budgets = std::collections::BTreeMap::new();
        for (ns, v) in file.budgets.iter().flatten() {
            crate::name::check(ns.as_bytes()).map_err(|_| ConfigError::Invalid(format!("budget for {ns:?}: not a namespace name")))?;
            budgets.insert(ns.clone(), parse_size(v)?);
        }
        let t = TierSettings {
            flat_size: size(flat, &file.flat_size)?,
            foyer_memory: size(mem, &file.foyer_memory)?,
            foyer_disk: size(disk, &file.foyer_disk)?,
            foyer_dir: dir.or(file.foyer_dir.clone()).unwrap_or_else(|| cache_dir.join("foyer")),
            budgets,
        };
        if t.flat_size.is_some_and(|v| v < 16 << 20) {
            return Err(ConfigError::Invalid("flat_size must be at least 16MiB".into()));
        }
        if t.foyer_memory.is_some_and(|v| v < 4 << 20) {
            return Err(ConfigError::Invalid("foyer_memory must be at least 4MiB".into()));
        }
        if t.foyer_disk.is_some_and(|v| v != 0 && v < 64 << 20) {
            return Err(ConfigError::Invalid("foyer_disk must be 0 (no disk) or at least 64MiB".into()));
        }
        Ok(t)
    }
}

/// Parse a size flag or config value (see [`crate::size::parse`]).
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    crate::size::parse(s).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Parse `auto`, `none`, `zstd` or `zstd:LEVEL`.
pub fn parse_compression(s: &str) -> Result<Compression, ConfigError> {
    match s {
        "auto" => Ok(Compression::Auto(1)),
        "none" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd(3)),
        _ => match s.strip_prefix("zstd:").and_then(|l| l.parse::<i32>().ok()) {
            Some(l) if (1..=22).contains(&l) => Ok(Compression::Zstd(l)),
            _ => Err(ConfigError::Invalid(format!("compression {s:?}: use auto, none, zstd or zstd:1..22"))),
        },
    }
}

impl Settings {
    /// Check values that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.threads == 0 || self.threads > 256 {
            return Err(ConfigError::Invalid(format!("threads = {}: use 1..=256", self.threads)));
        }
        if self.store_timeout.is_zero() {
            return Err(ConfigError::Invalid("store_timeout must be at least 1 second".into()));
        }
        if self.max_file_size == 0 {
            return Err(ConfigError::Invalid("max_file_size must be > 0".into()));
        }
        if !self.cache_dir.is_absolute() {
            return Err(ConfigError::Invalid(format!("cache dir {} must be an absolute path", self.cache_dir.display())));
        }
        if self.cache_dir.starts_with(&self.mountpoint) {
            return Err(ConfigError::Invalid("the cache dir cannot be inside the mountpoint".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(StoreUrl::parse("file:///x/y").unwrap(), StoreUrl::Local("/x/y".into()));
        assert!(StoreUrl::parse("file://rel").unwrap_err().to_string().contains("absolute"));
        assert!(StoreUrl::parse("gopher://h/x").unwrap_err().to_string().contains("\"gopher\""));
        assert_eq!(
            StoreUrl::parse("s3://kv-cache/prod/node1/").unwrap(),
            StoreUrl::S3 { bucket: "kv-cache".into(), prefix: "prod/node1".into() }
        );
        assert_eq!(StoreUrl::parse("s3://kv-cache").unwrap(), StoreUrl::S3 { bucket: "kv-cache".into(), prefix: String::new() });
        assert!(StoreUrl::parse("s3://Bad_Bucket/x").is_err());
    }

    #[test]
    fn compression_values() {
        assert_eq!(parse_compression("zstd:5").unwrap(), Compression::Zstd(5));
        assert!(parse_compression("zstd:99").is_err());
        assert!(parse_compression("lz4").is_err());
    }

    #[test]
    fn file_settings_reject_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "threads = 8\nbogus = 1\n").unwrap();
        assert!(FileSettings::load(&p).unwrap_err().to_string().contains("bogus"));
        std::fs::write(&p, "threads = 8\nstore = \"file:///s\"\n").unwrap();
        assert_eq!(FileSettings::load(&p).unwrap().threads, Some(8));
        std::fs::write(&p, "flat_size = \"2GiB\"\n[budgets]\nllama = \"10GiB\"\n").unwrap();
        let f = FileSettings::load(&p).unwrap();
        let t = TierSettings::resolve(None, None, None, None, &f, Path::new("/c")).unwrap();
        assert_eq!((t.flat_size, t.budgets.get("llama").copied()), (Some(2 << 30), Some(10 << 30)));
        assert_eq!(t.foyer_dir, Path::new("/c/foyer"));
        let t = TierSettings::resolve(Some("64MiB"), None, None, None, &f, Path::new("/c")).unwrap();
        assert_eq!(t.flat_size, Some(64 << 20), "the flag wins over the file");
    }
}
