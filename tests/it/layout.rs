//! The layout of `src/` draws the design, and these tests keep it so: the phases depend one
//! way (read → plan → apply → report → run → admin → the program), no two modules import
//! each other around a loop, readers never write and the plan touches no disk. What a
//! module takes from another is read from its `crate::` paths; its unit tests and comments
//! are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The phases, lowest first. A module may use its own phase and those below it. What is not
/// named here (errors, names, paths, the root, file helpers) lies below every phase.
const PHASES: [&str; 7] = ["read", "plan", "apply", "report", "run", "admin", "main"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, by its module path (`read::state`, `apply`, `main`).
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            modules(&path, &format!("{prefix}{name}::"), out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let module = match stem {
                "mod" | "lib" => prefix.trim_end_matches("::").to_owned(),
                _ => format!("{prefix}{stem}"),
            };
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere to set a case up, and comments may name anything.
            let code = ["#[cfg(test)]\nmod tests", "#[cfg(test)]\npub(crate) mod tests"].iter().fold(&*text, |code, at| code.split(at).next().unwrap());
            let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).flat_map(|l| [l, "\n"]).collect();
            out.insert(if module.is_empty() { "lib".into() } else { module }, code);
        }
    }
}

/// The modules `code` takes something from: each `crate::` (or, in a binary, `limopack::`)
/// path, cut to the longest prefix that is a module.
fn imports(code: &str, known: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for marker in ["crate::", "limopack::"] {
        for (at, _) in code.match_indices(marker) {
            let path: String = code[at + marker.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            if let Some(module) = (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| known.contains_key(m)) {
                found.insert(module);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut known = BTreeMap::new();
    modules(&src(), "", &mut known);
    known.iter().map(|(m, code)| (m.clone(), imports(code, &known).into_iter().filter(|i| i != m).collect())).collect()
}

fn phase(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap();
    let top = if matches!(top, "cli" | "cmd") { "main" } else { top };
    PHASES.iter().position(|p| *p == top)
}

#[test]
fn phases_depend_one_way() {
    let mut wrong = Vec::new();
    for (module, uses) in graph() {
        for used in uses {
            let below = match (phase(&module), phase(&used)) {
                (Some(a), Some(b)) => b <= a,
                // The ground everything stands on uses no phase.
                (None, Some(_)) => false,
                (_, None) => true,
            };
            if !below {
                wrong.push(format!("{module} uses {used}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the phases' order:\n{}", wrong.join("\n"));
}

#[test]
fn no_module_imports_itself_around_a_loop() {
    let graph = graph();
    // Depth-first, with the path so far: a module met again on it closes a loop.
    fn visit<'a>(at: &'a str, graph: &'a BTreeMap<String, BTreeSet<String>>, path: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>, loops: &mut Vec<String>) {
        if let Some(start) = path.iter().position(|m| *m == at) {
            loops.push(format!("{} -> {at}", path[start..].join(" -> ")));
            return;
        }
        if !done.insert(at) {
            return;
        }
        path.push(at);
        for next in &graph[at] {
            visit(next, graph, path, done, loops);
        }
        path.pop();
    }
    let (mut done, mut loops) = (BTreeSet::new(), Vec::new());
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done, &mut loops);
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

/// Calls that change the disk or start a process: none in a reader or in the plan. The
/// plan also reads nothing itself.
#[test]
fn readers_never_write_and_the_plan_touches_no_disk() {
    let mut known = BTreeMap::new();
    modules(&src(), "", &mut known);
    let writes = ["write_atomic", "remove_file", "remove_all", "remove_dir", "create_dir", "set_permissions", "Command::new", "std::fs::write", "File::create"];
    let reads = ["std::fs", "crate::fs", "Root"];
    let mut wrong = Vec::new();
    for (module, code) in &known {
        let banned: Vec<&str> = match phase(module) {
            Some(0) => writes.to_vec(),
            Some(1) => writes.iter().chain(&reads).copied().collect(),
            _ => continue,
        };
        wrong.extend(banned.iter().filter(|b| code.contains(*b)).map(|b| format!("{module}: {b}")));
    }
    assert!(wrong.is_empty(), "effects outside apply:\n{}", wrong.join("\n"));
}

/// The tests above would pass on an empty graph: they must see the real one.
#[test]
fn the_layout_is_read() {
    let graph = graph();
    assert!(graph["apply"].contains("read::state"), "{:?}", graph["apply"]);
    assert!(graph["run"].contains("report"), "{:?}", graph["run"]);
    assert!(graph.contains_key("main") && graph.contains_key("read::binary_index"));
}
