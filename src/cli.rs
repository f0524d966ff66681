//! Command line: `wombatfs mount <MOUNTPOINT> [--cache-dir DIR] [--store URL] [--foreground] [-o OPT,...]`
//! and `wombatfs gc --store s3://BUCKET[/PREFIX] [--grace SECS] [--dry-run]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::fs::passthrough::PassthroughMode;
use crate::config::{defaults, parse_compression, parse_metrics_addr, FileSettings, Settings, StoreUrl};

/// wombatfs: a tiered, content-addressed, restart-proof FUSE filesystem for KV caches.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (e.g. `info`, `wombatfs=debug`).
    #[arg(long, global = true, env = "WOMBATFS_LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text`, or `json` (one object per line, for log shippers).
    #[arg(long, global = true, env = "WOMBATFS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a wombatfs tree.
    Mount(Box<MountArgs>),
    /// Delete blobs no node's names refer to any more from a shared bucket, once they have
    /// stayed unreferenced for the grace period (run it periodically, e.g. from cron).
    Gc(GcArgs),
    /// Show a mount's activity live: ops, bytes and hit ratio per tier, object-store requests
    /// and latency, upload queue, evictions (from its /metrics).
    Stats(crate::admin::stats::StatsArgs),
    /// Bring files into the local tiers ahead of use, with a progress bar.
    Warm(crate::admin::warm::WarmArgs),
}

/// How to reach an `s3://` store (shared by the subcommands).
#[derive(clap::Args, Debug, Clone)]
pub struct S3Args {
    /// S3 endpoint URL for non-AWS services (MinIO, Ceph RGW, R2, SeaweedFS…).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: us-east-1].
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing (endpoint/bucket/key).
    #[arg(long)]
    pub s3_path_style: bool,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide = true)]
    aws_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide = true, hide_env_values = true)]
    aws_secret_access_key: Option<String>,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide = true, hide_env_values = true)]
    aws_session_token: Option<String>,
    #[arg(long, env = "AWS_PROFILE", hide = true)]
    aws_profile: Option<String>,
}

impl S3Args {
    /// The S3 configuration (bucket and prefix come from the store URL); flags win over
    /// `file`'s keys.
    pub fn config(&self, compression: crate::codec::Compression, file: &FileSettings) -> crate::tiers::s3::S3Config {
        crate::tiers::s3::S3Config {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: self.s3_endpoint.clone().or(file.s3_endpoint.clone()),
            region: self.s3_region.clone().or(file.s3_region.clone()).unwrap_or_else(|| defaults::S3_REGION.into()),
            path_style: self.s3_path_style || file.s3_path_style.unwrap_or(false),
            access_key: self.aws_access_key_id.clone(),
            secret_key: self.aws_secret_access_key.clone(),
            session_token: self.aws_session_token.clone(),
            profile: self.aws_profile.clone(),
            compression: Some(compression),
            request_timeout: None,
        }
    }
}

/// Arguments of `gc`.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// The shared object store (`s3://BUCKET[/PREFIX]`).
    #[arg(long)]
    pub store: String,
    /// Seconds a blob must stay unreferenced (across runs) before it is deleted.
    #[arg(long, default_value_t = defaults::GC_GRACE_SECS)]
    pub grace: u64,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds without a change-feed marker from a node (live nodes write one at least every
    /// 5 minutes), measured against the bucket's newest marker, after which the collector
    /// treats it as gone.
    #[arg(long, default_value_t = defaults::GC_NODE_LEASE_SECS)]
    pub node_lease: u64,
    /// Treat this node id as gone from now on (it left for good); repeatable. A node on its
    /// old cache dir refuses to start afterwards.
    #[arg(long = "forget-node", value_name = "ID")]
    pub forget_nodes: Vec<String>,
    /// How to reach S3.
    #[command(flatten)]
    pub s3: S3Args,
}

