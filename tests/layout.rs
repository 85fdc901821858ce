//! Layout rules for `src/`, read as text (no build of the crate needed, no dependencies):
//!
//! - the top-level modules (`src/<module>.rs`, `src/<module>/**`) do not import each other in a
//!   cycle: the graph of `crate::<module>` references (`use crate::x::…`, `use crate::{x, y}`,
//!   `crate::x::f()`) has no cycle. Test code (files named `tests.rs`, `#[cfg(test)]` modules)
//!   may reach anywhere and is not counted; nor are comments and string literals.
//! - within a top-level module, the submodules (`src/<module>/<sub>.rs`, `src/<module>/<sub>/**`)
//!   do not import each other in a cycle either (`super::<sub>`, `crate::<module>::<sub>`);
//!   [`KNOWN_SUBMODULE_CYCLES`] lists the modules whose owners are still untangling theirs.
//! - no function in `src/` is longer than [`MAX_FN_LINES`] lines (from `fn` to its closing
//!   brace), test code excluded as above.
//!
//! Each failure names what to fix: the modules of the cycle with a reference for each arrow, or
//! `file:line: fn name (N lines)`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 120;

/// One source file: its path (relative to the crate) and its code with comments, string and
/// character literals blanked (line structure kept), test modules blanked too.
struct Source {
    path: String,
    module: String,
    /// The module path below `module`: `src/api/admin.rs` is `["admin"]`, `src/update/agent/mod.rs`
    /// `["agent"]`, `src/update/agent/fetch.rs` `["agent", "fetch"]`, `src/api/mod.rs` empty.
    inner: Vec<String>,
    code: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate's library sources outside test code, with the top-level module of each.
fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap_or(&file);
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        // The crate roots are not modules; tests.rs files are test code.
        if matches!(module.as_str(), "lib" | "main")
            || file.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let code = strip_test_modules(&blank_comments_and_literals(&text));
        let mut inner: Vec<String> = rel
            .components()
            .skip(1)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if let Some(last) = inner.pop() {
            if last != "mod.rs" {
                inner.push(last.strip_suffix(".rs").unwrap_or(&last).to_string());
            }
        }
        out.push(Source {
            path: format!("src/{}", rel.display()),
            module,
            inner,
            code,
        });
    }
    out
}

