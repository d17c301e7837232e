//! The tree stays a tree: the top-level modules of `src/` depend on each other without cycles,
//! and only the transports know the WebRTC stack. Read from the source (`crate::x` paths), so a
//! new cycle fails here, naming it, before anyone has to untangle it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/` relative path of every source file with its text.
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| (p.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/"), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The top-level module a file belongs to (`None` for the crate roots).
fn top_module(rel: &str) -> Option<String> {
    let first = rel.split('/').next().unwrap();
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Top-level modules named by `crate::x` paths and `use crate::{x, y::z}` groups, comments
/// skipped.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let preceded = rest[..i].chars().next_back().is_some_and(is_ident);
            let after = &rest[i + "crate::".len()..];
            if !preceded {
                if let Some(group) = after.strip_prefix('{') {
                    let group = group.split('}').next().unwrap();
                    for part in group.split(',') {
                        let name: String = part.trim().chars().take_while(|&c| is_ident(c)).collect();
                        if !name.is_empty() {
                            found.insert(name);
                        }
                    }
                } else {
                    let name: String = after.chars().take_while(|&c| is_ident(c)).collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn top_level_modules_form_no_cycle() {
    let files = sources();
    let modules: BTreeSet<String> = files.iter().filter_map(|(rel, _)| top_module(rel)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (rel, text) in &files {
        let Some(from) = top_module(rel) else { continue };
        for to in crate_references(text) {
            if to != from && modules.contains(&to) {
                graph.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    // Depth-first search; a back edge is a cycle, reported as the path around it.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in &graph[node] {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => {
                    if let Some(cycle) = visit(next, graph, state, path) {
                        return Some(cycle);
                    }
                }
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            let mut path = Vec::new();
            if let Some(cycle) = visit(m, &graph, &mut state, &mut path) {
                panic!("top-level modules depend on each other in a cycle: {}\nthe whole graph: {graph:#?}", cycle.join(" -> "));
            }
        }
    }
    // The graph is not trivially empty (the scan found the engine's dependencies).
    assert!(graph["engine"].contains("transport") && graph["engine"].contains("call"), "{graph:#?}");
}

/// Whether code (not comments) names the crate `krate` as a path root (`krate::`). Our own
/// `transport::webrtc` module is always named by a path (`transport::webrtc::`, `self::webrtc::`),
/// so a bare `webrtc::` is the crate.
fn names_crate(text: &str, krate: &str) -> bool {
    let needle = format!("{krate}::");
    text.lines().any(|line| {
        let code = line.split("//").next().unwrap();
        code.match_indices(&needle).any(|(i, _)| !code[..i].chars().next_back().is_some_and(|c| is_ident(c) || c == ':'))
    })
}

/// Source files outside `allowed` (path prefixes under `src/`) that name `krate`.
fn naming_outside(krate: &str, allowed: &[&str]) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(rel, text)| !allowed.iter().any(|a| rel.starts_with(a)) && names_crate(text, krate))
        .map(|(rel, _)| rel)
        .collect()
}

#[test]
fn only_the_webrtc_transport_knows_webrtc_rs() {
    let offenders = naming_outside("webrtc", &["transport/webrtc/"]);
    assert!(offenders.is_empty(), "webrtc-rs types used outside src/transport/webrtc: {offenders:?}");
    // The RTP/STUN codecs of the sans-IO core (`rtc::`) are wire formats: transports and the
    // TURN relay only.
    let offenders = naming_outside("rtc", &["transport/", "relay/"]);
    assert!(offenders.is_empty(), "rtc wire types used outside src/transport and src/relay: {offenders:?}");
}

#[test]
fn references_are_read_from_paths_and_groups() {
    let text = "use crate::{agent, metrics::Metrics};\nlet x = crate::transport::webrtc::answer(); // crate::nope\nfoo_crate::bar";
    let found = crate_references(text);
    assert_eq!(found, ["agent", "metrics", "transport"].into_iter().map(String::from).collect());
    assert!(names_crate("use webrtc::x;", "webrtc") && !names_crate("use webrtc::x;", "rtc") && names_crate("(rtc::rtp::Packet)", "rtc"));
}