/// Arguments of `mount`.
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Directory to mount on (must exist).
    pub mountpoint: PathBuf,
    /// Local cache dir [default: /var/lib/wombatfs as root, $XDG_CACHE_HOME/wombatfs otherwise].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Object store URL [default: file://<cache-dir>/objects].
    #[arg(long)]
    pub store: Option<String>,
    /// Stay in the foreground; exit 0 after an unmount.
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// FUSE mount options, comma separated (allow_other, allow_root, ro, …).
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// TOML file with settings; command-line flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kernel entry/attribute cache TTL in seconds [default: 3600].
    #[arg(long)]
    pub attr_ttl: Option<u64>,
    /// FUSE worker threads [default: 4].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compression of enveloped objects: auto, none, zstd[:LEVEL] [default: auto].
    #[arg(long)]
    pub compression: Option<String>,
    /// Upload mode: `async` (close returns after the local seal; a persisted queue uploads)
    /// or `sync` (close and fsync return after the object store acknowledged) [default: async].
    #[arg(long, value_parser = ["async", "sync"])]
    pub upload: Option<String>,
    /// Seconds between tree snapshots in a remote store when the tree changed (0: only at
    /// unmount). A node with an empty cache dir restores the newest snapshot [default: 300].
    #[arg(long)]
    pub snapshot_interval: Option<u64>,
    /// Milliseconds between polls of the other nodes' changes in a shared bucket (0: do not
    /// follow other nodes). While they publish, their changes show up here within this plus
    /// their publication delay (≈ 0.1–0.4 s after their upload) [default: 2000].
    #[arg(long)]
    pub poll_interval_ms: Option<u64>,
    /// While no other node publishes anything, the poll interval doubles up to this many
    /// milliseconds (an idle fleet's requests fall towards zero); the first change seen
    /// brings it back [default: 10000].
    #[arg(long)]
    pub poll_idle_max_ms: Option<u64>,
    /// Flat tier bound, e.g. 10GiB [default: 40 % of the cache filesystem, at most 16 GiB].
    #[arg(long)]
    pub flat_size: Option<String>,
    /// foyer RAM tier capacity [default: 64MiB]; used with a remote store.
    #[arg(long)]
    pub foyer_memory: Option<String>,
    /// foyer SSD tier capacity [default: 20 % of its filesystem, at most 8 GiB; 0: none].
    #[arg(long)]
    pub foyer_disk: Option<String>,
    /// foyer SSD tier directory [default: <cache-dir>/foyer].
    #[arg(long)]
    pub foyer_dir: Option<PathBuf>,
    /// Seconds an object-store request, a cold read without progress or a `sync` close waits
    /// before it fails with EIO [default: 30].
    #[arg(long)]
    pub store_timeout: Option<u64>,
    /// Kernel readahead for the mount in KiB (0: kernel default, 128 KiB). Needs root
    /// [default: 1024].
    #[arg(long)]
    pub readahead_kb: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR/metrics; `off` to disable; port 0 picks a
    /// free port (`wombatfs stats` finds it) [default: 127.0.0.1:9581].
    #[arg(long, env = "WOMBATFS_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// FUSE passthrough: `on`: read-only opens of files whose blob is in the flat tier are
    /// served by the kernel from the flat file (needs root and Linux >= 6.9; falls back by
    /// itself); `read-write`: writers of new or truncated files also write their staging file
    /// through the kernel (Linux >= 6.13; a seal then snapshots the file, which pays only
    /// where the cache dir's filesystem reflinks: see docs/benchmarks.md); `off` [default: on].
    #[arg(long, value_parser = ["on", "read-write", "off"])]
    pub passthrough: Option<String>,
    /// How FUSE requests reach the daemon: `dev` (`read`/`writev` on /dev/fuse), or `uring`:
    /// FUSE over io_uring, per-CPU queues that cut a request's round trip (Linux >= 6.14 with
    /// `/sys/module/fuse/parameters/enable_uring` set; falls back to `dev` by itself and logs
    /// why) [default: dev].
    #[arg(long, env = "WOMBATFS_FUSE_TRANSPORT", value_parser = ["dev", "uring"])]
    pub fuse_transport: Option<String>,
    /// How to reach S3.
    #[command(flatten)]
    pub s3: S3Args,
    #[arg(long, env = "XDG_CACHE_HOME", hide = true)]
    xdg_cache_home: Option<PathBuf>,
    #[arg(long, env = "HOME", hide = true)]
    home: Option<PathBuf>,
}