/// `text` with the contents of comments, string literals and character literals replaced by
/// spaces (newlines kept, so line numbers stay right).
fn blank_comments_and_literals(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(prev(&b, i)) {
            // A raw string: r"…", r#"…"#; r#ident is a raw identifier.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push('"');
            i = j + 1;
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
            out.push('"');
        } else if c == '"' || (c == '\'' && is_char_literal(&b, i)) {
            i = blank_quoted(&b, i, &mut out);
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Copies the string or character literal that opens at `b[start]` (its quote kept, its content
/// blanked, escapes honoured) and returns the index after its closing quote.
fn blank_quoted(b: &[char], start: usize, out: &mut String) -> usize {
    let quote = b[start];
    out.push(quote);
    let mut i = start + 1;
    while i < b.len() && b[i] != quote {
        if b[i] == '\\' {
            out.push(' ');
            i += 1;
        }
        if i < b.len() {
            out.push(blank(b[i]));
            i += 1;
        }
    }
    out.push(quote);
    i + 1
}

/// What a character inside a blanked comment or literal becomes: a space, or itself if a newline
/// (so line numbers stay right).
fn blank(c: char) -> char {
    if c == '\n' {
        '\n'
    } else {
        ' '
    }
}

fn prev(b: &[char], i: usize) -> char {
    if i == 0 {
        ' '
    } else {
        b[i - 1]
    }
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A `'` that opens a character literal ('a', '\n', '\u{1F600}'), not a lifetime ('a).
fn is_char_literal(b: &[char], i: usize) -> bool {
    match b.get(i + 1) {
        Some('\\') => true,
        Some(_) => b.get(i + 2) == Some(&'\''),
        None => false,
    }
}

/// `code` with every `#[cfg(test)]` module (`mod x { … }`) blanked.
fn strip_test_modules(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let pattern: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + pattern.len() <= out.len() {
        if out[i..i + pattern.len()] != pattern[..] {
            i += 1;
            continue;
        }
        // The item after the attribute (other attributes may come between).
        let after: String = out[i + pattern.len()..].iter().take(400).collect();
        let item = after.trim_start();
        let is_mod = item
            .split_whitespace()
            .find(|w| !(w.starts_with("#[") || *w == "pub" || w.starts_with("pub(")))
            == Some("mod");
        let Some(open) = out[i..].iter().position(|&c| c == '{' || c == ';') else {
            break;
        };
        let open = i + open;
        if !is_mod || out[open] == ';' {
            i = open + 1;
            continue;
        }
        let Some(close) = matching_brace(&out, open) else {
            break;
        };
        for c in &mut out[i..=close] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = close + 1;
    }
    out.into_iter().collect()
}

/// The index of the `}` that closes the `{` at `open`.
fn matching_brace(code: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in code.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

fn line_of(code: &str, byte: usize) -> usize {
    code[..byte].matches('\n').count() + 1
}

fn identifier(s: &str) -> &str {
    let end = s.find(|c: char| !ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::`, with the line of each reference.
fn crate_references(code: &str) -> Vec<(String, usize)> {
    references_after(code, "crate::")
}

/// The first path segment after each `prefix` (`crate::`, `super::`, `crate::api::`) in `code`,
/// with its line; `use prefix{a, b::c}` gives each item's.
fn references_after(code: &str, prefix: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back().unwrap_or(' ');
        if ident_char(before) || before == ':' {
            continue; // `mycrate::` or `super::super::`, not the prefix itself
        }
        let rest = code[at + prefix.len()..].trim_start();
        if rest.starts_with("super::") {
            continue; // a longer `super::super::…`
        }
        let line = line_of(code, at);
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each item.
            let mut depth = 0usize;
            let mut expect_item = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_item = true,
                    c if expect_item && depth == 0 && ident_char(c) => {
                        out.push((identifier(&group[k..]).to_string(), line));
                        expect_item = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((identifier(rest).to_string(), line));
        }
    }
    out
}

/// For each module, the modules it uses, with one reference (`file:line`) for each.
fn module_graph(sources: &[Source]) -> BTreeMap<String, BTreeMap<String, String>> {
    let modules: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for s in sources {
        let uses = graph.entry(s.module.clone()).or_default();
        for (target, line) in crate_references(&s.code) {
            if target != s.module && modules.contains(target.as_str()) {
                uses.entry(target)
                    .or_insert_with(|| format!("{}:{line}", s.path));
            }
        }
    }
    graph
}

/// The cycles of `graph`: one per strongly connected component with more than one module,
/// as the path through it.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    // Modules that reach each other are in one cycle; report a shortest path around it.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flat_map(|u| u.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in graph.keys() {
        if done.contains(m) || !reach(m).contains(m) {
            continue;
        }
        // Breadth-first from m back to m.
        let mut came_from: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([m.clone()]);
        'search: while let Some(cur) = queue.pop_front() {
            for next in graph.get(&cur).into_iter().flat_map(|u| u.keys()) {
                if next == m {
                    came_from.insert(format!("{m}#end"), cur.clone());
                    break 'search;
                }
                if !came_from.contains_key(next) {
                    came_from.insert(next.clone(), cur.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        // Back from the end to m, then turned around.
        let mut fwd = vec![m.clone()];
        let mut cur = came_from[&format!("{m}#end")].clone();
        while &cur != m {
            fwd.push(cur.clone());
            cur = came_from[&cur].clone();
        }
        fwd.push(m.clone());
        fwd.reverse();
        for x in &fwd {
            done.insert(x.clone());
        }
        out.push(fwd);
    }
    out
}

#[test]
fn top_level_modules_do_not_import_each_other_in_a_cycle() {
    let sources = sources();
    let graph = module_graph(&sources);
    let found = cycles(&graph);
    let mut report = String::new();
    for cycle in &found {
        report.push_str(&format!("import cycle: {}\n", cycle.join(" -> ")));
        for pair in cycle.windows(2) {
            let at = &graph[&pair[0]][&pair[1]];
            report.push_str(&format!("  {} -> {}: {at}\n", pair[0], pair[1]));
        }
    }
    let mut listing = String::new();
    for (m, uses) in &graph {
        let names: Vec<&str> = uses.keys().map(String::as_str).collect();
        listing.push_str(&format!("  {m} -> {}\n", names.join(", ")));
    }
    assert!(
        found.is_empty(),
        "{report}\nthe module graph (src/, test code excluded):\n{listing}"
    );
}

/// Top-level modules whose submodules still import each other in a cycle, and are being fixed
/// by their owners (remove a name once its cycle is gone).
const KNOWN_SUBMODULE_CYCLES: &[&str] = &[];

/// For the submodules of `module` (`src/<module>/<sub>.rs`, `src/<module>/<sub>/**`), the
/// siblings each uses through `super::<sub>` or `crate::<module>::<sub>`.
fn submodule_graph(sources: &[Source], module: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let inside: Vec<&Source> = sources
        .iter()
        .filter(|s| s.module == module && !s.inner.is_empty())
        .collect();
    let subs: BTreeSet<&str> = inside.iter().map(|s| s.inner[0].as_str()).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for s in &inside {
        let me = &s.inner[0];
        let uses = graph.entry(me.clone()).or_default();
        // From `module::a` one `super::` reaches `module`; from `module::a::b`, two.
        let up = "super::".repeat(s.inner.len());
        let mut refs = references_after(&s.code, &up);
        refs.extend(references_after(&s.code, &format!("crate::{module}::")));
        for (target, line) in refs {
            if &target != me && subs.contains(target.as_str()) {
                uses.entry(target)
                    .or_insert_with(|| format!("{}:{line}", s.path));
            }
        }
    }
    graph
}

#[test]
fn submodules_do_not_import_each_other_in_a_cycle() {
    let sources = sources();
    let modules: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    let mut report = String::new();
    for module in modules {
        if KNOWN_SUBMODULE_CYCLES.contains(&module) {
            continue;
        }
        let graph = submodule_graph(&sources, module);
        for cycle in cycles(&graph) {
            report.push_str(&format!(
                "import cycle in {module}: {}\n",
                cycle.join(" -> ")
            ));
            for pair in cycle.windows(2) {
                let at = &graph[&pair[0]][&pair[1]];
                report.push_str(&format!("  {} -> {}: {at}\n", pair[0], pair[1]));
            }
        }
    }
    assert!(report.is_empty(), "{report}");
}

/// Each function's name, first line and length in lines.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let chars: Vec<char> = code.chars().collect();
    // char index -> byte index, for line numbers
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < chars.len() {
        let is_fn = chars[i] == 'f'
            && chars[i + 1] == 'n'
            && !ident_char(prev(&chars, i))
            && chars[i + 2].is_whitespace();
        if !is_fn {
            i += 1;
            continue;
        }
        let name: String = chars[i + 2..]
            .iter()
            .skip_while(|c| c.is_whitespace())
            .take_while(|c| ident_char(**c))
            .collect();
        if name.is_empty() {
            i += 2;
            continue;
        }
        // The body, unless a `;` ends the declaration first (a trait method without one).
        let Some(end) = chars[i..].iter().position(|&c| c == '{' || c == ';') else {
            break;
        };
        let open = i + end;
        if chars[open] == ';' {
            i = open + 1;
            continue;
        }
        let Some(close) = matching_brace(&chars, open) else {
            break;
        };
        let first = chars[..i].iter().filter(|&&c| c == '\n').count() + 1;
        let last = chars[..close].iter().filter(|&&c| c == '\n').count() + 1;
        out.push((name, first, last - first + 1));
        // Nested functions are measured too.
        i = open + 1;
    }
    out
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for s in sources() {
        for (name, line, len) in functions(&s.code) {
            if len > MAX_FN_LINES {
                long.push(format!("{}:{line}: fn {name} ({len} lines)", s.path));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named steps):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_scanner_reads_rust_as_expected() {
    let code = blank_comments_and_literals(
        "use crate::{a, b::c, d::{e, f}};\n// crate::commented\nlet s = \"crate::quoted\";\nlet r = r#\"crate::raw\"#;\nlet c = '{';\nfn f<'a>(x: &'a str) { crate::g::h(); }\n#[cfg(test)]\nmod tests {\n    use crate::t;\n}\n",
    );
    let code = strip_test_modules(&code);
    let refs: Vec<String> = crate_references(&code)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(refs, ["a", "b", "d", "g"]);
    let up = references_after(
        "use super::x; super::super::y::z(); use super::{p, q};",
        "super::",
    );
    let up: Vec<String> = up.into_iter().map(|(m, _)| m).collect();
    assert_eq!(up, ["x", "p", "q"]);
    let fns = functions(&code);
    assert_eq!(fns, [("f".to_string(), 6, 1)]);
    let g: BTreeMap<String, BTreeMap<String, String>> = [
        ("x", vec!["y"]),
        ("y", vec!["z"]),
        ("z", vec!["x"]),
        ("w", vec!["x"]),
    ]
    .into_iter()
    .map(|(m, uses)| {
        (
            m.to_string(),
            uses.into_iter()
                .map(|u| (u.to_string(), String::new()))
                .collect(),
        )
    })
    .collect();
    assert_eq!(cycles(&g), [vec!["x", "y", "z", "x"]]);
}
