//! The shape of the host crate, read from its source: the modules import each other in one
//! direction only (no cycles), and the request path's functions stay short enough to read.
//!
//! A module is a file `host/NAME.rs` or a folder `host/NAME/`; an import is any `crate::NAME`
//! in its code outside comments and its `#[cfg(test)]` section.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn host_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("host")
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read the host folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// A file's code without its unit tests and without comment lines (doc links name modules
/// without importing them).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`None` for lib.rs, main.rs and build.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(host_dir()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "build")).then(|| name.to_string())
}

/// Module -> the modules its code names through `crate::`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(&host_dir(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(module) = module_of(f) else {
            continue;
        };
        let text = code(f);
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups are not used in this crate; a name that is not a module
            // (a re-export at the crate root) is not an edge.
            if !name.is_empty() && name != module && name.chars().all(|c| !c.is_uppercase()) {
                deps.insert(name);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A cycle through `start`, if any, as the list of modules along it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let edge = |a: &str, b: &[&str]| (a.to_string(), b.iter().map(|s| s.to_string()).collect());
    let graph: BTreeMap<String, BTreeSet<String>> = [
        edge("a", &["b"]),
        edge("b", &["c"]),
        edge("c", &["a"]),
        edge("d", &["a"]),
    ]
    .into();
    assert_eq!(
        cycle_from(&graph, "a"),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(cycle_from(&graph, "d"), None);
}

#[test]
fn modules_import_each_other_without_cycles() {
    let graph = import_graph();
    assert!(
        graph.contains_key("proxy") && graph["proxy"].contains("policy"),
        "the import graph was not read: {graph:?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn request_path_functions_are_short() {
    let mut files = Vec::new();
    sources(&host_dir().join("policy"), &mut files);
    sources(&host_dir().join("proxy"), &mut files);
    let mut long = Vec::new();
    for f in &files {
        let text = code(f);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_fn = t.starts_with("fn ")
                || t.starts_with("pub fn ")
                || t.starts_with("async fn ")
                || t.starts_with("pub async fn ");
            if !is_fn {
                continue;
            }
            let indent = line.len() - t.len();
            // The function ends at the first closing brace at its own indentation.
            let closing = format!("{}}}", " ".repeat(indent));
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.trim_end() == closing)
                .map_or(lines.len(), |k| i + 1 + k);
            let len = end - i + 1;
            if len > 80 {
                long.push(format!("{}:{}: {len} lines", f.display(), i + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "request-path functions over 80 lines: {long:#?}"
    );
}
