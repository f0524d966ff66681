//! Scraping a test mount's `/metrics` with a real HTTP client.
#![allow(dead_code)]

use std::collections::BTreeMap;

use super::mount::Mount;

/// One scrape: sample (name with labels, as printed) → value.
pub fn scrape(m: &Mount) -> BTreeMap<String, f64> {
    let addr = std::fs::read_to_string(m.cache.join("metrics.addr")).expect("the daemon records its metrics address");
    let text = ureq::get(&format!("http://{}/metrics", addr.trim())).call().unwrap().body_mut().read_to_string().unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// A sample's value (0 when absent).
pub fn get(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}
