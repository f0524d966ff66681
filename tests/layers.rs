//! The layers point one way: `fs → sync → store → tiers → codec/proof/blob`, with `index`
//! beside (used by `sync` and `fs`, using only the bottom). A new upward import fails here, as
//! does `fuser` outside `src/fs/` or `slatedb` outside `src/index/`. Comments are not imports.

use std::collections::BTreeSet;
use std::path::Path;

/// What each module may import from the crate (besides itself). `cli`, `config`, `daemon`,
/// `admin`, `mount_helper` and `kv` (a node as a library)
/// are the program around the library and may use all of it; nothing below may use them.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    const BASE: &[&str] = &["backoff", "blob", "hlc", "metrics", "name", "sealed", "size", "sys"];
    Some(match module {
        "backoff" | "blob" | "hlc" | "name" | "sealed" | "size" | "sys" => &[],
        "metrics" => &["sys"],
        "proof" => &["blob"],
        "codec" => &["blob", "proof"],
        "index" => &["blob", "hlc", "proof", "codec", "sealed"],
        "tiers" => &["backoff", "blob", "hlc", "metrics", "name", "sealed", "size", "sys", "proof", "codec"],
        "store" => &["backoff", "blob", "hlc", "metrics", "name", "sealed", "size", "sys", "proof", "codec", "tiers"],
        "sync" => &["backoff", "blob", "hlc", "metrics", "name", "sealed", "size", "sys", "proof", "codec", "tiers", "store", "index"],
        "fs" => &["backoff", "blob", "hlc", "metrics", "name", "sealed", "size", "sys", "proof", "codec", "tiers", "store", "index", "sync"],
        "cli" | "config" | "daemon" | "admin" | "mount_helper" | "kv" | "lib" | "main" => return None,
        other => panic!("src/{other}: a new top-level module: give it a place in the layer table of tests/layers.rs (BASE = {BASE:?})"),
    })
}

fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| {
        let t = l.trim_start();
        if t.starts_with("//") {
            ""
        } else {
            // a trailing comment (a `//` inside a string literal only hides the rest of its line)
            l.find(" //").map_or(l, |i| &l[..i])
        }
    })
}

/// The crate's top-level modules a source text refers to: `crate::x` paths and the names of
/// `use crate::{x, y::z}` groups.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut code = String::new();
    for l in code_lines(text) {
        code.push_str(l);
        code.push('\n');
    }
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found the sources");
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(f).unwrap();
        if let Some(ok) = allowed(&module) {
            for r in references(&text) {
                if r != module && !ok.contains(&r.as_str()) {
                    wrong.push(format!("src/{}: {module} imports {r}", rel.display()));
                }
            }
        }
        let code: String = code_lines(&text).collect::<Vec<_>>().join("\n");
        if code.contains("fuser::") && module != "fs" {
            wrong.push(format!("src/{}: fuser outside src/fs/", rel.display()));
        }
        if code.contains("slatedb::") && module != "index" {
            wrong.push(format!("src/{}: slatedb outside src/index/", rel.display()));
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_paths_groups_and_skips_comments() {
    let text = "use crate::{blob::BlobId, tiers};\nlet x = crate::fs::core::FsCore::load();\n// crate::daemon in a comment\nfoo(); // crate::cli trailing\n";
    let r: Vec<String> = references(text).into_iter().collect();
    assert_eq!(r, ["blob", "fs", "tiers"]);
}
