//! The metric names the docs and the Grafana dashboard use are the ones the daemon exports
//! (a renamed metric fails here, not on an operator's empty panel).

use std::collections::BTreeSet;

fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("wombatfs_") {
        let name: String = rest[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[i + name.len()..];
        // `wombatfs_` inside other words (paths, crate names) is not a metric
        if name.len() > "wombatfs_".len() && !name.ends_with('_') {
            out.insert(name);
        }
    }
    out
}

/// Every labelled family gets a sample (an empty family prints nothing, not even its TYPE).
fn touch_every_family() {
    use wombatfs::metrics::{NamespaceLabel, OpLabel, TierLabel};
    let m = wombatfs::metrics::get();
    m.store_call("get_blob", "ok", std::time::Duration::from_millis(1), 1);
    m.fuse_request("lookup", std::time::Duration::from_micros(5));
    m.fuse_error("open", libc::EIO);
    m.tier_hit("flat");
    m.tier_miss("flat");
    m.tier_bytes("flat", 1);
    m.store_retries.get_or_create(&OpLabel { op: "put" }).inc();
    let ns = NamespaceLabel { namespace: "ns".into() };
    m.budget_removals.get_or_create(&ns).inc();
    m.namespace_used_bytes.get_or_create(&ns).set(1);
    m.namespace_budget_bytes.get_or_create(&ns).set(1);
    m.tier_used_bytes.get_or_create(&TierLabel { tier: "flat" }).set(1);
    m.tier_capacity_bytes.get_or_create(&TierLabel { tier: "flat" }).set(1);
}

/// The families the daemon exports, by the names a query may use.
fn exported() -> BTreeSet<String> {
    touch_every_family();
    let text = wombatfs::metrics::get().render(|_| {});
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else { continue };
        let mut it = rest.split(' ');
        let (name, kind) = (it.next().unwrap(), it.next().unwrap());
        out.insert(name.to_string());
        match kind {
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            "counter" if !name.ends_with("_total") => {
                out.insert(format!("{name}_total"));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_dashboard_and_the_docs_use_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let have = exported();
    assert!(have.len() > 30, "{have:?}");
    for file in ["mount/grafana-dashboard.json", "docs/operations.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used = names_in(&text);
        assert!(used.len() > 10, "{file}: {used:?}");
        let unknown: Vec<_> = used.iter().filter(|n| !have.contains(*n)).collect();
        assert!(unknown.is_empty(), "{file} names metrics the daemon does not export: {unknown:?}");
    }
    // and every exported family is documented
    let doc = names_in(&std::fs::read_to_string(root.join("docs/operations.md")).unwrap());
    let text = wombatfs::metrics::get().render(|_| {});
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = l.split(' ').next().unwrap();
        let base = name.strip_suffix("_total").unwrap_or(name);
        assert!(doc.contains(name) || doc.iter().any(|d| d.strip_suffix("_total") == Some(base) || d == base), "{name} is not in docs/operations.md");
    }
}
