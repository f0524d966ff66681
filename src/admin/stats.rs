//! `wombatfs stats [MOUNTPOINT] [--interval SECS] [--once] [--json]`: a live table of a mount
//! (like `juicefs stats` or `iostat`), one line per interval, from two scrapes of its
//! `/metrics`: FUSE ops and bytes, per-tier hit ratio and throughput, object-store requests
//! with p50/p99 latency, the upload queue, evictions and the change feed.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::admin::scrape::{quantile, Page};

/// Arguments of `stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The mountpoint (or a path inside it) [default: the only wombatfs mount].
    pub mountpoint: Option<std::path::PathBuf>,
    /// Seconds between lines.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one line (over one interval) and exit.
    #[arg(long)]
    pub once: bool,
    /// One JSON object per interval instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Read this metrics address (`HOST:PORT`) instead of finding the mount's.
    #[arg(long)]
    pub addr: Option<String>,
}

const TIERS: [&str; 4] = ["flat", "foyer_memory", "foyer_disk", "object_store"];

/// What happened between two scrapes.
fn report(a: &Page, b: &Page, dt: f64) -> serde_json::Value {
    let rate = |name: &str, with: &[(&str, &str)]| ((b.sum(name, with) - a.sum(name, with)) / dt).max(0.0);
    let delta = |name: &str, with: &[(&str, &str)]| (b.sum(name, with) - a.sum(name, with)).max(0.0);
    let opens: f64 = TIERS.iter().map(|t| delta("wombatfs_tier_hits_total", &[("tier", t)])).sum();
    let tiers: serde_json::Map<String, serde_json::Value> = TIERS
        .iter()
        .map(|t| {
            let hits = delta("wombatfs_tier_hits_total", &[("tier", t)]);
            let v = json!({
                "hits_per_s": hits / dt,
                // of the blob opens in the interval, the share this tier served
                "hit_ratio": if opens > 0.0 { Some(hits / opens) } else { None },
                "bytes_per_s": rate("wombatfs_tier_read_bytes_total", &[("tier", t)]),
            });
            (t.to_string(), v)
        })
        .collect();
    let lat = "wombatfs_object_store_request_duration_seconds";
    let requests = delta("wombatfs_object_store_requests_total", &[]);
    let ok = delta("wombatfs_object_store_requests_total", &[("outcome", "ok")]);
    let fuse = "wombatfs_fuse_request_duration_seconds";
    json!({
        "interval_s": dt,
        "fuse": {
            "ops_per_s": rate(&format!("{fuse}_count"), &[]),
            "errors_per_s": rate("wombatfs_fuse_errors_total", &[]),
            "read_bytes_per_s": rate("wombatfs_fuse_read_bytes_total", &[]),
            "write_bytes_per_s": rate("wombatfs_fuse_write_bytes_total", &[]),
            "p50_s": quantile(&a.buckets(fuse), &b.buckets(fuse), 0.5),
            "p99_s": quantile(&a.buckets(fuse), &b.buckets(fuse), 0.99),
        },
        "tiers": tiers,
        "object_store": {
            "requests_per_s": requests / dt,
            "errors_per_s": (requests - ok).max(0.0) / dt,
            "retries_per_s": rate("wombatfs_object_store_retries_total", &[]),
            "timeouts_per_s": rate("wombatfs_object_store_timeouts_total", &[]),
            "bytes_per_s": rate("wombatfs_object_store_bytes_total", &[]),
            "p50_s": quantile(&a.buckets(lat), &b.buckets(lat), 0.5),
            "p99_s": quantile(&a.buckets(lat), &b.buckets(lat), 0.99),
        },
        "upload_queue": {
            "blobs": b.sum("wombatfs_upload_queue_blobs", &[]),
            "bytes": b.sum("wombatfs_upload_queue_bytes", &[]),
            "oldest_age_s": b.sum("wombatfs_upload_queue_oldest_age_seconds", &[]),
            "uploads_per_s": rate("wombatfs_uploads_total", &[]),
        },
        "flat_evictions_per_s": rate("wombatfs_flat_evictions_total", &[]),
        "journal": {
            "unpublished": b.sum("wombatfs_journal_unpublished_changes", &[]),
            "publish_lag_s": b.sum("wombatfs_journal_publish_lag_seconds", &[]),
            "applied_per_s": rate("wombatfs_journal_changes_applied_total", &[]),
        },
        "resident_memory_bytes": b.sum("wombatfs_resident_memory_bytes", &[]),
    })
}