impl MountArgs {
    /// Resolve flags, file and defaults into validated settings.
    pub fn settings(&self) -> Result<Settings> {
        let file = match &self.config {
            Some(p) => FileSettings::load(p)?,
            None => FileSettings::default(),
        };
        let cache_dir = match self.cache_dir.clone().or(file.cache_dir.clone()) {
            Some(d) => d,
            None => default_cache_dir(self.xdg_cache_home.as_deref(), self.home.as_deref())?,
        };
        let cache_dir = absolute(&cache_dir)?;
        let tiers = crate::config::TierSettings::resolve(
            self.flat_size.as_deref(),
            self.foyer_memory.as_deref(),
            self.foyer_disk.as_deref(),
            self.foyer_dir.clone().map(|d| absolute(&d)).transpose()?,
            &file,
            &cache_dir,
        )?;
        let store = match self.store.clone().or(file.store.clone()) {
            Some(s) => StoreUrl::parse(&s)?,
            None => StoreUrl::Local(cache_dir.join("objects")),
        };
        let compression = parse_compression(self.compression.as_deref().or(file.compression.as_deref()).unwrap_or(defaults::COMPRESSION))?;
        let upload = self.upload.as_deref().or(file.upload.as_deref()).unwrap_or(defaults::UPLOAD);
        let sync_uploads = match upload {
            "sync" => true,
            "async" => false,
            other => anyhow::bail!("upload = {other:?}: use async or sync"),
        };
        let store_timeout = std::time::Duration::from_secs(self.store_timeout.or(file.store_timeout_secs).unwrap_or(defaults::STORE_TIMEOUT_SECS));
        let options = if self.options.is_empty() { file.options.clone().unwrap_or_default() } else { self.options.clone() };
        let mountpoint = absolute(&self.mountpoint)?;
        let s = Settings {
            mountpoint,
            cache_dir,
            store,
            foreground: self.foreground,
            mount_options: options.into_iter().filter(|o| !o.is_empty()).collect(),
            attr_ttl: std::time::Duration::from_secs(self.attr_ttl.or(file.attr_ttl_secs).unwrap_or(defaults::ATTR_TTL_SECS)),
            threads: self.threads.or(file.threads).unwrap_or(defaults::THREADS),
            max_file_size: file.max_file_size.unwrap_or(defaults::MAX_FILE_SIZE),
            compression,
            sync_uploads,
            snapshot_interval: std::time::Duration::from_secs(self.snapshot_interval.or(file.snapshot_interval_secs).unwrap_or(defaults::SNAPSHOT_INTERVAL_SECS)),
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms.or(file.poll_interval_ms).unwrap_or(defaults::POLL_INTERVAL_MS)),
            poll_idle_max: std::time::Duration::from_millis(self.poll_idle_max_ms.or(file.poll_idle_max_ms).unwrap_or(defaults::POLL_IDLE_MAX_MS)),
            readahead_kb: self.readahead_kb.or(file.readahead_kb).unwrap_or(defaults::READAHEAD_KB),
            store_timeout,
            tiers,
            s3: crate::tiers::s3::S3Config { request_timeout: Some(store_timeout), ..self.s3.config(compression, &file) },
            passthrough: match self.passthrough.as_deref().or(file.passthrough.as_deref()).unwrap_or("on") {
                "on" => PassthroughMode::Read,
                "read-write" => PassthroughMode::ReadWrite,
                "off" => PassthroughMode::Off,
                other => anyhow::bail!("passthrough = {other:?}: use on, read-write or off"),
            },
            uring: match self.fuse_transport.as_deref().or(file.fuse_transport.as_deref()).unwrap_or("dev") {
                "dev" => false,
                "uring" => true,
                other => anyhow::bail!("fuse_transport = {other:?}: use dev or uring"),
            },
            metrics_addr: parse_metrics_addr(self.metrics_addr.as_deref().or(file.metrics_addr.as_deref()).unwrap_or(defaults::METRICS_ADDR))?,
        };
        s.validate()?;
        Ok(s)
    }
}

