//! Command line: `wombatfs mount <MOUNTPOINT> [--cache-dir DIR] [--store URL] [--foreground] [-o OPT,...]`
//! and `wombatfs gc --store s3://BUCKET[/PREFIX] [--grace SECS] [--dry-run]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{parse_compression, FileSettings, Settings, StoreUrl};

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
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a wombatfs tree.
    Mount(Box<MountArgs>),
    /// Delete blobs no node's names refer to any more from a shared bucket, once they have
    /// stayed unreferenced for the grace period (run it periodically, e.g. from cron).
    Gc(GcArgs),
}

/// How to reach an `s3://` store (shared by the subcommands).
#[derive(clap::Args, Debug, Clone)]
pub struct S3Args {
    /// S3 endpoint URL for non-AWS services (MinIO, Ceph RGW, R2, SeaweedFS…).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
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
    /// The S3 configuration (bucket and prefix come from the store URL).
    pub fn config(&self, compression: crate::codec::Compression) -> crate::tiers::s3::S3Config {
        crate::tiers::s3::S3Config {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            access_key: self.aws_access_key_id.clone(),
            secret_key: self.aws_secret_access_key.clone(),
            session_token: self.aws_session_token.clone(),
            profile: self.aws_profile.clone(),
            compression: Some(compression),
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
    #[arg(long, default_value_t = 3600)]
    pub grace: u64,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// or `sync` (close and fsync return after the object store acknowledged).
    #[arg(long, value_parser = ["async", "sync"], default_value = "async")]
    pub upload: String,
    /// Seconds between tree snapshots in a remote store when the tree changed (0: only at
    /// unmount). A node with an empty cache dir restores the newest snapshot.
    #[arg(long, default_value_t = 300)]
    pub snapshot_interval: u64,
    /// Milliseconds between polls of the other nodes' change journals in a shared bucket
    /// (0: do not follow other nodes). Their changes show up here within this plus their
    /// publication delay (≈ 0.1–0.4 s after their upload).
    #[arg(long, default_value_t = 2000)]
    pub poll_interval_ms: u64,
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
    /// Kernel readahead for the mount in KiB (0: kernel default, 128 KiB). Needs root.
    #[arg(long, default_value_t = 1024)]
    pub readahead_kb: u32,
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
        let store = match self.store.clone().or(file.store) {
            Some(s) => StoreUrl::parse(&s)?,
            None => StoreUrl::Local(cache_dir.join("objects")),
        };
        let compression = parse_compression(self.compression.as_deref().or(file.compression.as_deref()).unwrap_or("auto"))?;
        let mountpoint = absolute(&self.mountpoint)?;
        let s = Settings {
            mountpoint,
            cache_dir,
            store,
            foreground: self.foreground,
            mount_options: self.options.iter().filter(|o| !o.is_empty()).cloned().collect(),
            attr_ttl: std::time::Duration::from_secs(self.attr_ttl.or(file.attr_ttl_secs).unwrap_or(3600)),
            threads: self.threads.or(file.threads).unwrap_or(4),
            max_file_size: file.max_file_size.unwrap_or(1 << 40),
            compression,
            sync_uploads: self.upload == "sync",
            snapshot_interval: std::time::Duration::from_secs(self.snapshot_interval),
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms),
            readahead_kb: self.readahead_kb,
            tiers,
            s3: self.s3.config(compression),
        };
        s.validate()?;
        Ok(s)
    }
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
