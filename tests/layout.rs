//! The layout of `src/` as docs/design.md's "map of the code" promises it:
//! no import cycle between source files (a graph drawn from `use` lines and
//! `crate::`/`super::` paths) and no file over 500 lines. Reads the source
//! as text; needs no root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` -> ["a", "b"]; lib.rs -> [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if segs.last().is_some_and(|s| s == "mod" || s == "lib") {
        segs.pop();
    }
    segs
}

/// The code outside `#[cfg(test)] mod ...` (tests may reach anywhere).
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod ").map_or(text, |i| &text[..i])
}

/// Module paths a file names: `crate::a::b`, `super::x`, `self::y`, the
/// items of `{...}` groups after them, and `child::` for its own `mod child;`.
fn referenced(me: &[String], text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for base in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(base).map(|i| i + from) {
            from = i + base.len();
            let before = text[..i].trim_end();
            let word_before = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            // `pub(super)`, `pub(in crate::x)` are visibility, not imports.
            if word_before
                || before.ends_with("pub(")
                || before.ends_with("(in")
                || before.ends_with(" in")
                || !text[from..].starts_with("::")
            {
                continue;
            }
            let rest = &text[from..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let path: Vec<String> = rest[..end].split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let mut full: Vec<String> = match base {
                "crate" => Vec::new(),
                "super" => me[..me.len().saturating_sub(1)].to_vec(),
                _ => me.to_vec(),
            };
            full.extend(path);
            if rest[end..].starts_with('{') {
                let group = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |j| end + j)];
                for item in group.split(',') {
                    let item = item.split("::").next().unwrap_or("").trim();
                    if !item.is_empty() && item.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        out.push(full.iter().cloned().chain([item.to_owned()]).collect());
                    }
                }
            }
            out.push(full);
        }
    }
    for line in text.lines() {
        let l = line.trim_start().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
        if let Some(child) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            let needle = format!("{child}::");
            let used = text
                .match_indices(&needle)
                .any(|(i, _)| i == 0 || !matches!(bytes[i - 1], b':' | b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'));
            if used {
                out.push(me.iter().cloned().chain([child.to_owned()]).collect());
            }
        }
    }
    out
}

/// The file a module path lands in: the longest prefix that is a module.
fn resolve<'a>(modules: &'a BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<&'a PathBuf> {
    (1..=path.len()).rev().find_map(|k| modules.get(&path[..k]))
}

fn find_cycle(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    // Depth-first search with the current path on a stack.
    fn visit(
        n: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m) {
                Some(1) => {
                    let i = stack.iter().position(|x| x == m).unwrap();
                    return Some(stack[i..].iter().cloned().chain([m.clone()]).collect());
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n)
            && let Some(c) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_cycle_and_no_long_file_in_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let lib: Vec<PathBuf> =
        files.iter().filter(|f| !f.starts_with(src.join("bin")) && !f.ends_with("main.rs")).cloned().collect();
    let modules: BTreeMap<Vec<String>, PathBuf> = lib.iter().map(|f| (module_of(&src, f), f.clone())).collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", f.display()));
        }
        let name = f.file_name().unwrap().to_string_lossy();
        if !lib.contains(f) || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let me = module_of(&src, f);
        let to = edges.entry(f.clone()).or_default();
        for path in referenced(&me, non_test(&text)) {
            if let Some(t) = resolve(&modules, &path).filter(|t| *t != f) {
                to.insert(t.clone());
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(|p| p.strip_prefix(&src).unwrap().display().to_string()).collect();
        panic!("import cycle between source files: {}", names.join(" -> "));
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_checker_sees_a_cycle_through_a_parent_module() {
    let modules: BTreeMap<Vec<String>, PathBuf> = [
        (vec!["a".to_owned()], PathBuf::from("a/mod.rs")),
        (vec!["a".to_owned(), "b".to_owned()], PathBuf::from("a/b.rs")),
    ]
    .into();
    let parent = referenced(&["a".to_owned()], "mod b;\npub fn f() { b::g() }\n");
    let child = referenced(&["a".to_owned(), "b".to_owned()], "use super::{X, c};\npub(super) fn g() {}\n");
    assert_eq!(resolve(&modules, &parent[0]), Some(&PathBuf::from("a/b.rs")));
    assert!(child.iter().all(|p| resolve(&modules, p) == Some(&PathBuf::from("a/mod.rs"))), "{child:?}");
    let edges = BTreeMap::from([
        (PathBuf::from("a/mod.rs"), BTreeSet::from([PathBuf::from("a/b.rs")])),
        (PathBuf::from("a/b.rs"), BTreeSet::from([PathBuf::from("a/mod.rs")])),
    ]);
    assert!(find_cycle(&edges).is_some());
    assert!(referenced(&["a".to_owned()], "pub(super) fn f() {}\npub(in crate::x) struct S;").is_empty());
}