/// Settings of a node opened as a library ([`crate::kv::Kv`]): `flags` are `wombatfs mount`'s,
/// parsed, defaulted and validated by the same code as a mount's, and there is no mountpoint.
pub fn embedded_settings(cache_dir: &std::path::Path, store: Option<&str>, flags: &[&str]) -> Result<Settings> {
    let cache_dir = absolute(cache_dir)?;
    // the parser wants a mountpoint: a sibling of the cache dir is never a prefix of it
    let placeholder = cache_dir.with_file_name(".wombatfs-no-mountpoint");
    let mut argv: Vec<std::ffi::OsString> = vec!["wombatfs".into(), "mount".into(), placeholder.into(), "--cache-dir".into(), cache_dir.into()];
    if let Some(s) = store {
        argv.extend(["--store".into(), s.into()]);
    }
    argv.extend(flags.iter().map(Into::into));
    let Command::Mount(m) = Cli::try_parse_from(argv)?.command else { unreachable!("parsed as mount") };
    let mut s = m.settings()?;
    s.mountpoint = PathBuf::new();
    Ok(s)
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve path {}", p.display()))
}

fn default_cache_dir(xdg: Option<&std::path::Path>, home: Option<&std::path::Path>) -> Result<PathBuf> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/wombatfs"));
    }
    match (xdg, home) {
        (Some(x), _) if x.is_absolute() => Ok(x.join("wombatfs")),
        (_, Some(h)) => Ok(h.join(".cache").join("wombatfs")),
        _ => anyhow::bail!("no --cache-dir given and neither XDG_CACHE_HOME nor HOME is set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings> {
        let cli = Cli::try_parse_from([&["wombatfs", "mount", "/mnt/kv"], args].concat())?;
        let Command::Mount(m) = cli.command else { unreachable!() };
        m.settings()
    }

    #[test]
    fn every_mount_setting_comes_from_a_flag_the_file_or_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("w.toml");
        let cache = ["--cache-dir", "/var/cache/wombat-test"];
        let d = settings(&cache).unwrap();
        assert_eq!((d.sync_uploads, d.snapshot_interval.as_secs(), d.poll_interval.as_millis(), d.readahead_kb), (false, 300, 2000, 1024));
        assert_eq!(d.poll_idle_max.as_millis(), 10_000);
        assert_eq!((d.threads, d.attr_ttl.as_secs(), d.s3.region.as_str(), d.s3.path_style), (4, 3600, "us-east-1", false));
        std::fs::write(
            &cfg,
            "upload = \"sync\"\nsnapshot_interval_secs = 60\npoll_interval_ms = 500\npoll_idle_max_ms = 4000\nreadahead_kb = 0\noptions = [\"allow_other\"]\n\
             s3_endpoint = \"http://127.0.0.1:8333\"\ns3_region = \"eu-west-1\"\ns3_path_style = true\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let f = settings(&[&cache[..], &["--config", c]].concat()).unwrap();
        assert_eq!((f.sync_uploads, f.snapshot_interval.as_secs(), f.poll_interval.as_millis(), f.readahead_kb), (true, 60, 500, 0));
        assert_eq!(f.poll_idle_max.as_millis(), 4000);
        assert_eq!(f.mount_options, ["allow_other"]);
        assert_eq!((f.s3.endpoint.as_deref(), f.s3.region.as_str(), f.s3.path_style), (Some("http://127.0.0.1:8333"), "eu-west-1", true));
        let flags = settings(&[&cache[..], &["--config", c, "--upload", "async", "--poll-interval-ms", "0", "--s3-region", "ap-south-1"]].concat()).unwrap();
        assert_eq!((flags.sync_uploads, flags.poll_interval.as_millis(), flags.s3.region.as_str()), (false, 0, "ap-south-1"), "flags win");
        std::fs::write(&cfg, "upload = \"later\"\n").unwrap();
        assert!(settings(&[&cache[..], &["--config", c]].concat()).unwrap_err().to_string().contains("later"));
    }
}
