//! The shape of `src/`, kept by tests rather than by memory: imports go
//! down the floors (nothing imports what sits above it), no module imports
//! its way back into itself, the raw PostgreSQL client stays inside the
//! units that run SQL on a lock session (`lock`, `migrate`), and no file
//! grows past a few screens. README's "Architecture" section draws the
//! same floors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may import from the floors below its own only;
/// modules on one floor do not import each other.
const FLOORS: &[&[&str]] = &[
    &["lib"],
    &["cli"],
    &["api"],
    &["fleet"],
    &["metrics"],
    &["commands"],
    &["context"],
    &["report"],
    &["config"],
    &["migrate"],
    &["lock"],
    &["migrations"],
    &["targets"],
    &["connect"],
    &["pg_error"],
    &["error", "sql"],
    &["output", "interrupt"],
    &["outcome", "parse", "env", "backoff", "time"],
];

/// An import that climbs a floor must say why on its line.
const EXCEPTION_MARK: &str = "layering exception:";
const MAX_EXCEPTIONS: usize = 3;
const MAX_LINES: usize = 600;

struct Source {
    /// `["migrate", "step"]` for `src/migrate/step.rs`; `[]` for lib.rs.
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = src();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        // main.rs is the binary's own crate, above everything.
        .filter(|p| !p.ends_with("main.rs"))
        .map(|path| {
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            Source {
                module,
                text: std::fs::read_to_string(&path).unwrap(),
                path,
            }
        })
        .collect()
}

/// The code that counts: without the unit tests at the end of the file
/// and without re-exports (`pub use`, a module's face, not its needs).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("pub use ") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').map_or(rest.len(), |e| e + 1);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The modules that exist, as paths.
fn modules(sources: &[Source]) -> BTreeSet<Vec<String>> {
    sources.iter().map(|s| s.module.clone()).collect()
}

/// The module a path names: its longest prefix that is a module.
fn resolve(known: &BTreeSet<Vec<String>>, base: &[String], rest: &[&str]) -> Vec<String> {
    let mut module = base.to_vec();
    for part in rest {
        let mut next = module.clone();
        next.push(part.to_string());
        if !known.contains(&next) {
            break;
        }
        module = next;
    }
    module
}

/// The names after `prefix::` at `at` in `line`: one, or each of a
/// `{a, b::c}` group.
fn paths_after(line: &str, at: usize) -> Vec<Vec<&str>> {
    let rest = &line[at..];
    if let Some(group) = rest.strip_prefix('{') {
        let group = &group[..group.find('}').unwrap_or(group.len())];
        return group
            .split(',')
            .map(|p| p.trim().split("::").map(str::trim).collect())
            .filter(|p: &Vec<&str>| p.first().is_some_and(|s| !s.is_empty()))
            .collect();
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    vec![rest[..end].split("::").filter(|s| !s.is_empty()).collect()]
}

/// Every module each module imports, with whether the line carries the
/// exception mark.
fn imports(sources: &[Source]) -> Vec<(Vec<String>, Vec<String>, bool, String)> {
    let known = modules(sources);
    let mut edges = Vec::new();
    for source in sources {
        let parent: Vec<String> = source.module[..source.module.len().saturating_sub(1)].to_vec();
        for line in code(&source.text).lines() {
            let marked = line.contains(EXCEPTION_MARK);
            for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
                let mut from = 0;
                while let Some(found) = line[from..].find(prefix) {
                    let at = from + found + prefix.len();
                    for path in paths_after(line, at) {
                        let target = resolve(&known, &base, &path);
                        if target != source.module && !source.module.starts_with(&target) {
                            edges.push((
                                source.module.clone(),
                                target,
                                marked,
                                line.trim().to_string(),
                            ));
                        }
                    }
                    from = at;
                }
            }
        }
    }
    edges
}

fn floor(top: &str) -> usize {
    FLOORS
        .iter()
        .position(|floor| floor.contains(&top))
        .unwrap_or_else(|| panic!("module {top} is on no floor: add it to FLOORS"))
}

#[test]
fn imports_go_down_the_floors() {
    let sources = sources();
    let mut climbing = Vec::new();
    let mut marked = 0;
    for (from, to, exception, line) in imports(&sources) {
        let top_from = from.first().map_or("lib", String::as_str);
        let Some(top_to) = to.first() else { continue };
        if top_from == top_to {
            continue;
        }
        if floor(top_to) <= floor(top_from) {
            if exception {
                marked += 1;
            } else {
                climbing.push(format!("{} -> {}: {line}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        climbing.is_empty(),
        "imports that climb a floor (or cross one), without `// {EXCEPTION_MARK} why`:\n{}",
        climbing.join("\n")
    );
    assert!(marked <= MAX_EXCEPTIONS, "{marked} marked exceptions");
}

#[test]
fn no_module_imports_its_way_back_into_itself() {
    let sources = sources();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, to, _, _) in imports(&sources) {
        graph.entry(from).or_default().insert(to);
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            let cycle: Vec<String> = cycle
                .iter()
                .map(|m| format!("crate::{}", m.join("::")))
                .collect();
            panic!("an import circle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_raw_client_stays_in_the_lock_and_migrate_units() {
    for source in sources() {
        let unit = source.module.first().map_or("lib", String::as_str);
        if matches!(unit, "lock" | "migrate") {
            continue;
        }
        assert!(
            !code(&source.text).contains(".client()"),
            "{} takes the raw client out of its LockSession: add a LockSession method instead",
            source.path.display()
        );
    }
}

#[test]
fn no_source_file_is_longer_than_a_few_screens() {
    for source in sources() {
        let lines = source.text.lines().count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} lines (at most {MAX_LINES}): split it where its parts have names",
            source.path.display()
        );
    }
}

#[test]
fn the_floors_name_every_top_level_module() {
    let tops: BTreeSet<String> = sources()
        .into_iter()
        .filter_map(|s| s.module.first().cloned())
        .collect();
    for top in &tops {
        floor(top);
    }
    for name in FLOORS.iter().flat_map(|f| f.iter()) {
        assert!(
            *name == "lib" || tops.contains(*name),
            "FLOORS names {name}, which is no module"
        );
    }
}
