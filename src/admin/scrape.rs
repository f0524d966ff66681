//! Reading a `/metrics` page: fetch it and parse the Prometheus text format into samples.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// metric name (with its `_total`, `_bucket`… suffix)
    pub name: String,
    /// label name → value
    pub labels: BTreeMap<String, String>,
    /// the value
    pub value: f64,
}

/// A parsed page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// every sample, in page order
    pub samples: Vec<Sample>,
}

impl Page {
    /// Fetch `http://addr/metrics`.
    pub fn fetch(addr: &str) -> Result<Page> {
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
        let url = format!("http://{addr}/metrics");
        let text = agent.get(&url).call().with_context(|| format!("cannot read {url}"))?.body_mut().read_to_string().with_context(|| format!("reading {url}"))?;
        Ok(Page::parse(&text))
    }

    /// Parse the text format (comments skipped; unparsable lines ignored).
    pub fn parse(text: &str) -> Page {
        let samples = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect();
        Page { samples }
    }

    /// Sum of the samples named `name` whose labels include every pair of `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.matching(name, with).map(|s| s.value).sum()
    }

    /// Samples named `name` whose labels include every pair of `with`.
    pub fn matching<'a>(&'a self, name: &'a str, with: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
    }

    /// A histogram's cumulative bucket counts summed over its label sets: (upper bound, count),
    /// ascending, `+Inf` last.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.matching(&format!("{name}_bucket"), &[]).collect::<Vec<_>>() {
            let le = match s.labels.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(v) => match v.parse() {
                    Ok(x) => x,
                    Err(_) => continue,
                },
                None => continue,
            };
            by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
        }
        let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }
}

fn parse_line(l: &str) -> Option<Sample> {
    let (head, value) = l.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = BTreeMap::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (k, after) = rest.split_once("=\"")?;
                // values escape `"` and `\` with a backslash
                let mut val = String::new();
                let mut chars = after.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => val.push('\n'),
                            Some((_, e)) => val.push(e),
                            None => return None,
                        },
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => val.push(c),
                    }
                }
                let end = end?;
                labels.insert(k.trim_start_matches(',').to_string(), val);
                rest = after[end + 1..].trim_start_matches(',');
            }
            (name.to_string(), labels)
        }
    };
    Some(Sample { name, labels, value })
}

/// The `q` quantile (0..1) of the observations between two scrapes of one histogram's
/// buckets, by linear interpolation inside the bucket (as Prometheus' `histogram_quantile`);
/// `None` without observations.
pub fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let old = |le: f64| before.iter().find(|b| b.0 == le).map(|b| b.1).unwrap_or(0.0);
    let delta: Vec<(f64, f64)> = after.iter().map(|&(le, c)| (le, (c - old(le)).max(0.0))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in &delta {
        if c >= rank {
            if le.is_infinite() {
                // beyond the last bound: the best we can say is that bound
                return Some(prev.0);
            }
            let inside = c - prev.1;
            let frac = if inside > 0.0 { (rank - prev.1) / inside } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_parsed_with_labels_and_escapes() {
        let p = Page::parse("# HELP x y\nwombatfs_a_total 3\nwombatfs_b{op=\"get\",outcome=\"ok\"} 2.5\nwombatfs_c{namespace=\"a\\\"b\"} 1\n");
        assert_eq!(p.sum("wombatfs_a_total", &[]), 3.0);
        assert_eq!(p.sum("wombatfs_b", &[("op", "get")]), 2.5);
        assert_eq!(p.sum("wombatfs_b", &[("op", "put")]), 0.0);
        assert_eq!(p.samples[2].labels["namespace"], "a\"b");
    }

    #[test]
    fn quantiles_come_from_bucket_deltas() {
        let before = vec![(0.1, 0.0), (1.0, 0.0), (f64::INFINITY, 0.0)];
        let after = vec![(0.1, 50.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(&before, &after, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&before, &after, 0.75).unwrap() - 0.55).abs() < 1e-9);
        assert_eq!(quantile(&after, &after, 0.5), None, "no observations in between");
    }
}
