//! The crate's module graph, read from its source: every path through `crate::`, `super::`,
//! `self::` or a child module is an edge. It must have no cycle, and no module may reach an item
//! of the crate root (`lib.rs` is the public API only): the layering ARCHITECTURE.md describes is
//! checked here, not only written down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`app::service`, `crate` for the root) → its source, test modules left out.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let name = if parts.is_empty() {
                "crate".to_owned()
            } else {
                parts.join("::")
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(name, code);
        }
    }
    out
}

/// Every path in `code` that starts with an identifier, brace groups expanded:
/// `a::{b, c::{d}}` gives `a::b` and `a::c::d`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = is_ident(chars[i])
            && !chars[i].is_ascii_digit()
            && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':'));
        if starts {
            let (mut found, end) = path_at(&chars, i);
            found.retain(|p| p.len() > 1);
            out.extend(found);
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths starting at `i`, and where they end.
fn path_at(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        prefix.push(chars[start..i].iter().collect::<String>());
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
            if chars.get(i) == Some(&'{') {
                i += 1;
                let mut out = Vec::new();
                loop {
                    while chars.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                        i += 1;
                    }
                    match chars.get(i) {
                        Some('}') | None => return (out, i + 1),
                        Some(c) if is_ident(*c) => {
                            let (inner, end) = path_at(chars, i);
                            for tail in inner {
                                out.push([prefix.clone(), tail].concat());
                            }
                            i = end;
                        }
                        // `self`, `*`, `as` renames and the like: skip a character.
                        Some(_) => i += 1,
                    }
                }
            }
            if chars.get(i).is_some_and(|c| is_ident(*c)) {
                continue;
            }
        }
        return (vec![prefix], i);
    }
}

#[test]
fn the_module_graph_has_no_cycle_and_nothing_reaches_into_the_crate_root() {
    let modules = modules();
    let resolve = |path: &[String]| -> String {
        for n in (1..=path.len()).rev() {
            let candidate = path[..n].join("::");
            if modules.contains_key(&candidate) {
                return candidate;
            }
        }
        "crate".to_owned()
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, code) in &modules {
        let here: Vec<String> = if name == "crate" {
            Vec::new()
        } else {
            name.split("::").map(str::to_owned).collect()
        };
        let children: BTreeSet<String> = modules
            .keys()
            .filter_map(|m| {
                let rest = if name == "crate" {
                    Some(m.as_str())
                } else {
                    m.strip_prefix(&format!("{name}::"))
                };
                rest.filter(|r| !r.contains("::") && *r != "crate")
                    .map(str::to_owned)
            })
            .collect();
        let mut deps = BTreeSet::new();
        for path in paths(code) {
            let full: Vec<String> = match path[0].as_str() {
                "crate" => path[1..].to_vec(),
                "super" => [&here[..here.len().saturating_sub(1)], &path[1..]].concat(),
                "self" => [&here[..], &path[1..]].concat(),
                head if children.contains(head) => [&here[..], &path[..]].concat(),
                _ => continue,
            };
            let target = resolve(&full);
            if target == "crate" && name != "crate" {
                panic!(
                    "{name} reaches an item of the crate root: {}",
                    path.join("::")
                );
            }
            if &target != name {
                deps.insert(target);
            }
        }
        edges.insert(name.clone(), deps);
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done);
    }
    // The service is the centre: every front door reaches it, and it reaches none of them.
    for door in [
        "routes::conversations",
        "mcp::local",
        "agents::reply",
        "agents::actions",
    ] {
        assert!(
            edges[door].contains("app"),
            "{door} does not go through app"
        );
    }
    for (name, deps) in &edges {
        if name.starts_with("app") {
            for dep in deps {
                assert!(
                    dep.starts_with("app") || dep == "clock" || dep == "config",
                    "the service depends on a front door: {name} -> {dep}"
                );
            }
        }
    }
}

#[test]
fn the_path_reader_expands_brace_groups() {
    let found: Vec<String> = paths("use crate::app::{App, auth::{Caller, Admin}};\nsuper::x::y(1)")
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert!(found.contains(&"crate::app::App".to_owned()), "{found:?}");
    assert!(
        found.contains(&"crate::app::auth::Caller".to_owned()),
        "{found:?}"
    );
    assert!(
        found.contains(&"crate::app::auth::Admin".to_owned()),
        "{found:?}"
    );
    assert!(found.contains(&"super::x::y".to_owned()), "{found:?}");
}
