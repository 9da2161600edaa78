//! The layout rules ARCHITECTURE.md states, checked on the source tree: which
//! modules may import which, no import cycle inside `relay/`, `wire/` does no
//! I/O, and no source file grows past the size a reader can hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file over this many lines is split (ARCHITECTURE.md: "about 600").
const MAX_LINES: usize = 650;

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of a file without its `#[cfg(test)]` part and without comments,
/// so a doc comment naming a module is not an import.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<top>::<second>` path a file names.
fn crate_paths(code: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let mut parts = rest.split("::").map(|p| {
            p.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
        });
        let top = parts.next().unwrap_or("").to_owned();
        let second = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
        out.push((top, second));
    }
    out
}

/// The top module of a file under src/ (`relay`, `peer`, `wire`, `transport`, ...).
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn wings_import_only_what_the_architecture_allows() {
    // Who may import whom, by top module: wire is data, transport is I/O on
    // wire, relay and peer never see each other.
    // `Error` and `Result` are the crate root's names for error's types;
    // `info`.. are the log macros.
    const BASE: &[&str] = &["wire", "error", "Error", "Result"];
    const LOGS: &[&str] = &["log", "info", "warn", "debug"];
    let with = |own: &[&'static str], logs: bool| -> Vec<&'static str> {
        let mut names = own.to_vec();
        names.extend_from_slice(BASE);
        if logs {
            names.extend_from_slice(LOGS);
        }
        names
    };
    let allowed: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("wire", with(&[], false)),
        ("transport", with(&["transport"], false)),
        ("relay", with(&["relay", "transport"], true)),
        ("peer", with(&["peer", "transport"], true)),
    ]);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for path in sources(&src()) {
        let top = top_module(&path);
        let Some(ok) = allowed.get(top.as_str()) else {
            continue;
        };
        checked += 1;
        for (target, _) in crate_paths(&code(&path)) {
            if !ok.contains(&target.as_str()) {
                wrong.push(format!("{} imports crate::{target}", path.display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} files were checked");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn wire_does_no_io() {
    let mut checked = 0;
    for path in sources(&src().join("wire")) {
        checked += 1;
        let code = code(&path);
        for io in [
            "TcpStream",
            "TcpListener",
            "std::thread",
            "std::fs",
            "UdpSocket",
            "File::",
        ] {
            assert!(!code.contains(io), "{} uses {io}", path.display());
        }
    }
    assert!(checked >= 8, "only {checked} wire files");
}

/// The relay units a file names: `x` for `crate::relay::x`, `conn::y` and
/// `stream::y` for files of those folders, groups (`{a, b}`) expanded.
fn relay_units(code: &str) -> BTreeSet<String> {
    fn word(text: &str) -> &str {
        let end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        &text[..end]
    }
    let lower = |w: &str| w.starts_with(|c: char| c.is_ascii_lowercase()) && w != "self";
    let mut units = BTreeSet::new();
    let mut add = |first: &str, after: &str| {
        if !lower(first) {
            return;
        }
        if first != "conn" && first != "stream" {
            units.insert(first.to_owned());
            return;
        }
        if let Some(rest) = after.strip_prefix("::{") {
            for part in rest.split('}').next().unwrap_or("").split(',') {
                let name = word(part.trim());
                if lower(name) {
                    units.insert(format!("{first}::{name}"));
                }
            }
        } else if let Some(name) = after.strip_prefix("::").map(word).filter(|n| lower(n)) {
            units.insert(format!("{first}::{name}"));
        } else {
            units.insert(format!("{first}::mod"));
        }
    };
    for (i, _) in code.match_indices("crate::relay::") {
        let rest = &code[i + "crate::relay::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            for part in inner.split('}').next().unwrap_or("").split(',') {
                let part = part.trim();
                let first = word(part);
                add(first, &part[first.len()..]);
            }
        } else {
            let first = word(rest);
            add(first, &rest[first.len()..]);
        }
    }
    units
}

#[test]
fn the_relay_modules_import_each_other_without_a_cycle() {
    // A unit is a file directly under relay/ (with its folder of submodules),
    // or one file of relay/conn/ or relay/stream/: the pieces the
    // architecture orders.
    let relay = src().join("relay");
    let unit_of = |path: &Path| -> String {
        let rel = path.strip_prefix(&relay).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .collect();
        match parts.as_slice() {
            [dir, file] if dir == "conn" || dir == "stream" => format!("{dir}::{file}"),
            [dir, ..] => dir.clone(),
            [] => String::new(),
        }
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources(&relay) {
        let from = unit_of(&path);
        if from == "mod" || from == "conn::mod" {
            continue;
        }
        let edges = graph.entry(from.clone()).or_default();
        for to in relay_units(&code(&path)) {
            if to != from {
                edges.insert(to);
            }
        }
    }
    assert!(graph.len() > 15, "the graph has {} units", graph.len());
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(1) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut cycles = BTreeSet::new();
    for node in graph.keys() {
        // A fresh search from each unit: a cycle is reported only along the
        // path that closes it.
        if let Some(cycle) = visit(node, &graph, &mut BTreeMap::new(), &mut Vec::new()) {
            cycles.insert(cycle.join(" -> "));
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn no_source_file_grows_past_what_a_reader_can_hold() {
    let mut big = Vec::new();
    let files = sources(&src());
    assert!(files.len() > 60, "only {} files", files.len());
    for path in files {
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        if lines > MAX_LINES {
            big.push(format!("{} has {lines} lines", path.display()));
        }
    }
    assert!(big.is_empty(), "{big:#?}");
}
