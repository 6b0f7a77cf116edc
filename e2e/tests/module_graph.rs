//! The top-level modules of each crate (the sidecar, the operator, the shared runtime), drawn
//! from the code, import one another without a circle: every `crate::<module>` path in a
//! non-test source file is an edge from the file's top-level module to `<module>` (a name the
//! crate root re-exports, such as the operator's `crate::Context`, counts as the module it
//! comes from). A circle (for example the store reaching into `expose` while `expose` reads
//! the store) fails this test, naming the modules on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges `from -> to` between the top-level modules of `src`.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// True for test-only files (`tests.rs`, `fixtures.rs`, anything under a `tests/` folder).
fn is_test_file(rel: &Path) -> bool {
    rel.components().any(|c| c.as_os_str() == "tests")
        || rel
            .file_stem()
            .is_some_and(|s| s == "tests" || s == "fixtures")
}

/// The code of a file up to its first inline `#[cfg(test)]` module (`mod tests { .. }`, at
/// the end of a file by convention; a `mod tests;` declaration near the top cuts nothing),
/// comments left out (a doc link is not an import).
fn non_test_code(text: &str) -> String {
    let marker = "#[cfg(test)]\nmod ";
    let mut end = text.len();
    let mut from = 0;
    while let Some(i) = text[from..].find(marker) {
        let at = from + i;
        let line_end = text[at + marker.len()..]
            .find('\n')
            .map_or(text.len(), |n| at + marker.len() + n);
        if text[at..line_end].trim_end().ends_with('{') {
            end = at;
            break;
        }
        from = line_end;
    }
    let text = &text[..end];
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules named by `crate::` paths in `text`, including grouped imports
/// (`use crate::{a, b::c}`). A path into `sources` names the source
/// (`crate::sources::statsd::X` is `sources::statsd`): each source is a node of its own.
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    // `name` and what follows it: `sources::x` becomes a node of its own.
    let node = |name: String, after: &str| -> Vec<String> {
        if name != SOURCES {
            return vec![name];
        }
        let Some(rest) = after[name.len()..].strip_prefix("::") else {
            return vec![name];
        };
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            return group[..end]
                .split(',')
                .map(|part| ident(part.trim()))
                .filter(|n| !n.is_empty())
                .map(|n| match n.starts_with(|c: char| c.is_ascii_uppercase()) {
                    true => name.clone(),
                    false => format!("{SOURCES}::{n}"),
                })
                .collect();
        }
        // A type or function of `sources` itself (`SourceContext`) is not a source.
        match ident(rest) {
            n if n.is_empty() || n.starts_with(|c: char| c.is_ascii_uppercase()) => vec![name],
            n => vec![format!("{SOURCES}::{n}")],
        }
    };
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let part = part.trim();
                let name = ident(part);
                if !name.is_empty() {
                    found.extend(node(name, part));
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                found.extend(node(name, after));
            }
        }
        rest = after;
    }
    found
}

/// The folder whose sub-modules are nodes of their own (one per source).
const SOURCES: &str = "sources";

/// The names `lib.rs` re-exports from a module (`pub use context::Context;`), with the
/// module they come from.
fn root_reexports(src: &Path) -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let mut found = BTreeMap::new();
    for line in lib.lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                found.insert(name.to_string(), module.to_string());
            }
        }
    }
    found
}

/// The graph of `src`: one node per top-level module and one per source under `sources/`
/// (`lib.rs` and `main.rs` are the root and left out, and so are `bin/` targets: they sit
/// above the library). Items defined in the root itself (an `Error` enum) are no node.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    source_files(src, &mut files);
    let reexports = root_reexports(src);
    let mut graph = Graph::new();
    for path in files {
        let rel = path.strip_prefix(src).expect("under src");
        if is_test_file(rel) {
            continue;
        }
        let mut parts = rel
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs"));
        let first = parts.next().expect("a file name");
        let module = match (first, parts.next()) {
            (SOURCES, Some(source)) if source != "mod" => format!("{SOURCES}::{source}"),
            _ => first.to_string(),
        };
        if module == "lib" || module == "main" || module == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        let edges = graph.entry(module.clone()).or_default();
        for target in referenced_modules(&non_test_code(&text)) {
            let target = reexports.get(&target).cloned().unwrap_or(target);
            let root_item = target.starts_with(|c: char| c.is_ascii_uppercase());
            if target != module && !root_item {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A circle in `graph`, as the modules on it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn the_detector_finds_a_circle_and_accepts_a_chain() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (from, to) in edges {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            g.entry(to.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        referenced_modules("use crate::{store::Store, model};\nlet x = crate::expose::f();"),
        ["expose", "model", "store"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert_eq!(
        referenced_modules(
            "use crate::sources::{parse::text, statsd};\nuse crate::{sources::push::X, app};\ncrate::sources::otlp::f();\nuse crate::sources::SourceContext;"
        ),
        [
            "app",
            "sources",
            "sources::otlp",
            "sources::parse",
            "sources::push",
            "sources::statsd"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let with_tests_declared = "use crate::a;\n#[cfg(test)]\nmod tests;\nuse crate::b;\n#[cfg(test)]\nmod inline {\nuse crate::c;\n}";
    assert_eq!(
        referenced_modules(&non_test_code(with_tests_declared)),
        ["a", "b"].into_iter().map(String::from).collect()
    );
}

/// The graph of one crate's `src`, printed, and a panic naming the circle if there is one.
fn assert_no_circle(krate: &str, expected: &[&str]) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let graph = module_graph(&src);
    for node in expected {
        assert!(
            graph.contains_key(*node),
            "{krate}: the graph was not drawn from the sources (no {node}): {graph:?}"
        );
    }
    for (from, to) in &graph {
        println!(
            "{krate}: {from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "{krate}: import circle between top-level modules: {}\nfull graph: {graph:#?}",
            cycle.join(" -> ")
        );
    }
    graph
}

#[test]
fn sidecar_modules_import_each_other_without_a_circle() {
    let graph = assert_no_circle("sidecar", &["store", "expose", "sources::statsd"]);
    assert!(
        !graph["store"].contains("expose"),
        "the store imports expose again: {graph:#?}"
    );
}

#[test]
fn operator_modules_import_each_other_without_a_circle() {
    let graph = assert_no_circle("operator", &["webhook", "controller", "certs", "context"]);
    assert!(
        graph["webhook"].contains("context"),
        "crate::Context (a root re-export) counts as the context module: {graph:#?}"
    );
}

#[test]
fn runtime_modules_import_each_other_without_a_circle() {
    assert_no_circle("runtime", &["http", "labels"]);
}