fn header() -> String {
    format!(
        "{:>8} {:>6} {:>8} {:>8} | {:>5} {:>5} {:>5} {:>5} {:>8} | {:>7} {:>7} {:>7} {:>5} | {:>6} {:>8} {:>7} | {:>6} {:>6}",
        "ops/s", "err/s", "rd MB/s", "wr MB/s", "flat%", "fmem%", "fdsk%", "s3%", "s3 MB/s", "s3 rq/s", "p50 ms", "p99 ms", "err/s", "upq", "upq MB", "oldest", "evic/s", "lag s"
    )
}

fn line(r: &serde_json::Value) -> String {
    let f = |p: &str| r.pointer(p).and_then(|v| v.as_f64());
    let pct = |t: &str| f(&format!("/tiers/{t}/hit_ratio")).map_or("-".to_string(), |x| format!("{:.0}", x * 100.0));
    let ms = |p: &str| f(p).map_or("-".to_string(), |x| format!("{:.1}", x * 1000.0));
    let mb = |p: &str| f(p).unwrap_or(0.0) / 1e6;
    format!(
        "{:>8.0} {:>6.0} {:>8.1} {:>8.1} | {:>5} {:>5} {:>5} {:>5} {:>8.1} | {:>7.1} {:>7} {:>7} {:>5.1} | {:>6.0} {:>8.1} {:>7.1} | {:>6.1} {:>6.1}",
        f("/fuse/ops_per_s").unwrap_or(0.0),
        f("/fuse/errors_per_s").unwrap_or(0.0),
        mb("/fuse/read_bytes_per_s"),
        mb("/fuse/write_bytes_per_s"),
        pct("flat"),
        pct("foyer_memory"),
        pct("foyer_disk"),
        pct("object_store"),
        mb("/tiers/object_store/bytes_per_s"),
        f("/object_store/requests_per_s").unwrap_or(0.0),
        ms("/object_store/p50_s"),
        ms("/object_store/p99_s"),
        f("/object_store/errors_per_s").unwrap_or(0.0),
        f("/upload_queue/blobs").unwrap_or(0.0),
        mb("/upload_queue/bytes"),
        f("/upload_queue/oldest_age_s").unwrap_or(0.0),
        f("/flat_evictions_per_s").unwrap_or(0.0),
        f("/journal/publish_lag_s").unwrap_or(0.0),
    )
}

/// Run `stats`.
pub fn run(args: &StatsArgs) -> Result<()> {
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        anyhow::bail!("--interval must be a positive number of seconds");
    }
    let (addr, point) = match &args.addr {
        Some(a) => (a.clone(), None),
        None => {
            let m = crate::admin::find_mount(args.mountpoint.as_deref())?;
            (crate::admin::metrics_addr(&m)?, Some(m.point))
        }
    };
    let mut prev = Page::fetch(&addr)?;
    let mut at = Instant::now();
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        let page = Page::fetch(&addr)?;
        let now = Instant::now();
        let mut r = report(&prev, &page, now.duration_since(at).as_secs_f64());
        if args.json {
            r["mountpoint"] = json!(point.as_ref().map(|p| p.display().to_string()));
            r["metrics_addr"] = json!(addr);
            writeln!(out, "{r}")?;
        } else {
            if n % 20 == 0 {
                writeln!(out, "{}", header())?;
            }
            writeln!(out, "{}", line(&r))?;
        }
        out.flush()?;
        if args.once {
            break;
        }
        (prev, at) = (page, now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ratios_come_from_the_difference_of_two_pages() {
        let a = Page::parse("wombatfs_tier_hits_total{tier=\"flat\"} 10\nwombatfs_tier_hits_total{tier=\"object_store\"} 0\nwombatfs_fuse_read_bytes_total 0\n");
        let b = Page::parse("wombatfs_tier_hits_total{tier=\"flat\"} 13\nwombatfs_tier_hits_total{tier=\"object_store\"} 1\nwombatfs_fuse_read_bytes_total 4000000\n");
        let r = report(&a, &b, 2.0);
        assert_eq!(r["tiers"]["flat"]["hit_ratio"], 0.75);
        assert_eq!(r["tiers"]["object_store"]["hits_per_s"], 0.5);
        assert_eq!(r["fuse"]["read_bytes_per_s"], 2e6);
        assert!(r["object_store"]["p50_s"].is_null(), "no requests: no latency");
        assert_eq!(line(&r).split('|').count(), header().split('|').count());
    }
}
